"""`rlhf models list|register|trace|promote|merge`: the registry of policies and reward
models, their lineage, and which policy is current."""

from __future__ import annotations

import argparse

from rlhf_train.cli.common import Commands, add_command, add_group, open_workspace
from rlhf_train.errors import UserError


def cmd_models_list(args: argparse.Namespace) -> int:
    from db.registry import current_policy, list_models
    from rlhf_train.models.builtin import BUILTIN_MODELS

    with open_workspace(args).sessions() as session:
        models = list_models(session)
        current = current_policy(session)
        names = {model.id: model.name for model in models}
    print(f"{'name':<28} {'kind':<7} {'parent':<24} path")
    for model in models:
        marker = "  (current policy)" if current is not None and model.id == current.id else ""
        parent = names.get(model.parent_id, "-")
        print(f"{model.name:<28} {model.kind:<7} {parent:<24} {model.path}{marker}")
    unregistered = [b for name, b in BUILTIN_MODELS.items() if name not in names.values()]
    if unregistered:
        print("\nBuilt-in, registered on first use:")
        for builtin in unregistered:
            print(f"  {builtin.name:<26} {builtin.kind:<7} {builtin.description}")
    return 0


def cmd_models_register(args: argparse.Namespace) -> int:
    from db.engine import transaction
    from db.registry import find_model, register_model
    from rlhf_train.models.source import check_model_spec

    workspace = open_workspace(args)
    with transaction(workspace.sessions) as session:
        parent = None
        if args.parent:
            parent = find_model(session, args.parent)
            if parent is None:
                raise UserError(
                    f"No registered model {args.parent!r} to use as parent; see `rlhf models list`."
                )
        location = check_model_spec(args.location)
        model = register_model(
            session, name=args.name, kind=args.kind, path=location, parent=parent
        )
        print(f"Registered {model.kind} {model.name!r} at {model.path}.")
    return 0


def cmd_models_trace(args: argparse.Namespace) -> int:
    from rlhf_train.models.trace import trace_model

    with open_workspace(args).sessions() as session:
        print("\n".join(trace_model(session, args.name)))
    return 0


def cmd_models_promote(args: argparse.Namespace) -> int:
    from db.engine import transaction
    from db.registry import find_model, promote

    with transaction(open_workspace(args).sessions) as session:
        model = find_model(session, args.name)
        if model is None or model.kind != "policy":
            raise UserError(
                f"There is no registered policy {args.name!r}; `rlhf models list` shows them."
            )
        promote(session, model)
    print(f"{args.name!r} is now the current policy; the next round samples from it.")
    return 0


def cmd_models_merge(args: argparse.Namespace) -> int:
    from rlhf_train.models.merge import merge_lora

    merged = merge_lora(open_workspace(args), args.name, args.new_name)
    print(f"Merged the LoRA adapter {args.name!r} into the full policy {merged.name!r}.")
    return 0


def add_commands(commands: Commands) -> None:
    models = add_group(commands, "models", "List and register models.")
    add_command(
        models,
        "list",
        cmd_models_list,
        "List registered models with their lineage, and the built-in defaults.",
        "rlhf models list",
    )
    register = add_command(
        models,
        "register",
        cmd_models_register,
        "Register a model from a local folder (written by save_pretrained) or a hub id.",
        """
        rlhf models register my-sft ./checkpoints/sft-final --kind policy
        rlhf models register rm-v1 /models/reward --kind reward --parent my-sft
        """,
    )
    register.add_argument("name")
    register.add_argument("location", help="a model folder or a hub id")
    register.add_argument("--kind", required=True, choices=["policy", "reward"])
    register.add_argument("--parent", help="registered model it was trained from")
    trace = add_command(
        models,
        "trace",
        cmd_models_trace,
        "Trace a model back to the judgments that made it: its training run, retraining job, "
        "export, rounds and reward model, then its parent, up to the root.",
        "rlhf models trace policy-r2",
    )
    trace.add_argument("name")
    promote = add_command(
        models,
        "promote",
        cmd_models_promote,
        "Make a registered policy the current one (the policy new rounds sample from).",
        "rlhf models promote sft-3",
    )
    promote.add_argument("name")
    merge = add_command(
        models,
        "merge",
        cmd_models_merge,
        "Merge a LoRA adapter policy into its base model, giving a full policy.",
        "rlhf models merge sft-3\nrlhf models merge sft-3 --name sft-3-full",
    )
    merge.add_argument("name", help="a registered LoRA adapter policy")
    merge.add_argument("--name", dest="new_name", help="name of the merged policy (NAME-merged)")
