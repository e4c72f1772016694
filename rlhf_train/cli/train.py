"""`rlhf train sft|reward|ppo|dpo|rloo|grpo`: the training commands. Each handler turns
flags into options, calls one function, prints."""

from __future__ import annotations

import argparse

from rlhf_train.cli.common import (
    Commands,
    add_command,
    add_group,
    add_optimizer_budget,
    open_workspace,
    options_from,
    quiet_if_asked,
)
from rlhf_train.config import setting_help
from rlhf_train.errors import UserError


def _settings_overrides(args: argparse.Namespace, section: str) -> dict[str, object]:
    """Flags that override [sft]/[reward]/[lora]/[runtime] settings for this run."""
    overrides: dict[str, object] = {
        f"{section}.epochs": args.epochs,
        f"{section}.learning_rate": args.learning_rate,
        f"{section}.batch_size": args.batch_size,
        f"{section}.max_length": args.max_length,
        f"{section}.seed": args.seed,
        f"{section}.checkpoint_every": args.checkpoint_every,
        "lora.rank": args.lora_rank,
        "lora.target_modules": args.lora_targets,
        "runtime.device": args.device,
    }
    if section == "reward":
        overrides["reward.center_coefficient"] = args.center_rewards
    return overrides


def _resume_target(args: argparse.Namespace) -> tuple[bool, int | None]:
    if args.resume is None:
        return False, None
    if args.resume == "last":
        return True, None
    if not args.resume.isdigit():
        raise UserError(f"--resume takes a run number, not {args.resume!r}; see `rlhf runs list`.")
    return True, int(args.resume)


def cmd_train_reward(args: argparse.Namespace) -> int:
    from rlhf_train.reward.evaluate import summary_lines
    from rlhf_train.reward.train import RewardOptions, train_reward

    quiet_if_asked(args)
    resume, run_id = _resume_target(args)
    if not resume and not args.data:
        raise UserError("Pass --data EXPORT_FOLDER (made by `rlhf export`), or --resume.")
    workspace = open_workspace(args, _settings_overrides(args, "reward"))
    options = options_from(RewardOptions, args, data=args.data or "")
    result = train_reward(workspace, options, resume=resume, run_id=run_id)
    if result is None:
        return 0  # another process of `accelerate launch` reports
    print(f"Trained reward model {result.name!r} (run {result.run_id}) in {result.path}.")
    if result.report is None:
        print("The export has no test split, so there are no diagnostics.")
    else:
        print("\n".join(summary_lines(result.report.diagnostics)))
        print(f"Diagnostics and plots: {result.report.folder}")
    return 0


def cmd_train_sft(args: argparse.Namespace) -> int:
    from rlhf_train.sft.train import SftOptions, train_sft

    quiet_if_asked(args)
    resume, run_id = _resume_target(args)
    workspace = open_workspace(args, _settings_overrides(args, "sft"))
    options = options_from(SftOptions, args)
    result = train_sft(workspace, options, resume_run_id=run_id, resume=resume)
    if result.model_id is None:
        return 0  # another process of `accelerate launch` reports
    metrics = result.metrics
    print(f"Trained policy {result.name!r} (run {result.run_id}) in {result.path}.")
    print(
        f"Held-out loss {metrics['eval_loss_before']:.4f} -> {metrics['eval_loss_after']:.4f}, "
        f"perplexity {_number(metrics['perplexity_before'])} -> "
        f"{_number(metrics['perplexity_after'])} on {metrics['eval_examples']} examples; "
        f"train loss {metrics['train_loss']:.4f} over {metrics['steps']} steps."
    )
    if not args.promote:
        print(f"Make it the current policy with `rlhf models promote {result.name}`.")
    return 0


def _number(value: float | None) -> str:
    return "inf" if value is None else f"{value:.2f}"


def cmd_train_policy(args: argparse.Namespace) -> int:
    """rlhf train ppo|dpo|rloo|grpo."""
    from rlhf_train.policy.optimize import OptimizeOptions, optimize_policy

    quiet_if_asked(args)
    resume, run_id = _resume_target(args)
    overrides = {
        "optimize.learning_rate": args.learning_rate,
        "optimize.batch_size": args.batch_size,
        "optimize.max_new_tokens": getattr(args, "max_new_tokens", None),
        "optimize.temperature": getattr(args, "temperature", None),
        "optimize.kl_coef": args.kl_coef,
        "optimize.seed": args.seed,
        "optimize.checkpoint_every": args.checkpoint_every,
        "optimize.samples_every": getattr(args, "samples_every", None),
        "lora.rank": args.lora_rank,
        "lora.target_modules": args.lora_targets,
        "runtime.device": args.device,
    }
    workspace = open_workspace(args, overrides)
    options = options_from(OptimizeOptions, args)
    result = optimize_policy(workspace, options, resume=resume, run_id=run_id)
    if result is None:
        return 0  # another process of `accelerate launch` reports
    metrics = result.metrics
    print(f"Trained policy {result.name!r} with {args.algorithm} (run {result.run_id}).")
    print(_policy_summary(metrics))
    if not args.promote:
        print(f"Make it the current policy with `rlhf models promote {result.name}`.")
    return 0


def _policy_summary(metrics: dict) -> str:
    """One line of the figures an optimizer reported; absent or undefined ones are left out."""
    parts = []
    first, last = metrics.get("first_score_mean"), metrics.get("last_score_mean")
    if first is not None and last is not None:
        parts.append(f"mean score {first:.4f} -> {last:.4f}")
    if metrics.get("last_kl") is not None:
        parts.append(f"KL to the reference {metrics['last_kl']:.3f}")
    accuracy = metrics.get("last_reward_accuracy")
    if accuracy is not None:
        parts.append(f"DPO reward accuracy {accuracy:.3f}")
    parts.append(f"{metrics.get('steps')} steps")
    return (", ".join(parts) + ".").capitalize()


def _add_run_flags(parser: argparse.ArgumentParser) -> None:
    """What every training command takes: resuming, the device, quiet output."""
    parser.add_argument(
        "--resume",
        nargs="?",
        const="last",
        metavar="RUN",
        help="continue run RUN (default: the newest unfinished one) from its last checkpoint",
    )
    parser.add_argument("--device", help=setting_help("runtime.device"))
    parser.add_argument("--no-progress", action="store_true", help="no progress output")


def _add_training_flags(parser: argparse.ArgumentParser, section: str) -> None:
    parser.add_argument("--name", help=f"name of the new model (default: {section}-RUN)")
    parser.add_argument("--lora", action="store_true", help="train a LoRA adapter ([lora])")
    _add_lora_flags(parser)
    for flag, kind in (
        ("--epochs", float),
        ("--learning-rate", float),
        ("--batch-size", int),
        ("--max-length", int),
        ("--seed", int),
        ("--checkpoint-every", int),
    ):
        key = f"{section}." + flag.removeprefix("--").replace("-", "_")
        parser.add_argument(flag, type=kind, help=setting_help(key))
    parser.add_argument("--max-steps", type=int, help="stop after this many optimizer steps")
    _add_run_flags(parser)


def _add_lora_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--lora-rank", type=int, help=setting_help("lora.rank"))
    parser.add_argument("--lora-targets", help=setting_help("lora.target_modules"))


def _add_optimize_flags(parser: argparse.ArgumentParser, *flags: tuple[str, type]) -> None:
    """Flags named after the [optimize] setting they override (--kl-coef: optimize.kl_coef)."""
    for flag, kind in flags:
        key = "optimize." + flag.removeprefix("--").replace("-", "_")
        parser.add_argument(flag, type=kind, help=setting_help(key))


def add_commands(commands: Commands) -> None:
    train_commands = add_group(commands, "train", "Train an SFT policy or a reward model.")
    sft = add_command(
        train_commands,
        "sft",
        cmd_train_sft,
        "Fine-tune a policy on demonstrations and register it as a new policy.",
        """
        rlhf train sft --builtin imdb                     # write movie reviews
        rlhf train sft --data demos.jsonl --lora --name sft-lora
        rlhf train sft --data pairs.csv --policy my-base --promote
        rlhf train sft --resume                           # after a crash or Ctrl-C
        """,
    )
    source = sft.add_mutually_exclusive_group()
    source.add_argument(
        "--data",
        help=".txt (one demonstration per line), .jsonl or .csv with text, or prompt and "
        "completion, or (.jsonl) chat messages",
    )
    source.add_argument(
        "--builtin", choices=["imdb", "rotten_tomatoes"], help="packaged movie reviews"
    )
    sft.add_argument("--policy", help="policy to start from (default: the current policy)")
    sft.add_argument("--promote", action="store_true", help="make the result the current policy")
    _add_training_flags(sft, "sft")
    reward = add_command(
        train_commands,
        "reward",
        cmd_train_reward,
        "Train a reward model on an export; save, diagnose and register it.",
        """
        rlhf export --out exports/r1 && rlhf train reward --data exports/r1
        rlhf train reward --data exports/r1 --backbone policy --lora --use-margin
        rlhf train reward --resume          # after a crash or Ctrl-C
        """,
    )
    reward.add_argument("--data", help="an export folder written by `rlhf export`")
    reward.add_argument(
        "--backbone",
        help="minilm-l6-v2 (default), policy (the current policy with a scalar head), "
        "a registered model, a folder or a hub id",
    )
    reward.add_argument(
        "--use-margin", action="store_true", help="train with the export's margin column"
    )
    reward.add_argument(
        "--center-rewards",
        type=float,
        metavar="COEF",
        help=setting_help("reward.center_coefficient"),
    )
    _add_training_flags(reward, "reward")

    _add_policy_commands(train_commands)


POLICY_EXAMPLES = {
    "ppo": """
        rlhf train ppo                                   # current policy, newest reward model
        rlhf train ppo --reward rm-r1 --lora --max-steps 200 --kl-coef 0.1
        rlhf train ppo --reward my_rewards.py:score --prompts prompts.txt
        accelerate launch --num_processes 4 -m rlhf_train.cli train ppo --reward rm-r1
        """,
    "dpo": """
        rlhf train dpo --data exports/r1
        rlhf train dpo --data exports/r1 --lora --kl-coef 0.1 --promote
        """,
    "rloo": """
        rlhf train rloo --reward rm-r1
        rlhf train rloo --reward my_rewards.py:score --lora
        """,
    "grpo": """
        rlhf train grpo --reward rm-r1
        rlhf train grpo --reward my_rewards.py:score --max-steps 100
        """,
}
POLICY_SUMMARIES = {
    "ppo": "Optimize the policy against a reward with our PPO (KL-penalized, GAE, clipped).",
    "dpo": "Optimize the policy directly on an export's preferences with TRL's DPO.",
    "rloo": "Optimize the policy against a reward with TRL's RLOO.",
    "grpo": "Optimize the policy against a reward with TRL's GRPO.",
}


def _add_policy_commands(train_commands: Commands) -> None:
    for algorithm in ("ppo", "dpo", "rloo", "grpo"):
        parser = add_command(
            train_commands,
            algorithm,
            cmd_train_policy,
            POLICY_SUMMARIES[algorithm],
            POLICY_EXAMPLES[algorithm],
        )
        parser.set_defaults(algorithm=algorithm)
        parser.add_argument("--policy", help="policy to start from (default: the current policy)")
        if algorithm == "dpo":
            parser.add_argument("--data", required=False, help="an export folder (rlhf export)")
        else:
            parser.add_argument(
                "--reward",
                help="a reward model (registered name or folder; default: the newest one) or a "
                "Python function module:function / file.py:function(prompts, responses)",
            )
            parser.add_argument(
                "--prompts",
                help="workspace (default: its train-split prompts), a .txt/.csv/.jsonl file, "
                "imdb or rotten_tomatoes",
            )
            parser.add_argument(
                "--chat", action="store_true", help="wrap file prompts in the chat template"
            )
            _add_optimize_flags(
                parser,
                ("--max-new-tokens", int),
                ("--temperature", float),
                ("--samples-every", int),
            )
        parser.add_argument("--name", help=f"name of the new policy (default: {algorithm}-RUN)")
        parser.add_argument("--lora", action="store_true", help="train a LoRA adapter ([lora])")
        parser.add_argument(
            "--save-adapter", action="store_true", help="with --lora: keep the adapter unmerged"
        )
        _add_lora_flags(parser)
        parser.add_argument("--promote", action="store_true", help="make it the current policy")
        add_optimizer_budget(
            parser, "stop after the step that passes this wall-clock budget, keeping the result"
        )
        _add_optimize_flags(
            parser,
            ("--learning-rate", float),
            ("--batch-size", int),
            ("--kl-coef", float),
            ("--seed", int),
            ("--checkpoint-every", int),
        )
        parser.add_argument(
            "--report-to",
            default="none",
            choices=["none", "tensorboard"],
            help="also log to TensorBoard (JSON lines are always written)",
        )
        _add_run_flags(parser)
