"""`rlhf generate`: sample responses for a round's prompts and form its pairs.

Work is committed one chunk of prompts at a time, each chunk with all its samples and
pairs in a single transaction (under a multi-process launch, every rank samples its share
of the chunk and the main rank writes all of it). A run that stops half-way leaves whole
prompts behind, never half of one; running the same command again resumes with the
prompts the round does not have yet.
"""

from __future__ import annotations

import hashlib
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import torch
from tqdm import tqdm
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from db.engine import transaction
from db.models import Model, Prompt
from db.prompts import prompts_for_round
from db.ranking import NewTask, add_tasks, check_rank_k
from db.registry import current_policy
from db.rounds import (
    NewPair,
    NewSample,
    add_samples_and_pairs,
    find_round,
    prompts_in_round,
    round_for_generation,
)
from rlhf_train.distributed import from_main_process, gather_to_all, process_count, process_index
from rlhf_train.errors import UserError
from rlhf_train.models.loading import load_policy, resolve_device
from rlhf_train.models.sampling import Completion, Decoding, PromptInput, sample_completions
from rlhf_train.models.source import model_location, resolve_policy
from rlhf_train.reward.source import resolve_reward, score_function
from rlhf_train.rounds.pairing import pair_across, pair_most_uncertain, pair_within
from rlhf_train.workspace import Workspace

BATCHES_PER_COMMIT = 4
PAIR_STRATEGIES = ("random", "uncertainty")


@dataclass(frozen=True)
class RoundRequest:
    number: int
    policy: str
    previous_policy: str | None
    n_prompts: int
    samples_per_prompt: int
    previous_fraction: float
    decoding: Decoding
    seed: int
    split: str = "train"
    # How new-vs-new pairs are chosen: "random" or "uncertainty" (closest reward scores).
    pair_strategy: str = "random"
    # The reward model for "uncertainty": registered name, folder or "module:function";
    # None is the newest registered reward model.
    reward: str | None = None
    # An arena round (rounds.arena): the policies that answer its prompts, two a prompt;
    # `policy` and `previous_policy` are then unused. `adaptive` weighs the policy pairs
    # by the overlap of their rating intervals instead of balancing them.
    arena: tuple[str, ...] = ()
    adaptive: bool = False
    # A ranking round (db.ranking): K from 3 to 6 responses per prompt form one task,
    # ranked at once; 0 or 2: pairwise. samples_per_prompt is then K.
    rank: int = 0

    @property
    def rank_k(self) -> int | None:
        return self.rank if self.rank >= 3 else None


@dataclass(frozen=True)
class LoadedPolicy:
    row: Model
    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase


@dataclass(frozen=True)
class LoadedReward:
    description: str  # "reward model NAME", "function module:name" or a folder
    score: Callable[[list[str], list[str]], torch.Tensor]  # (prompts, responses) -> rewards


@dataclass
class GenerationReport:
    round_number: int
    prompts_before: int
    prompts_added: int = 0
    samples: int = 0
    pairs: int = 0
    prompts_without_pair: int = 0
    seconds: float = 0.0  # all of it
    preparing_seconds: float = 0.0  # resolving and loading the policies and reward model
    pairs_by_strategy: dict[str, int] = field(default_factory=dict)
    reward: str | None = None  # what scored the candidates of "uncertainty" pairs
    # Arena rounds: prompts added per pair of policies, "P1 vs P2" -> count.
    prompts_by_policy_pair: dict[str, int] = field(default_factory=dict)

    @property
    def samples_per_second(self) -> float:
        """While sampling, pairing and storing: model preparation left out."""
        sampling = self.seconds - self.preparing_seconds
        return self.samples / sampling if sampling > 0 else 0.0

    def summary(self) -> str:
        total = self.prompts_before + self.prompts_added
        if not self.prompts_added:
            return f"Round {self.round_number} already has {total} prompts; nothing to generate."
        by_strategy = ", ".join(f"{n} {name}" for name, n in sorted(self.pairs_by_strategy.items()))
        resumed = f" (resumed after {self.prompts_before})" if self.prompts_before else ""
        lines = [
            f"Round {self.round_number}: added {self.prompts_added} prompts{resumed}, "
            f"{self.samples} samples and {self.pairs} pairs ({by_strategy}) in "
            f"{self.seconds:.1f} s ({self.preparing_seconds:.1f} s loading the model, then "
            f"{self.samples_per_second:.2f} samples/s).",
        ]
        if self.reward is not None:
            lines.append(f"Uncertainty pairs were chosen by {self.reward}.")
        if self.prompts_by_policy_pair:
            counts = sorted(self.prompts_by_policy_pair.items())
            lines.append(
                "Prompts per pair of policies: " + ", ".join(f"{p} {n}" for p, n in counts) + "."
            )
        if self.prompts_without_pair:
            lines.append(
                f"{self.prompts_without_pair} prompts got only identical responses and no pair."
            )
        return "\n".join(lines)


def request_from_config(
    workspace: Workspace,
    number: int,
    policy: str | None,
    previous_policy: str | None,
    reward: str | None = None,
) -> RoundRequest:
    """A request with the workspace's generation settings (flags already applied)."""
    settings = workspace.config.generation
    if policy is None:
        with workspace.sessions() as session:
            current = current_policy(session)
        policy = current.name if current is not None else workspace.config.models.policy
    return RoundRequest(
        number=number,
        policy=policy,
        previous_policy=previous_policy,
        n_prompts=settings.n_prompts,
        samples_per_prompt=settings.samples_per_prompt,
        previous_fraction=settings.previous_fraction,
        decoding=Decoding(
            max_new_tokens=settings.max_new_tokens,
            temperature=settings.temperature,
            top_p=settings.top_p,
            batch_size=settings.batch_size,
        ),
        seed=settings.seed,
        pair_strategy=settings.pair_strategy,
        reward=reward,
        rank=workspace.config.round.rank,
    )


def stable_seed(*parts: object) -> int:
    digest = hashlib.sha256(repr(parts).encode()).digest()
    return int.from_bytes(digest[:4], "big") & 0x7FFFFFFF


def _uses_previous(request: RoundRequest, prompt: Prompt) -> bool:
    if request.previous_policy is None:
        return False
    draw = random.Random(stable_seed(request.seed, request.number, prompt.id, "mix")).random()
    return draw < request.previous_fraction


def samples_for(
    prompt: Prompt, policy: Model, completions: list[Completion], decoding: Decoding
) -> list[NewSample]:
    return [
        NewSample(
            prompt_id=prompt.id,
            policy_id=policy.id,
            text=completion.text,
            decoding=decoding.as_record(completion.chat_template),
            seed=completion.seed,
            token_count=completion.token_count,
            finished=completion.finished,
        )
        for completion in completions
    ]


def _load_reward(workspace: Workspace, request: RoundRequest, device: str) -> LoadedReward:
    """The scorer of "uncertainty" pairs, loaded once per run."""
    try:
        source = resolve_reward(workspace, request.reward)
    except UserError as exc:
        if request.reward is not None:
            raise
        # resolve_reward's own message suggests --reward, which alone would not tell a
        # user that the random strategy needs no reward model at all.
        raise UserError(
            "There is no reward model to choose uncertainty pairs with; train one with "
            "`rlhf train reward`, pass --reward, or pass --pair-strategy random."
        ) from exc
    return LoadedReward(source.description, score_function(source, device))


@dataclass
class _Prepared:
    """What the sampling needs: the prompts to add and the loaded models."""

    done: int
    todo: list[Prompt]
    policy: Model
    previous: Model | None
    new: LoadedPolicy | None = None
    old: LoadedPolicy | None = None
    reward: LoadedReward | None = None

    def plan(self) -> _Prepared:
        """The rows alone, for the other ranks of a launch (each loads its own models)."""
        return _Prepared(self.done, self.todo, self.policy, self.previous)


def _prepare(workspace: Workspace, request: RoundRequest) -> _Prepared | None:
    """Resolve the policies, create or reopen the round, pick the prompts still missing and
    load the models; None when the open round already has its prompts."""
    with transaction(workspace.sessions) as session:
        existing = find_round(session, request.number)
        done = prompts_in_round(session, existing.id) if existing else 0
        if existing is not None and existing.status == "open" and done >= request.n_prompts:
            return None
        policy = resolve_policy(session, request.policy, workspace.models_dir)
        previous = (
            resolve_policy(session, request.previous_policy, workspace.models_dir)
            if request.previous_policy
            else None
        )
        if previous is not None and previous.id == policy.id:
            raise UserError(
                "--previous-policy names the same model as --policy; pick an older one."
            )
        round_ = round_for_generation(
            session,
            request.number,
            policy=policy,
            previous=previous,
            overlap=workspace.config.round.overlap,
            gold_rate=workspace.config.round.gold_rate,
            render=workspace.config.round.render,
            rank_k=request.rank_k,
        )
        if round_.arena_plan is not None:
            # Its first policy is round_.policy_id, so the check above let it through.
            raise UserError(
                f"Round {request.number} is an arena round; resume it with the same --arena, "
                "or generate into a new round."
            )
        todo = prompts_for_round(
            session, round_.id, split=request.split, limit=request.n_prompts - done
        )
        if not todo:
            raise UserError(
                f"No {request.split} prompts are left that round {request.number} does not "
                "have; import more with `rlhf prompts import FILE` or `rlhf prompts builtin imdb`."
            )
        # Loaded inside the transaction: a policy that registers but does not load
        # leaves neither its registration nor a new round behind.
        return _load_models(workspace, request, _Prepared(done, todo, policy, previous))


def _load_models(workspace: Workspace, request: RoundRequest, plan: _Prepared) -> _Prepared:
    device = resolve_device(workspace.config.runtime.device)
    # The reward model first: it is the likelier to be missing, and cheaper to load.
    if request.pair_strategy == "uncertainty":
        plan.reward = _load_reward(workspace, request, device)
    plan.new = LoadedPolicy(plan.policy, *load_policy(model_location(plan.policy), device))
    if plan.previous is not None:
        plan.old = LoadedPolicy(plan.previous, *load_policy(model_location(plan.previous), device))
    return plan


def _prepared_in_every_rank(workspace: Workspace, request: RoundRequest) -> _Prepared | None:
    """`_prepare` in the main process (the one that writes), its rows handed to the other
    ranks of a launch, which load the same models on their own devices."""
    held: list[_Prepared] = []

    def prepare() -> _Prepared | None:
        prepared = _prepare(workspace, request)
        if prepared is None:
            return None
        held.append(prepared)
        return prepared.plan()

    plan = from_main_process(prepare)
    if held:
        return held[0]
    return _load_models(workspace, request, plan) if plan is not None else None


def generate_round(
    workspace: Workspace, request: RoundRequest, progress: bool = True
) -> GenerationReport:
    """Fill round `request.number` up to `request.n_prompts` prompts; see the module doc.

    Under a multi-process launch each rank samples its share of every chunk and the main
    rank writes the whole chunk in one transaction; its report is the complete one."""
    started = time.perf_counter()
    if request.rank_k is not None:
        check_rank_k(request.rank)
        request = replace(request, samples_per_prompt=request.rank, pair_strategy="random")
    k = request.samples_per_prompt
    if request.pair_strategy not in PAIR_STRATEGIES:
        raise UserError(
            f"Unknown pair strategy {request.pair_strategy!r}; use {' or '.join(PAIR_STRATEGIES)}."
        )
    prepared = _prepared_in_every_rank(workspace, request)
    if prepared is None:
        with workspace.sessions() as session:
            existing = find_round(session, request.number)
            done = prompts_in_round(session, existing.id) if existing else 0
        return GenerationReport(round_number=request.number, prompts_before=done)
    todo, reward = prepared.todo, prepared.reward
    report = GenerationReport(
        round_number=request.number,
        prompts_before=prepared.done,
        preparing_seconds=time.perf_counter() - started,
        reward=reward.description if reward else None,
    )
    rank, world = process_index(), process_count()
    # A chunk is one commit: `chunk_size` prompts for each rank, each rank taking every
    # world-th prompt of it. One process alone takes the whole chunk, as before launches.
    chunk_size = max(1, request.decoding.batch_size * BATCHES_PER_COMMIT // k)
    chunks = [todo[i : i + chunk_size * world] for i in range(0, len(todo), chunk_size * world)]
    bar = tqdm(
        total=sum(len(chunk[rank::world]) for chunk in chunks) * k,
        unit="sample",
        desc=f"round {request.number}",
        disable=not progress or rank != 0,
    )
    try:
        for chunk in chunks:
            shard = chunk[rank::world]
            part = _sample_chunk(request, shard, prepared, bar.update)
            parts = gather_to_all(part)
            from_main_process(lambda parts=parts: _commit_parts(workspace, request, parts, report))
    finally:
        bar.close()
    report.seconds = time.perf_counter() - started
    return report


def _new_sample_scores(
    reward: LoadedReward | None,
    chunk: list[Prompt],
    new_out: list[list[Completion]],
    mixed: set[int],
) -> dict[int, list[float]]:
    """Reward of every new sample of the chunk's new-vs-new prompts, by prompt position.

    One call for the whole chunk, so a reward model scores full batches."""
    if reward is None:
        return {}
    scored = [i for i in range(len(chunk)) if i not in mixed]
    prompts = [chunk[i].text for i in scored for _ in new_out[i]]
    responses = [c.text for i in scored for c in new_out[i]]
    if not responses:
        return {}
    flat = reward.score(prompts, responses).tolist()
    by_prompt: dict[int, list[float]] = {}
    for i in scored:
        by_prompt[i], flat = flat[: len(new_out[i])], flat[len(new_out[i]) :]
    return by_prompt


@dataclass
class _ChunkPart:
    """One rank's share of a chunk: its samples, the pairs among them (indices into its
    samples) and the counts the report adds up."""

    prompts: int = 0
    samples: list[NewSample] = field(default_factory=list)
    pairs: list[NewPair] = field(default_factory=list)
    tasks: list[NewTask] = field(default_factory=list)
    without_pair: int = 0
    by_strategy: dict[str, int] = field(default_factory=dict)


def _sample_chunk(
    request: RoundRequest,
    chunk: list[Prompt],
    prepared: _Prepared,
    on_batch: Callable[[int], None],
) -> _ChunkPart:
    """Sample and pair the prompts of `chunk` (nothing is written here)."""
    part = _ChunkPart(prompts=len(chunk))
    if not chunk:
        return part
    new, old, reward = prepared.new, prepared.old, prepared.reward
    k = request.samples_per_prompt
    mixed = [_uses_previous(request, prompt) for prompt in chunk]
    chunk_seed = stable_seed(request.seed, request.number, chunk[0].id)
    new_counts = [(k + 1) // 2 if is_mixed else k for is_mixed in mixed]
    new_out = sample_completions(
        new.model,
        new.tokenizer,
        [
            (PromptInput(p.text, p.chat, p.messages), n)
            for p, n in zip(chunk, new_counts, strict=True)
        ],
        request.decoding,
        chunk_seed,
        on_batch,
    )
    old_out: dict[int, list[Completion]] = {}
    mixed_prompts = [i for i, is_mixed in enumerate(mixed) if is_mixed]
    if mixed_prompts and old is not None:
        sampled = sample_completions(
            old.model,
            old.tokenizer,
            [
                (PromptInput(chunk[i].text, chunk[i].chat, chunk[i].messages), k // 2)
                for i in mixed_prompts
            ],
            request.decoding,
            chunk_seed + 1_000_003,
            on_batch,
        )
        old_out = dict(zip(mixed_prompts, sampled, strict=True))
    scores = _new_sample_scores(reward, chunk, new_out, set(old_out))
    samples, pairs = part.samples, part.pairs
    for i, prompt in enumerate(chunk):
        rng = random.Random(stable_seed(request.seed, request.number, prompt.id, "pairs"))
        base = len(samples)
        samples += samples_for(prompt, new.row, new_out[i], request.decoding)
        new_texts = [c.text for c in new_out[i]]
        if request.rank_k is not None:
            # A ranking task holds all K responses, the previous policy's (if any) too.
            strategy = "random"
            if i in old_out and old is not None:
                samples += samples_for(prompt, old.row, old_out[i], request.decoding)
                strategy = "new_vs_previous"
            order = list(range(base, len(samples)))
            rng.shuffle(order)  # stored order: new and previous mixed, not first-new
            part.tasks.append(NewTask(tuple(order), strategy))
            name = f"ranking tasks of {request.rank}"
            part.by_strategy[name] = part.by_strategy.get(name, 0) + 1
            continue
        if i in old_out and old is not None:
            samples += samples_for(prompt, old.row, old_out[i], request.decoding)
            planned = pair_across(new_texts, [c.text for c in old_out[i]], rng, k // 2)
            strategy = "new_vs_previous"
        elif i in scores:
            planned = pair_most_uncertain(new_texts, scores[i], rng, k // 2)
            strategy = "uncertainty"
        else:
            planned = pair_within(new_texts, rng, k // 2)
            strategy = "random"
        pairs += [NewPair(base + p.a, base + p.b, strategy) for p in planned]
        part.without_pair += not planned
        part.by_strategy[strategy] = part.by_strategy.get(strategy, 0) + len(planned)
    return part


def _commit_parts(
    workspace: Workspace, request: RoundRequest, parts: list[_ChunkPart], report: GenerationReport
) -> None:
    """Every rank's share of a chunk, written in one transaction (main process only)."""
    samples: list[NewSample] = []
    pairs: list[NewPair] = []
    tasks: list[NewTask] = []
    for part in parts:
        offset = len(samples)
        samples += part.samples
        pairs += [NewPair(p.a + offset, p.b + offset, p.strategy) for p in part.pairs]
        tasks += [NewTask(tuple(i + offset for i in t.samples), t.strategy) for t in part.tasks]
    commit_chunk(
        workspace, request.number, samples, pairs, report, sum(p.prompts for p in parts), tasks
    )
    for part in parts:
        report.prompts_without_pair += part.without_pair
        for strategy, count in part.by_strategy.items():
            report.pairs_by_strategy[strategy] = report.pairs_by_strategy.get(strategy, 0) + count


def commit_chunk(
    workspace: Workspace,
    number: int,
    samples: list,
    pairs: list,
    report: GenerationReport,
    prompts: int,
    tasks: list[NewTask] | None = None,
) -> None:
    """One chunk's samples and pairs (or ranking tasks) in one transaction, into round
    `number` if it is still open, and counted in `report`: a kill loses at most the chunk
    being written."""
    with transaction(workspace.sessions) as session:
        round_ = find_round(session, number)
        if round_ is None or round_.status != "open":
            raise UserError(
                f"Round {number} was closed while generating; what was generated before "
                "is kept, the rest is not. Generate into a new round."
            )
        if tasks:
            add_tasks(session, round_, samples, tasks)
        else:
            add_samples_and_pairs(session, round_, samples, pairs)
    report.prompts_added += prompts
    report.samples += len(samples)
    report.pairs += len(pairs) + len(tasks or [])
