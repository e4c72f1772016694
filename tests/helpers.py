"""Small builders the tests share."""

from __future__ import annotations

from pathlib import Path

from db.engine import transaction
from db.prompts import add_prompts
from rlhf_train.models.sampling import Decoding
from rlhf_train.rounds.generate import RoundRequest

TINY_DECODING = Decoding(max_new_tokens=6, temperature=1.0, top_p=1.0, batch_size=4)


def write_file(folder: Path, name: str, content: str | bytes) -> Path:
    """`folder / name` holding `content`: bytes as they are, text as UTF-8."""
    path = folder / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    return path


def two_samples(prompt_id: int, policy_id: int, round_id: int) -> list:
    """Samples "a" and "b" of one prompt by one policy: the least a pair needs."""
    from db.models import Sample

    return [
        Sample(
            prompt_id=prompt_id,
            policy_id=policy_id,
            round_id=round_id,
            text=text,
            decoding={},
            seed=0,
            token_count=1,
            finished=True,
        )
        for text in ("a", "b")
    ]


def set_environment(monkeypatch, variables: dict[str, str]) -> None:
    """Set RLHF_* settings (or any variables) for the test, undone after it."""
    for key, value in variables.items():
        monkeypatch.setenv(key, value)


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


def loop_settings(policy: Path, reward_backbone: Path) -> dict[str, str]:
    """RLHF_* variables that size the whole loop (generation, reward, PPO, evaluation)
    for tiny models; set them in the environment so that worker processes see them."""
    return {
        "RLHF_MODELS_POLICY": str(policy),
        "RLHF_MODELS_REWARD_BACKBONE": str(reward_backbone),
        "RLHF_RUNTIME_THREADS": "1",
        "RLHF_RUNTIME_DEVICE": "cpu",
        "RLHF_GENERATION_N_PROMPTS": "8",
        "RLHF_GENERATION_MAX_NEW_TOKENS": "6",
        "RLHF_GENERATION_BATCH_SIZE": "8",
        "RLHF_ROUND_OVERLAP": "1",
        "RLHF_REWARD_BATCH_SIZE": "4",
        "RLHF_REWARD_MAX_LENGTH": "32",
        "RLHF_OPTIMIZE_STEPS": "2",
        "RLHF_OPTIMIZE_BATCH_SIZE": "4",
        "RLHF_OPTIMIZE_MAX_NEW_TOKENS": "6",
        "RLHF_OPTIMIZE_CHECKPOINT_EVERY": "1",
        "RLHF_PPO_MINIBATCH_SIZE": "4",
        "RLHF_PPO_PPO_EPOCHS": "1",
        "RLHF_EVALUATE_N_PROMPTS": "4",
        "RLHF_EVALUATE_MAX_NEW_TOKENS": "6",
        "RLHF_WORKER_POLL_SECONDS": "0.2",
        "RLHF_WORKER_HEARTBEAT_SECONDS": "0.5",
    }


def simulation_workspace(
    tmp_path: Path, monkeypatch, policy: Path, reward_backbone: Path, prompts: int = 40
) -> Path:
    """A workspace for `rlhf simulate` on tiny models: loop_settings in the environment,
    initialized, with `prompts` plain prompts imported."""
    from rlhf_train.cli import main

    for key, value in loop_settings(policy, reward_backbone).items():
        monkeypatch.setenv(key, value)
    root = tmp_path / "ws"
    prompt_file = tmp_path / "prompts.txt"
    prompt_file.write_text("\n".join(f"Review {i}: the film was" for i in range(prompts)) + "\n")
    assert main(["--workspace", str(root), "init"]) == 0
    assert main(["--workspace", str(root), "prompts", "import", str(prompt_file)]) == 0
    return root


def processes_running(command_part: str) -> list[int]:
    """Pids whose command line contains `command_part` (from /proc: no procps needed)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if command_part in command:
            found.append(int(entry.name))
    return found


def rlhf(workspace, *args: str) -> int:
    """The `rlhf` command line run in-process on `workspace`; its exit code."""
    from rlhf_train.cli import main

    return main(["--workspace", str(workspace.root), *args])


def round_job(workspace):
    """The workspace's retraining job (its one run of kind "round"), detached."""
    from sqlalchemy import select

    from db.models import TrainingRun

    with workspace.sessions() as session:
        job = session.scalar(select(TrainingRun).where(TrainingRun.kind == "round"))
        session.expunge(job)
        return job
