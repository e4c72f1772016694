"""Small builders the tests share."""

from __future__ import annotations

from pathlib import Path

from db.engine import transaction
from db.prompts import add_prompts
from rlhf_train.generate import RoundRequest
from rlhf_train.sampling import Decoding

TINY_DECODING = Decoding(max_new_tokens=6, temperature=1.0, top_p=1.0, batch_size=4)


def round_request(policy: Path | str, **changes: object) -> RoundRequest:
    """A request for round 1 of 5 prompts with two samples each, unless `changes` say otherwise."""
    fields: dict[str, object] = dict(
        number=1,
        policy=str(policy),
        previous_policy=None,
        n_prompts=5,
        samples_per_prompt=2,
        previous_fraction=0.5,
        decoding=TINY_DECODING,
        seed=0,
    )
    fields.update(changes)
    return RoundRequest(**fields)


def store_prompts(workspace, texts: list[str], chat: bool = False) -> None:
    with transaction(workspace.sessions) as session:
        add_prompts(session, texts, source="test", chat=chat)
