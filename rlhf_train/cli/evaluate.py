"""`rlhf evaluate reward|policy`: measure a trained reward model or policy and write a
report with plots."""

from __future__ import annotations

import argparse
from pathlib import Path

from rlhf_train.cli.common import (
    Commands,
    add_command,
    add_group,
    open_workspace,
    options_from,
    quiet_if_asked,
)
from rlhf_train.config import setting_help


def cmd_evaluate_reward(args: argparse.Namespace) -> int:
    from rlhf_train.reward.evaluate import evaluate_reward, summary_lines

    workspace = open_workspace(args, {"runtime.device": args.device})
    report = evaluate_reward(
        workspace, args.model, args.data, Path(args.out).resolve() if args.out else None
    )
    print("\n".join(summary_lines(report.diagnostics)))
    print(f"Diagnostics and plots: {report.folder}")
    return 0


def cmd_evaluate_policy(args: argparse.Namespace) -> int:
    from rlhf_train.evaluation.report import PolicyEvaluationOptions, evaluate_policy_report
    from rlhf_train.evaluation.text import summary_lines

    quiet_if_asked(args)
    overrides = {"runtime.device": args.device, "evaluate.n_prompts": args.n_prompts}
    options = options_from(
        PolicyEvaluationOptions,
        args,
        round_number=args.round,
        out=Path(args.out).resolve() if args.out else None,
    )
    report = evaluate_policy_report(open_workspace(args, overrides), options)
    print("\n".join(summary_lines(report.metrics)))
    print(f"Evaluation {report.evaluation_id}: report and plots in {report.folder}")
    return 0


def add_commands(commands: Commands) -> None:
    evaluate = add_group(commands, "evaluate", "Evaluate a trained model.")
    reward = add_command(
        evaluate,
        "reward",
        cmd_evaluate_reward,
        "Diagnostics of a reward model on the test split of an export (JSON and plots).",
        """
        rlhf evaluate reward reward-3 --data exports/r2
        rlhf evaluate reward ./my-rm --data exports/r2 --out reports/my-rm
        """,
    )
    reward.add_argument("model", help="a registered reward model or a folder")
    reward.add_argument("--data", required=True, help="an export folder")
    reward.add_argument("--out", help="report folder (default: reports/MODEL/eval-EXPORT)")
    reward.add_argument("--device", help=setting_help("runtime.device"))
    _add_evaluate_policy(evaluate)


def _add_evaluate_policy(evaluate: Commands) -> None:
    parser = add_command(
        evaluate,
        "policy",
        cmd_evaluate_policy,
        "Measure a policy on the held-out prompts, maybe against another; write a report.",
        """
        rlhf evaluate policy                              # the current policy
        rlhf evaluate policy ppo-3 --against ppo-2 --round 3
        rlhf evaluate policy ppo-3 --reward my_rewards.py:score --n-prompts 200
        """,
    )
    parser.add_argument("policy", nargs="?", help="a policy (default: the current policy)")
    parser.add_argument(
        "--against", metavar="Q", help="a policy to compare with (win rates, side by side)"
    )
    parser.add_argument(
        "--reference",
        metavar="R",
        help="the policy KL and perplexity are measured against (default: the root of the "
        "policy's lineage)",
    )
    parser.add_argument(
        "--reward",
        metavar="RM",
        help="a reward model (default: the newest one; none registered: no reward scores) or "
        "a Python function module:function / file.py:function(prompts, responses)",
    )
    parser.add_argument("--round", type=int, metavar="N", help="the round this report belongs to")
    parser.add_argument(
        "--out", metavar="DIR", help="report folder (default: reports/policies/P[-vs-Q]-ID)"
    )
    parser.add_argument(
        "--n-prompts", type=int, metavar="N", help=setting_help("evaluate.n_prompts")
    )
    parser.add_argument("--device", help=setting_help("runtime.device"))
    parser.add_argument("--no-progress", action="store_true", help="no progress output")
