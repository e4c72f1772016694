"""Arena rounds: every prompt answered by two of several named policies, so that every
pair of them is compared (`rlhf generate --arena P1,P2,P3`).

Which pair of policies answers which prompt follows the round's plan (policies, one
weight per policy pair, seed), stored on the round when it is created: equal weights
balance the pairs, `adaptive` weighs them by how much their 95% rating intervals overlap
(rounds.pairing.arena_schedule). Work is committed a chunk of prompts at a time, as in
rounds.generate, and a rerun resumes along the same plan, so a killed run loses no
balance and holds no prompt twice.
"""

from __future__ import annotations

import random
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, replace

from sqlalchemy import select
from sqlalchemy.orm import Session
from tqdm import tqdm

from db.engine import transaction
from db.models import Model, Prompt, Round, Sample
from db.prompts import prompts_for_round
from db.rounds import NewPair, NewSample, find_round, next_round_number
from rlhf_train.errors import UserError
from rlhf_train.judgments.ratings import fit_leaderboard, overlap
from rlhf_train.judgments.votes import cross_policy_votes
from rlhf_train.models.loading import load_policy, resolve_device
from rlhf_train.models.sampling import Completion, PromptInput, sample_completions
from rlhf_train.models.source import model_location, resolve_policy
from rlhf_train.rounds.arena_start import compared_pairs
from rlhf_train.rounds.generate import (
    BATCHES_PER_COMMIT,
    GenerationReport,
    LoadedPolicy,
    RoundRequest,
    commit_chunk,
    samples_for,
    stable_seed,
)
from rlhf_train.rounds.pairing import (
    overlap_weights,
    pair_across,
    policy_pairs,
    remaining_schedule,
)
from rlhf_train.workspace import Workspace

STRATEGY = "arena"


@dataclass(frozen=True)
class ArenaPlan:
    policies: list[int]  # model ids, in the order the pairs are numbered
    weights: list[float]  # one per policy pair (rounds.pairing.policy_pairs order)
    seed: int

    def record(self) -> dict:
        return {"policies": self.policies, "weights": self.weights, "seed": self.seed}

    @classmethod
    def of(cls, round_: Round) -> ArenaPlan:
        plan = round_.arena_plan or {}
        return cls(list(plan["policies"]), [float(w) for w in plan["weights"]], plan["seed"])


def arena_request(base: RoundRequest, policies: tuple[str, ...], adaptive: bool) -> RoundRequest:
    """`base` (the workspace's generation settings) as an arena round of `policies`."""
    return replace(
        base, policy=policies[0], previous_policy=None, arena=policies, adaptive=adaptive
    )


def _resolve(session: Session, request: RoundRequest, workspace: Workspace) -> list[Model]:
    models = [resolve_policy(session, spec, workspace.models_dir) for spec in request.arena]
    seen: dict[int, str] = {}
    for spec, model in zip(request.arena, models, strict=True):
        if model.id in seen:
            raise UserError(
                f"--arena names policy {model.name!r} twice (as {seen[model.id]!r} and "
                f"{spec!r}); name each policy once."
            )
        seen[model.id] = spec
    pairs = len(policy_pairs(len(models)))
    if request.n_prompts < pairs:
        raise UserError(
            f"{len(models)} policies make {pairs} pairs, more than the {request.n_prompts} "
            f"prompts asked for; pass --n-prompts {pairs} or more so that every pair is compared."
        )
    return models


def adaptive_weights(session: Session, models: list[Model], seed: int) -> list[float]:
    """Weights of the policy pairs by the overlap of their intervals in the leaderboard of
    every cross-policy vote so far; pairs never compared get the top weight."""
    votes = cross_policy_votes(session)
    index = {name: i for i, name in enumerate(votes.names)}
    met = compared_pairs(session)
    pairs = [(models[i].name, models[j].name) for i, j in policy_pairs(len(models))]
    compared = [frozenset(pair) in met for pair in pairs]
    if not any(compared):
        raise UserError(
            "--adaptive weighs the pairs by their ratings, and no two of these policies have "
            "been compared by annotators yet; run a balanced arena round first (without "
            "--adaptive)."
        )
    boards = {None: fit_leaderboard(votes, seed=seed)}

    def board_for(a: str, b: str):
        # The anchor's interval is a single point (its rating is fixed at 1000), which
        # overlaps nothing; a pair with the anchor is measured on a board anchored at a
        # third policy instead.
        default = boards[None]
        if default.anchor not in (a, b):
            return default
        others = [r.name for r in default.ratings if r.name not in (a, b)]
        if not others:
            return default
        if others[0] not in boards:
            boards[others[0]] = fit_leaderboard(votes, anchor=others[0], seed=seed)
        return boards[others[0]]

    return overlap_weights(
        [
            overlap(board_for(a, b), a, b) if known and a in index and b in index else None
            for (a, b), known in zip(pairs, compared, strict=True)
        ]
    )


def _arena_round(
    session: Session, workspace: Workspace, request: RoundRequest, models: list[Model]
) -> Round:
    """The open arena round `request.number`, created with its plan if new."""
    if request.number < 1:
        raise UserError(
            f"Round numbers start at 1, not {request.number}; pass --round 1 or higher."
        )
    existing = find_round(session, request.number)
    if existing is None:
        weights = (
            adaptive_weights(session, models, request.seed)
            if request.adaptive
            else [1.0] * len(policy_pairs(len(models)))
        )
        plan = ArenaPlan([m.id for m in models], weights, request.seed)
        created = Round(
            number=request.number,
            status="open",
            # The first named policy stands for the round where one policy is expected
            # (`rlhf rounds list`, retraining from the round).
            policy_id=models[0].id,
            previous_policy_id=None,
            overlap=workspace.config.round.overlap,
            gold_rate=workspace.config.round.gold_rate,
            render=workspace.config.round.render,
            arena_plan=plan.record(),
        )
        session.add(created)
        session.flush()
        return created
    following = next_round_number(session)
    if existing.status != "open":
        raise UserError(
            f"Round {request.number} is closed, so no samples can be added to it; generate "
            f"into a new round with --round {following}."
        )
    if existing.arena_plan is None:
        raise UserError(
            f"Round {request.number} is not an arena round; generate the arena round into "
            f"round {following}."
        )
    if set(ArenaPlan.of(existing).policies) != {m.id for m in models}:
        raise UserError(
            f"Round {request.number} is an arena round of other policies; pass the same "
            f"--arena to resume it, or generate into round {following}."
        )
    return existing


def _done_by_pair(session: Session, round_: Round, plan: ArenaPlan) -> Counter[int]:
    """Prompts the round holds per policy pair (by the policies of their samples)."""
    number = {pair: n for n, pair in enumerate(policy_pairs(len(plan.policies)))}
    position = {policy_id: i for i, policy_id in enumerate(plan.policies)}
    by_prompt: dict[int, set[int]] = {}
    rows = session.execute(
        select(Sample.prompt_id, Sample.policy_id).where(Sample.round_id == round_.id).distinct()
    )
    for prompt_id, policy_id in rows:
        by_prompt.setdefault(prompt_id, set()).add(position[policy_id])
    done: Counter[int] = Counter()
    for policies in by_prompt.values():
        if len(policies) == 2:
            done[number[tuple(sorted(policies))]] += 1
    return done


def generate_arena_round(
    workspace: Workspace, request: RoundRequest, progress: bool = True
) -> GenerationReport:
    """Fill arena round `request.number` up to `request.n_prompts` prompts; see the module doc."""
    started = time.perf_counter()
    with transaction(workspace.sessions) as session:
        models = _resolve(session, request, workspace)
        round_ = _arena_round(session, workspace, request, models)
        plan = ArenaPlan.of(round_)
        done = _done_by_pair(session, round_, plan)
        held = sum(done.values())
        if held >= request.n_prompts:
            return GenerationReport(round_number=request.number, prompts_before=held)
        todo = prompts_for_round(
            session, round_.id, split=request.split, limit=request.n_prompts - held
        )
        if not todo:
            raise UserError(
                f"No {request.split} prompts are left that round {request.number} does not "
                "have; import more with `rlhf prompts import FILE` or `rlhf prompts builtin imdb`."
            )
        by_id = {m.id: m for m in models}
        # Loaded inside the transaction: a policy that does not load leaves neither its
        # registration nor the new round behind.
        device = resolve_device(workspace.config.runtime.device)
        loaded = [
            LoadedPolicy(by_id[i], *load_policy(model_location(by_id[i]), device))
            for i in plan.policies
        ]
    pairs = policy_pairs(len(plan.policies))
    assigned = remaining_schedule(plan.weights, plan.seed, done, len(todo))
    report = GenerationReport(
        round_number=request.number,
        prompts_before=held,
        preparing_seconds=time.perf_counter() - started,
    )
    per_policy = max(1, request.samples_per_prompt // 2)
    chunk_size = max(1, request.decoding.batch_size * BATCHES_PER_COMMIT // (2 * per_policy))
    bar = tqdm(
        total=len(todo) * 2 * per_policy,
        unit="sample",
        desc=f"round {request.number}",
        disable=not progress,
    )
    try:
        for start in range(0, len(todo), chunk_size):
            chunk = [
                (prompt, pairs[pair])
                for prompt, pair in zip(
                    todo[start : start + chunk_size],
                    assigned[start : start + chunk_size],
                    strict=True,
                )
            ]
            _generate_chunk(workspace, request, chunk, loaded, per_policy, report, bar.update)
    finally:
        bar.close()
    report.seconds = time.perf_counter() - started
    return report


def _generate_chunk(
    workspace: Workspace,
    request: RoundRequest,
    chunk: list[tuple[Prompt, tuple[int, int]]],
    loaded: list[LoadedPolicy],
    per_policy: int,
    report: GenerationReport,
    on_batch: Callable[[int], None],
) -> None:
    """Sample both policies of each prompt, pair them, and commit the chunk in one
    transaction."""
    chunk_seed = stable_seed(request.seed, request.number, chunk[0][0].id, STRATEGY)
    out: dict[tuple[int, int], list[Completion]] = {}  # (prompt position, policy) -> samples
    for policy, source in enumerate(loaded):
        mine = [i for i, (_prompt, pair) in enumerate(chunk) if policy in pair]
        if not mine:
            continue
        sampled = sample_completions(
            source.model,
            source.tokenizer,
            [
                (PromptInput(chunk[i][0].text, chunk[i][0].chat, chunk[i][0].messages), per_policy)
                for i in mine
            ],
            request.decoding,
            chunk_seed + 1_000_003 * policy,
            on_batch,
        )
        out.update({(i, policy): completions for i, completions in zip(mine, sampled, strict=True)})
    samples: list[NewSample] = []
    pairs: list[NewPair] = []
    for i, (prompt, (first, second)) in enumerate(chunk):
        rng = random.Random(stable_seed(request.seed, request.number, prompt.id, STRATEGY))
        base = len(samples)
        samples += samples_for(prompt, loaded[first].row, out[i, first], request.decoding)
        samples += samples_for(prompt, loaded[second].row, out[i, second], request.decoding)
        # A coin in pair_across decides which sample is A, so the stored order says nothing
        # about which policy wrote it (the annotate page draws the side shown left again).
        planned = pair_across(
            [c.text for c in out[i, first]], [c.text for c in out[i, second]], rng, per_policy
        )
        pairs += [NewPair(base + p.a, base + p.b, STRATEGY) for p in planned]
        report.prompts_without_pair += not planned
        names = f"{loaded[first].row.name} vs {loaded[second].row.name}"
        report.prompts_by_policy_pair[names] = report.prompts_by_policy_pair.get(names, 0) + 1
    commit_chunk(workspace, request.number, samples, pairs, report, len(chunk))
    report.pairs_by_strategy[STRATEGY] = report.pairs_by_strategy.get(STRATEGY, 0) + len(pairs)
