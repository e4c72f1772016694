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


def record_votes(workspace, votes: dict[int, list[tuple[str, str, int | None]]]) -> list[int]:
    """Judgments by name, through the app's own record_judgment:
    {pair position in id order: [(annotator, choice, strength)]}.

    Annotators are created as needed. Returns the pair ids in id order.
    """
    from sqlalchemy import select

    from db.judgments import record_judgment
    from db.models import Pair, User
    from db.users import create_user

    with transaction(workspace.sessions) as session:
        pair_ids = list(session.scalars(select(Pair.id).order_by(Pair.id)))
        users = {user.name: user for user in session.scalars(select(User))}
        for position, cast in votes.items():
            for name, choice, strength in cast:
                if name not in users:
                    users[name] = create_user(session, name, "annotator", "password-123")
                record_judgment(
                    session,
                    users[name].id,
                    pair_ids[position],
                    choice=choice,
                    strength=strength,
                    left_sample="A",
                )
    return pair_ids
