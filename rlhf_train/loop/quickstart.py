"""`rlhf up`: everything between a fresh machine and a round ready to annotate.

Each step checks whether it was already done, so running it again only serves the app.
"""

from __future__ import annotations

from db.engine import transaction
from db.prompts import add_prompts, count_prompts
from db.rounds import round_summaries
from rlhf_train.models.loading import configure_threads
from rlhf_train.prompts.sources import builtin_prompts
from rlhf_train.prompts.split import split_by_hash
from rlhf_train.rounds.generate import generate_round, request_from_config
from rlhf_train.workspace import Workspace
from rlhf_train.workspace_setup import FIRST_LEAD_NAME, ensure_first_lead, init_workspace


def quickstart(workspace: Workspace, progress: bool = True) -> None:
    prepare_first_round(workspace, progress)
    password = ensure_first_lead(workspace)
    if password is not None:
        print(
            f"Created the lead account {FIRST_LEAD_NAME!r} with password: {password}\n"
            "It is shown only this once; note it now. Add more users with `rlhf users add`."
        )


def prepare_first_round(workspace: Workspace, progress: bool = True) -> None:
    """Initialize, import the default prompts if there are none, and generate round 1
    while it is the only round and incomplete."""
    init_workspace(workspace)
    print(f"Workspace: {workspace.root}")
    settings = workspace.config.prompts
    with transaction(workspace.sessions) as session:
        if count_prompts(session) == 0:
            texts = builtin_prompts(settings.builtin, settings.n, settings.words, settings.seed)
            result = add_prompts(
                session,
                texts,
                source=f"builtin:{settings.builtin}",
                chat=False,
                split_of=split_by_hash(settings.eval_fraction),
            )
            print(f"Imported {result.added} {settings.builtin} prompts.")
        rounds = round_summaries(session)
    # Round 1 is (re)generated until complete, so an interrupted `rlhf up` resumes it;
    # once the team has moved past it, `up` leaves rounds alone.
    if [r.number for r in rounds] in ([], [1]) and all(r.status == "open" for r in rounds):
        configure_threads(workspace.config.runtime.threads)
        request = request_from_config(workspace, 1, None, None)
        if not rounds:
            print(f"Generating round 1 from {request.policy} (the first run converts it once).")
        print(generate_round(workspace, request, progress=progress).summary())
