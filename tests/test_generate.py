"""Round generation on tiny policies: samples, pairs, provenance, resume and refusals;
pairs chosen by reward-model uncertainty."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from db.engine import transaction
from db.models import Model, Pair, Round, Sample
from db.registry import current_policy
from rlhf_train.errors import UserError
from rlhf_train.models.sampling import Decoding
from rlhf_train.rounds.generate import generate_round
from tests.helpers import round_request, store_prompts

LENGTH_REWARD = """
def length(prompts, responses):
    return [float(len(response)) for response in responses]
"""


def _add_prompts(workspace, n: int, chat: bool = False) -> None:
    store_prompts(workspace, [f"The film number {i} was" for i in range(n)], chat=chat)


def _count(workspace, model) -> int:
    with workspace.sessions() as session:
        return session.scalar(select(func.count()).select_from(model))


def test_round_of_pairs_from_one_policy(workspace, tiny_policy) -> None:
    _add_prompts(workspace, 8)
    report = generate_round(
        workspace, round_request(tiny_policy, n_prompts=5, samples_per_prompt=4), False
    )
    assert report.prompts_added == 5 and report.samples == 20
    with workspace.sessions() as session:
        pairs = list(session.scalars(select(Pair)))
        samples = list(session.scalars(select(Sample)))
        policy = current_policy(session)
    assert report.pairs == len(pairs) <= 10
    assert policy is not None and policy.path == str(tiny_policy.resolve())
    for sample in samples:
        assert sample.policy_id == policy.id and sample.round_id is not None
        assert sample.decoding == {
            "temperature": 1.0,
            "top_p": 1.0,
            "max_new_tokens": 6,
            "batch_size": 4,
            "chat_template": False,
        }
        assert 1 <= sample.token_count <= 6
        if sample.token_count < 6:
            assert sample.finished  # stopped early: only the end token stops it early
    by_id = {s.id: s for s in samples}
    for pair in pairs:
        a, b = by_id[pair.sample_a_id], by_id[pair.sample_b_id]
        assert a.prompt_id == b.prompt_id == pair.prompt_id
        assert a.text != b.text
        assert pair.strategy == "random"
    # each sample is in at most one pair
    used = [s for p in pairs for s in (p.sample_a_id, p.sample_b_id)]
    assert len(used) == len(set(used))


def test_duplicate_responses_are_never_paired(workspace, tiny_policy) -> None:
    # One new token from a near-greedy policy: most samples of a prompt are identical.
    _add_prompts(workspace, 6)
    request = round_request(
        tiny_policy,
        n_prompts=6,
        samples_per_prompt=4,
        decoding=Decoding(max_new_tokens=1, temperature=0.05, top_p=1.0, batch_size=8),
    )
    report = generate_round(workspace, request, False)
    assert report.prompts_without_pair > 0
    with workspace.sessions() as session:
        for pair in session.scalars(select(Pair)):
            assert pair.sample_a.text != pair.sample_b.text


def test_same_seed_same_samples(tmp_path, tiny_policy) -> None:
    from rlhf_train.workspace import Workspace
    from rlhf_train.workspace_setup import init_workspace

    texts = []
    for name in ("one", "two"):
        workspace = Workspace.open(tmp_path / name)
        init_workspace(workspace)
        _add_prompts(workspace, 4)
        generate_round(workspace, round_request(tiny_policy, n_prompts=4), False)
        with workspace.sessions() as session:
            texts.append(list(session.scalars(select(Sample.text).order_by(Sample.id))))
    assert texts[0] == texts[1]


def test_chat_prompts_use_the_template(workspace, tiny_policy) -> None:
    _add_prompts(workspace, 3, chat=True)
    generate_round(workspace, round_request(tiny_policy, n_prompts=3), False)
    with workspace.sessions() as session:
        decodings = list(session.scalars(select(Sample.decoding)))
    assert len(decodings) == 6
    assert all(decoding["chat_template"] is True for decoding in decodings)


def _new_vs_previous(workspace, new, previous, n_prompts: int, **changes: object):
    """`n_prompts` stored prompts and a round request of `new` against `previous`, half
    of the prompts new-vs-previous."""
    _add_prompts(workspace, n_prompts)
    return round_request(
        new,
        previous_policy=str(previous),
        n_prompts=n_prompts,
        previous_fraction=0.5,
        **changes,
    )


def test_new_against_previous_policy(workspace, tiny_policy, tiny_policy_v2) -> None:
    request = _new_vs_previous(workspace, tiny_policy_v2, tiny_policy, 12, samples_per_prompt=2)
    report = generate_round(workspace, request, False)
    with workspace.sessions() as session:
        round_ = session.scalar(select(Round))
        assert round_.policy.path == str(tiny_policy_v2.resolve())
        assert round_.previous_policy.path == str(tiny_policy.resolve())
        strategies = {}
        for pair in session.scalars(select(Pair)):
            strategies.setdefault(pair.strategy, []).append(pair)
            policies = {pair.sample_a.policy_id, pair.sample_b.policy_id}
            if pair.strategy == "new_vs_previous":
                assert policies == {round_.policy_id, round_.previous_policy_id}
            else:
                assert policies == {round_.policy_id}
    assert set(strategies) == {"random", "new_vs_previous"}
    assert report.pairs_by_strategy == {k: len(v) for k, v in strategies.items()}


def test_rerun_resumes_with_the_missing_prompts(workspace, tiny_policy) -> None:
    _add_prompts(workspace, 10)
    generate_round(workspace, round_request(tiny_policy, n_prompts=3), False)
    with workspace.sessions() as session:
        first = set(session.scalars(select(Sample.prompt_id)))
    report = generate_round(workspace, round_request(tiny_policy, n_prompts=7), False)
    assert (report.prompts_before, report.prompts_added) == (3, 4)
    with workspace.sessions() as session:
        prompt_ids = list(session.scalars(select(Sample.prompt_id)))
    assert first <= set(prompt_ids) and len(set(prompt_ids)) == 7
    assert len(prompt_ids) == 14  # two samples per prompt, none generated twice
    again = generate_round(workspace, round_request(tiny_policy, n_prompts=7), False)
    assert again.prompts_added == 0 and "nothing to generate" in again.summary()


def test_next_round_prefers_unused_prompts(workspace, tiny_policy) -> None:
    _add_prompts(workspace, 6)
    generate_round(workspace, round_request(tiny_policy, number=1, n_prompts=3), False)
    generate_round(workspace, round_request(tiny_policy, number=2, n_prompts=3), False)
    with workspace.sessions() as session:
        rounds = {
            number: set(
                session.scalars(select(Sample.prompt_id).join(Round).where(Round.number == number))
            )
            for number in (1, 2)
        }
    assert not rounds[1] & rounds[2]


def test_generating_into_a_closed_round_is_refused(workspace, tiny_policy) -> None:
    _add_prompts(workspace, 4)
    generate_round(workspace, round_request(tiny_policy, n_prompts=2), False)
    with transaction(workspace.sessions) as session:
        session.scalar(select(Round)).status = "closed"
    before = _count(workspace, Sample)
    with pytest.raises(UserError, match="Round 1 is closed.*--round 2"):
        generate_round(workspace, round_request(tiny_policy, n_prompts=4), False)
    assert _count(workspace, Sample) == before


def test_a_folder_that_is_not_a_model_leaves_no_trace(workspace, tmp_path) -> None:
    _add_prompts(workspace, 2)
    empty = tmp_path / "not-a-model"
    empty.mkdir()
    with pytest.raises(UserError, match="is not a model folder"):
        generate_round(workspace, round_request(empty), False)
    broken = tmp_path / "broken-model"
    broken.mkdir()
    (broken / "config.json").write_text('{"model_type": "llama"}')
    with pytest.raises(UserError, match="Cannot load a causal language model"):
        generate_round(workspace, round_request(broken), False)
    assert _count(workspace, Model) == _count(workspace, Round) == _count(workspace, Sample) == 0


def test_unknown_model_name(workspace) -> None:
    _add_prompts(workspace, 2)
    with pytest.raises(UserError, match="No model 'no-such-model'"):
        generate_round(workspace, round_request("no-such-model"), False)
    with pytest.raises(UserError, match="neither a model folder nor a hub id available"):
        generate_round(workspace, round_request("someorg/some-model"), False)


def test_no_prompts_left(workspace, tiny_policy) -> None:
    with pytest.raises(UserError, match="No train prompts are left"):
        generate_round(workspace, round_request(tiny_policy), False)
    assert _count(workspace, Round) == 0


def test_samples_with_nul_characters_store_on_every_backend(workspace, tiny_policy) -> None:
    from db.rounds import NewPair, NewSample, add_samples_and_pairs

    store_prompts(workspace, ["p"])
    generate_round(workspace, round_request(tiny_policy, n_prompts=1), False)
    with transaction(workspace.sessions) as session:
        round_ = session.scalar(select(Round))
        sample = session.scalar(select(Sample))
        fields = dict(
            prompt_id=sample.prompt_id,
            policy_id=sample.policy_id,
            decoding={},
            seed=0,
            token_count=2,
            finished=True,
        )
        texts = ["a\x00b", "<script>\x00"]
        new = [NewSample(text=text, **fields) for text in texts]
        add_samples_and_pairs(session, round_, new, [NewPair(0, 1, "random")])
    with workspace.sessions() as session:
        stored = session.scalars(select(Sample.text).order_by(Sample.id.desc()).limit(2)).all()
    assert sorted(stored) == ["<script>", "ab"]


def _lengths(samples: list[Sample]) -> list[float]:
    return [float(len(s.text)) for s in samples]


def _length_reward(tmp_path) -> str:
    """A reward function whose scores a test can recompute: the response's length."""
    path = tmp_path / "rm.py"
    path.write_text(LENGTH_REWARD, encoding="utf-8")
    return f"{path}:length"


def _assert_greedy_closest(workspace, score) -> int:
    """Every prompt's uncertainty pairs are, in turn, the closest-scoring pair of distinct
    texts among its new samples not yet paired. Returns the number of such pairs.

    `score(samples)` gives the rewards of a list of samples."""
    with workspace.sessions() as session:
        round_ = session.scalar(select(Round))
        pairs = list(session.scalars(select(Pair).where(Pair.strategy == "uncertainty")))
        samples = list(session.scalars(select(Sample).where(Sample.policy_id == round_.policy_id)))
        scores = dict(zip([s.id for s in samples], score(samples), strict=True))
    for prompt_id in {p.prompt_id for p in pairs}:
        free = {s.id: s.text for s in samples if s.prompt_id == prompt_id}
        chosen = [(p.sample_a_id, p.sample_b_id) for p in pairs if p.prompt_id == prompt_id]
        # Largest gap last, as the greedy choice made them (ties in any order).
        for a, b in sorted(chosen, key=lambda ab: abs(scores[ab[0]] - scores[ab[1]])):
            closest = min(
                abs(scores[i] - scores[j]) for i in free for j in free if free[i] != free[j]
            )
            assert abs(scores[a] - scores[b]) == pytest.approx(closest, abs=1e-5)
            del free[a], free[b]
    return len(pairs)


def test_uncertainty_pairs_have_the_closest_rewards(workspace, tiny_policy, tmp_path) -> None:
    _add_prompts(workspace, 6)
    request = round_request(
        tiny_policy,
        n_prompts=6,
        samples_per_prompt=4,
        pair_strategy="uncertainty",
        reward=_length_reward(tmp_path),
    )
    report = generate_round(workspace, request, False)
    assert report.samples == 24  # every candidate is stored, paired or not
    assert set(report.pairs_by_strategy) == {"uncertainty"}
    assert _assert_greedy_closest(workspace, _lengths) == report.pairs > 0
    assert "Uncertainty pairs were chosen by function" in report.summary()
    assert "rm.py:length" in report.summary()
    with workspace.sessions() as session:
        for pair in session.scalars(select(Pair)):
            assert pair.sample_a.text != pair.sample_b.text
            assert pair.strategy == "uncertainty"


def test_uncertainty_uses_the_newest_reward_model(workspace, tiny_policy, tmp_path) -> None:
    from db.registry import register_model
    from rlhf_train.reward.scorer import RewardScorer
    from tests.tiny_models import build_tiny_reward_backbone

    folder = build_tiny_reward_backbone(tmp_path / "rm")
    with transaction(workspace.sessions) as session:
        register_model(session, name="rm-1", kind="reward", path=str(folder))
    _add_prompts(workspace, 3)
    request = round_request(
        tiny_policy, n_prompts=3, samples_per_prompt=4, pair_strategy="uncertainty"
    )
    report = generate_round(workspace, request, False)
    assert "chosen by reward model rm-1" in report.summary()
    scorer = RewardScorer.load(folder)

    def score(samples: list[Sample]) -> list[float]:
        return scorer.score([s.prompt.text for s in samples], [s.text for s in samples]).tolist()

    assert _assert_greedy_closest(workspace, score) == report.pairs > 0


def test_uncertainty_without_a_reward_model_writes_nothing(workspace, tiny_policy) -> None:
    _add_prompts(workspace, 2)
    request = round_request(tiny_policy, samples_per_prompt=4, pair_strategy="uncertainty")
    with pytest.raises(
        UserError, match="no reward model.*`rlhf train reward`.*--pair-strategy random"
    ):
        generate_round(workspace, request, False)
    assert _count(workspace, Round) == _count(workspace, Sample) == _count(workspace, Model) == 0


def test_uncertainty_alongside_new_vs_previous(
    workspace, tiny_policy, tiny_policy_v2, tmp_path
) -> None:
    request = _new_vs_previous(
        workspace,
        tiny_policy_v2,
        tiny_policy,
        8,
        samples_per_prompt=4,
        pair_strategy="uncertainty",
        reward=_length_reward(tmp_path),
    )
    report = generate_round(workspace, request, False)
    assert set(report.pairs_by_strategy) == {"uncertainty", "new_vs_previous"}
    with workspace.sessions() as session:
        round_ = session.scalar(select(Round))
        for pair in session.scalars(select(Pair)):
            policies = {pair.sample_a.policy_id, pair.sample_b.policy_id}
            if pair.strategy == "new_vs_previous":
                assert policies == {round_.policy_id, round_.previous_policy_id}
            else:
                assert policies == {round_.policy_id}
    _assert_greedy_closest(workspace, _lengths)


def test_generate_command_takes_the_pair_strategy(
    workspace, tiny_policy, tmp_path, capsys, monkeypatch
) -> None:
    from rlhf_train.cli import main

    monkeypatch.setenv("RLHF_DB_URL", workspace.db_url)
    _add_prompts(workspace, 2)
    common = ["--workspace", str(workspace.root), "generate", "--policy", str(tiny_policy)]
    options = ["--n-prompts", "2", "--samples-per-prompt", "4", "--max-new-tokens", "4"]
    options += ["--pair-strategy", "uncertainty", "--no-progress"]
    assert main([*common, "--round", "1", *options]) == 2
    assert "train one with `rlhf train reward`" in capsys.readouterr().err
    assert main([*common, "--round", "1", *options, "--reward", _length_reward(tmp_path)]) == 0
    assert "chosen by function" in capsys.readouterr().out
    with workspace.sessions() as session:
        assert set(session.scalars(select(Pair.strategy))) == {"uncertainty"}
