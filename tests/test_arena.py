"""Arena rounds (`rlhf generate --arena P1,P2,...`) on tiny policies: exact balance of the
policy pairs, strategy "arena", a killed run resumed, adaptive weights, bad input."""

from __future__ import annotations

import itertools
import math
from collections import Counter
from dataclasses import replace
from pathlib import Path

import pytest
from sqlalchemy import func, select

from db.engine import make_engine, session_factory, transaction
from db.models import Model, Pair, Prompt, Round, Sample
from migrations.runner import downgrade, upgrade
from rlhf_train.cli import main
from rlhf_train.errors import UserError
from rlhf_train.rounds import arena as arena_module
from rlhf_train.rounds import arena_start
from rlhf_train.rounds.arena import arena_request, generate_arena_round
from rlhf_train.rounds.arena_start import parse_policies, start_arena_round
from rlhf_train.rounds.pairing import (
    arena_schedule,
    overlap_weights,
    policy_pairs,
    remaining_schedule,
)
from tests.helpers import TINY_DECODING, record_votes, round_request, store_prompts, two_samples
from tests.tiny_models import build_tiny_policy


@pytest.fixture(scope="module")
def four_policies(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Four differently initialised tiny policies; their folder names become their names."""
    root = tmp_path_factory.mktemp("arena-policies")
    return [
        build_tiny_policy(root / f"arena-{name}", seed=seed) for seed, name in enumerate("wxyz")
    ]


def _request(policies: list[Path], **changes: object):
    base = round_request(policies[0], **changes)
    return arena_request(base, tuple(str(p) for p in policies), base.adaptive)


def _prompts(workspace, n: int) -> None:
    store_prompts(workspace, [f"Arena prompt {i} goes" for i in range(n)])


def _pairs_by_policies(workspace, number: int = 1) -> Counter[frozenset[str]]:
    """Prompts per pair of policy names in round `number`, read from the stored pairs."""
    with workspace.sessions() as session:
        names = dict(session.execute(select(Model.id, Model.name)).all())
        round_id = session.scalar(select(Round.id).where(Round.number == number))
        samples = {
            s.id: s for s in session.scalars(select(Sample).where(Sample.round_id == round_id))
        }
        pairs = list(session.scalars(select(Pair).where(Pair.round_id == round_id)))
    found: Counter[frozenset[str]] = Counter()
    for pair in pairs:
        a, b = samples[pair.sample_a_id], samples[pair.sample_b_id]
        assert pair.strategy == "arena"
        assert a.prompt_id == b.prompt_id == pair.prompt_id
        assert a.policy_id != b.policy_id
        found[frozenset((names[a.policy_id], names[b.policy_id]))] += 1
    return found


def _count(workspace, model) -> int:
    with workspace.sessions() as session:
        return session.scalar(select(func.count()).select_from(model))


# --- the schedule, pure --------------------------------------------------------------------


@pytest.mark.parametrize("k", [3, 4, 5])
def test_balanced_schedule_is_exact_at_every_length(k: int) -> None:
    pairs = len(policy_pairs(k))
    schedule = list(itertools.islice(arena_schedule([1.0] * pairs, seed=7), 40))
    for n in range(1, 41):
        counts = Counter(schedule[:n])
        got = [counts.get(p, 0) for p in range(pairs)]
        assert set(got) <= {n // pairs, math.ceil(n / pairs)}, (n, got)
        assert sum(got) == n


def test_the_seed_shuffles_which_pairs_get_the_extra_prompts() -> None:
    firsts = {tuple(itertools.islice(arena_schedule([1.0] * 6, seed), 6)) for seed in range(8)}
    assert len(firsts) > 1


def test_remaining_schedule_continues_a_prefix() -> None:
    weights = [3.0, 1.0, 0.2]
    schedule = list(itertools.islice(arena_schedule(weights, seed=1), 20))
    assert remaining_schedule(weights, 1, Counter(schedule[:8]), 12) == schedule[8:]


def test_weighted_schedule_favours_heavy_pairs_and_keeps_every_pair() -> None:
    counts = Counter(itertools.islice(arena_schedule([10.0, 1.0, 0.01], seed=0), 30))
    assert counts[0] > 5 * counts[1] and counts[2] >= 1


def test_overlap_weights_floor_and_never_compared() -> None:
    assert overlap_weights([0.5, 0.0, None]) == [0.5, 0.025, 0.5]
    assert overlap_weights([0.0, 0.0]) == [0.05, 0.05]
    with pytest.raises(ValueError):
        next(arena_schedule([1.0, 0.0], seed=0))


# --- generation on tiny policies -----------------------------------------------------------


def test_three_policies_every_pair_balanced_as_arena(workspace, four_policies) -> None:
    _prompts(workspace, 12)
    policies = four_policies[:3]
    report = generate_arena_round(workspace, _request(policies, n_prompts=8), False)
    assert report.prompts_added == 8 and report.samples == 16
    found = _pairs_by_policies(workspace)
    names = [p.name for p in policies]
    assert set(found) == {frozenset(pair) for pair in itertools.combinations(names, 2)}
    assert sorted(found.values()) == [2, 3, 3]
    assert sum(report.prompts_by_policy_pair.values()) == 8
    assert report.pairs_by_strategy == {"arena": report.pairs}
    assert "Prompts per pair of policies: " in report.summary()
    with workspace.sessions() as session:
        round_ = session.scalar(select(Round))
        models = {m.name: m.id for m in session.scalars(select(Model))}
        per_prompt = Counter(session.scalars(select(Sample.prompt_id)))
        firsts = {
            session.get(Sample, pair.sample_a_id).policy_id
            for pair in session.scalars(select(Pair))
        }
    assert round_.arena_plan["policies"] == [models[n] for n in names]
    assert round_.policy_id == models[names[0]] and round_.previous_policy_id is None
    assert set(per_prompt.values()) == {2}  # one sample of each of its two policies
    assert len(firsts) == 3  # sample A comes from every policy: the coin, not the order


def test_four_policies_balance(sqlite_workspace, four_policies) -> None:
    _prompts(sqlite_workspace, 14)
    generate_arena_round(sqlite_workspace, _request(four_policies, n_prompts=14), False)
    found = _pairs_by_policies(sqlite_workspace)
    assert len(found) == 6 and sorted(found.values()) == [2, 2, 2, 2, 3, 3]


def test_killed_run_resumes_with_every_prompt_once(
    sqlite_workspace, four_policies, monkeypatch
) -> None:
    """Small batches make chunks of 4 prompts; the run dies in the second chunk."""
    _prompts(sqlite_workspace, 12)
    small_batches = replace(TINY_DECODING, max_new_tokens=4, batch_size=2)
    request = _request(four_policies[:3], n_prompts=10, decoding=small_batches)
    real = arena_module.sample_completions
    calls = []

    def dies_in_chunk_two(*args, **kwargs):
        calls.append(1)
        if len(calls) == 4:  # chunk one samples its three policies, then this
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(arena_module, "sample_completions", dies_in_chunk_two)
    with pytest.raises(KeyboardInterrupt):
        generate_arena_round(sqlite_workspace, request, False)
    assert _count(sqlite_workspace, Pair) > 0
    with sqlite_workspace.sessions() as session:
        assert len(set(session.scalars(select(Sample.prompt_id)))) == 4
    monkeypatch.setattr(arena_module, "sample_completions", real)
    report = generate_arena_round(sqlite_workspace, request, False)
    assert (report.prompts_before, report.prompts_added) == (4, 6)
    with sqlite_workspace.sessions() as session:
        per_prompt = Counter(session.scalars(select(Sample.prompt_id)))
    assert len(per_prompt) == 10 and set(per_prompt.values()) == {2}
    assert sorted(_pairs_by_policies(sqlite_workspace).values()) == [3, 3, 4]
    again = generate_arena_round(sqlite_workspace, request, False)
    assert again.prompts_added == 0


def test_adaptive_gives_overlapping_pairs_more_prompts(sqlite_workspace, four_policies) -> None:
    """Round 1: w always beats x (their intervals part), while y splits its votes with
    both (its intervals overlap theirs). Round 2, adaptive, asks more of the y pairs."""
    w, x, y = four_policies[:3]
    _prompts(sqlite_workspace, 80)
    generate_arena_round(sqlite_workspace, _request([w, x, y], n_prompts=30), False)
    with sqlite_workspace.sessions() as session:
        names = dict(session.execute(select(Model.id, Model.name)).all())
        rows = session.execute(
            select(Pair.id, Sample.policy_id).join(Sample, Sample.id == Pair.sample_a_id)
        ).all()
        other = dict(
            session.execute(
                select(Pair.id, Sample.policy_id).join(Sample, Sample.id == Pair.sample_b_id)
            ).all()
        )
    votes = {}
    for position, (pair_id, a) in enumerate(sorted(rows)):
        both = {names[a], names[other[pair_id]]}
        if both == {w.name, x.name}:
            winner = "A" if names[a] == w.name else "B"
            votes[position] = [(f"judge{j}", winner, 2) for j in range(3)]
        else:
            votes[position] = [
                (f"judge{j}", c, 2) for j, c in enumerate("ABA" if position % 2 else "BAB")
            ]
    record_votes(sqlite_workspace, votes)
    report = generate_arena_round(
        sqlite_workspace, _request([w, x, y], number=2, n_prompts=30, adaptive=True), False
    )
    assert report.prompts_added == 30
    found = _pairs_by_policies(sqlite_workspace, number=2)
    parted = found[frozenset((w.name, x.name))]
    assert 1 <= parted < found[frozenset((w.name, y.name))]
    assert parted < found[frozenset((x.name, y.name))]


def test_adaptive_needs_earlier_votes(sqlite_workspace, four_policies) -> None:
    _prompts(sqlite_workspace, 6)
    with pytest.raises(UserError, match="run a balanced arena round first"):
        generate_arena_round(
            sqlite_workspace, _request(four_policies[:3], n_prompts=6, adaptive=True), False
        )
    assert _count(sqlite_workspace, Round) == _count(sqlite_workspace, Model) == 0


# --- bad input -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("only-one", "does not name two or more policies"),
        ("a,,b", "does not name two or more policies"),
        ("a,b,a", "names 'a' twice"),
    ],
)
def test_policy_list_refusals(text: str, message: str) -> None:
    with pytest.raises(UserError, match=message):
        parse_policies(text)


def test_unknown_duplicate_or_too_few_prompts_store_nothing(workspace, four_policies) -> None:
    _prompts(workspace, 6)
    w, x = four_policies[:2]
    with pytest.raises(UserError, match="No model 'no-such-policy'"):
        generate_arena_round(workspace, _request([w, Path("no-such-policy")]), False)
    with pytest.raises(UserError, match="names policy 'arena-w' twice"):
        generate_arena_round(workspace, _request([w, x, w.parent / "." / w.name]), False)
    with pytest.raises(UserError, match="pass --n-prompts 6 or more"):
        generate_arena_round(workspace, _request(four_policies, n_prompts=5), False)
    assert _count(workspace, Model) == _count(workspace, Round) == _count(workspace, Sample) == 0


def test_plain_and_arena_rounds_do_not_mix(sqlite_workspace, four_policies) -> None:
    from rlhf_train.rounds.generate import generate_round

    _prompts(sqlite_workspace, 10)
    w, x, y = four_policies[:3]
    generate_arena_round(sqlite_workspace, _request([w, x], n_prompts=2), False)
    with pytest.raises(UserError, match="Round 1 is an arena round"):
        generate_round(sqlite_workspace, round_request(w, n_prompts=4), False)
    with pytest.raises(UserError, match="arena round of other policies"):
        generate_arena_round(sqlite_workspace, _request([w, y], n_prompts=4), False)
    generate_round(sqlite_workspace, round_request(w, number=2, n_prompts=2), False)
    with pytest.raises(UserError, match="Round 2 is not an arena round"):
        generate_arena_round(sqlite_workspace, _request([w, x], number=2, n_prompts=4), False)


def _cli(tmp_path: Path, capsys, *args: str) -> tuple[int, str]:
    code = main(["--workspace", str(tmp_path / "ws"), *args])
    return code, capsys.readouterr().err


def test_cli_arena_round_and_its_refusals(tmp_path, four_policies, capsys) -> None:
    assert _cli(tmp_path, capsys, "init")[0] == 0
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("\n".join(f"Arena prompt {i}" for i in range(6)) + "\n")
    assert _cli(tmp_path, capsys, "prompts", "import", str(prompts))[0] == 0
    w, x, y = (str(p) for p in four_policies[:3])
    for args, message in [
        (["--arena", w], "does not name two or more policies"),
        (["--arena", f"{w},{x}", "--policy", w], "so --policy does not apply"),
        (["--adaptive"], "pass --arena too"),
        (["--arena", f"{w},{x},nope"], "No model 'nope'"),
    ]:
        code, err = _cli(tmp_path, capsys, "generate", "--round", "1", *args)
        assert code == 2 and err.startswith("error: ") and err.count("\n") == 1, err
        assert message in err
    code = main(
        [
            "--workspace",
            str(tmp_path / "ws"),
            "generate",
            "--round",
            "1",
            "--arena",
            f"{w},{x},{y}",
            "--n-prompts",
            "6",
            "--max-new-tokens",
            "4",
            "--no-progress",
        ]
    )
    out = capsys.readouterr().out
    assert code == 0 and "6 arena" in out and "arena-w vs arena-x 2" in out


def test_migration_allows_arena_pairs_and_downgrade_relabels_them(tmp_path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'm.db'}")
    upgrade(engine)
    with transaction(session_factory(engine)) as session:
        prompt = Prompt(text="p", source="t", content_hash="h", split="train", chat=False)
        policy = Model(kind="policy", name="m", path="/m")
        session.add_all([prompt, policy])
        session.flush()
        round_ = Round(number=1, status="open", overlap=1, gold_rate=0.0, arena_plan={"seed": 0})
        session.add(round_)
        session.flush()
        samples = two_samples(prompt.id, policy.id, round_.id)
        session.add_all(samples)
        session.flush()
        session.add(
            Pair(
                round_id=round_.id,
                prompt_id=prompt.id,
                sample_a_id=samples[0].id,
                sample_b_id=samples[1].id,
                strategy="arena",
            )
        )
    downgrade(engine, "0005")
    with engine.connect() as connection:
        assert (
            connection.exec_driver_sql("SELECT strategy FROM pairs").scalar() == "new_vs_previous"
        )
    upgrade(engine)
    engine.dispose()


# --- starting one from the app ---------------------------------------------------------------


def _register(workspace, policies: list[Path]) -> list[str]:
    from db.registry import register_model

    with transaction(workspace.sessions) as session:
        return [
            register_model(session, name=p.name, kind="policy", path=str(p)).name for p in policies
        ]


def test_start_from_the_app_checks_then_generates_in_a_child(
    sqlite_workspace, four_policies
) -> None:
    _prompts(sqlite_workspace, 8)
    names = _register(sqlite_workspace, four_policies[:3])
    root = sqlite_workspace.root
    for args, message in [
        ((None, names, 6, False), "does not know its workspace"),
        ((root, names[:1], 6, False), "does not name two or more policies"),
        ((root, [*names[:2], "ghost"], 6, False), "no registered policy 'ghost'"),
        ((root, names, 2, False), "ask for 3 prompts or more"),
        ((root, names, 6, True), "start a balanced arena round first"),
    ]:
        with pytest.raises(UserError, match=message):
            start_arena_round(*args)
    started = start_arena_round(root, names, 6, False)
    assert started.number == 1
    with pytest.raises(UserError, match="still running"):
        start_arena_round(root, names, 6, False)
    assert arena_start._CHILDREN[started.pid].wait(timeout=300) == 0
    assert "6 arena" in started.log.read_text()
    assert sorted(_pairs_by_policies(sqlite_workspace).values()) == [2, 2, 2]
    second = start_arena_round(root, names, 3, False)  # the lock was let go
    assert second.number == 2
    arena_start._CHILDREN[second.pid].wait(timeout=300)
