"""A ranking round built straight in the database, for the ranking tests."""

from __future__ import annotations

from db.engine import transaction
from db.models import Model, Prompt, Round, User
from db.ranking import NewTask, add_tasks
from db.rounds import NewSample


def ranking_round(
    sessions,
    *,
    k: int = 4,
    tasks: int = 3,
    overlap: int = 2,
    annotators: int = 2,
    gold_rate: float = 0.0,
    texts: list[str] | None = None,
) -> tuple[list[int], int]:
    """Round 1, of kind ranking: `tasks` prompts with `k` responses each (response i of
    prompt p reads texts[i] if given, else "p<p> r<i>"); the annotators' user ids and
    the round's id."""
    with transaction(sessions) as session:
        policy = Model(kind="policy", name="p0", path="/models/p0")
        session.add(policy)
        session.flush()
        round_ = Round(
            number=1,
            policy_id=policy.id,
            overlap=overlap,
            gold_rate=gold_rate,
            kind="ranking",
            rank_k=k,
        )
        session.add(round_)
        session.flush()
        for number in range(tasks):
            prompt = Prompt(text=f"q{number}", source="test", content_hash=f"h{number}")
            session.add(prompt)
            session.flush()
            samples = [
                NewSample(
                    prompt_id=prompt.id,
                    policy_id=policy.id,
                    text=texts[i] if texts else f"p{number} r{i}",
                    decoding={},
                    seed=i,
                    token_count=1,
                    finished=True,
                )
                for i in range(k)
            ]
            add_tasks(session, round_, samples, [NewTask(tuple(range(k)))])
        users = [User(name=f"u{n}", role="annotator", password_hash="x") for n in range(annotators)]
        session.add_all(users)
        session.flush()
        return [user.id for user in users], round_.id
