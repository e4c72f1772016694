"""The candidate pool of bench/labels.py: responses sampled once from the base policy,
cached on disk so that every later run (each strategy, seed and size) reuses them.

A pool file is JSON: how it was sampled, and per prompt its K responses, in the order
of one seeded list of distinct packaged IMDB openings. A Pool takes the first
`train_prompts` of them as `train` (the prompts whose pairs may be chosen for labelling)
and the next `heldout_prompts` as `heldout` (other prompts, whose pairs only measure the
reward models). Each chunk of prompts is sampled with a seed of its first prompt's
position and the file is rewritten after each chunk, so an interrupted run resumes where
it stopped and a larger pool extends a smaller one, keeping the prompts it has. A file
sampled otherwise (policy, temperature, tokens...) is refused rather than mixed.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from rlhf_train.errors import UserError


@dataclass(frozen=True)
class PoolSettings:
    """What a pool is sampled from and how (the loop's generation settings)."""

    train_prompts: int = 1000
    heldout_prompts: int = 250
    samples_per_prompt: int = 4
    max_new_tokens: int = 32
    temperature: float = 0.9
    top_p: float = 1.0
    prompt_words: int = 8
    prompt_seed: int = 0
    sampling_seed: int = 0
    policy: str = "smollm2-135m-instruct"


@dataclass(frozen=True)
class Part:
    """Prompts and, for each, its responses."""

    prompts: list[str]
    responses: list[list[str]]


@dataclass(frozen=True)
class Pool:
    settings: PoolSettings
    train: Part
    heldout: Part


def _sampling(settings: PoolSettings) -> dict:
    """The settings that decide the responses; the prompt counts only decide how many."""
    recorded = asdict(settings)
    del recorded["train_prompts"], recorded["heldout_prompts"]
    return recorded


def _write(path: Path, settings: PoolSettings, done: list[tuple[str, list[str]]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = path.with_suffix(path.suffix + ".tmp")
    record = {"sampling": _sampling(settings), "done": [[p, r] for p, r in done]}
    staging.write_text(json.dumps(record) + "\n", encoding="utf-8")
    staging.replace(path)


def _read(path: Path, settings: PoolSettings) -> list[tuple[str, list[str]]]:
    if not path.is_file():
        return []
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
        recorded = record["sampling"]
    except (ValueError, KeyError, TypeError) as exc:
        raise UserError(
            f"{path} is not a pool file ({exc}); delete it or pass another --pool."
        ) from exc
    if recorded != _sampling(settings):
        raise UserError(
            f"{path} was sampled with other settings ({recorded}); delete it or "
            "pass another --pool for these settings."
        )
    return [(prompt, list(responses)) for prompt, responses in record["done"]]


def pool_prompts(settings: PoolSettings) -> list[str]:
    """The train prompts then the held-out ones: distinct packaged IMDB openings."""
    from rlhf_train.prompts.sources import builtin_prompts

    wanted = settings.train_prompts + settings.heldout_prompts
    prompts = builtin_prompts("imdb", wanted, settings.prompt_words, settings.prompt_seed)
    if len(prompts) < wanted:
        raise UserError(f"The packaged IMDB set gives {len(prompts)} prompts; ask for fewer.")
    return prompts


def load_or_generate(
    path: Path,
    settings: PoolSettings,
    policy_folder: Path,
    batch_size: int = 32,
    chunk: int = 50,
) -> Pool:
    """The pool in `path`, sampling (and saving) whatever part of it is missing."""
    prompts = pool_prompts(settings)
    done = _read(path, settings)
    if len(done) < len(prompts):
        # A smaller pool's file may hold a longer list; only prompts lacking are sampled.
        import time

        from rlhf_train.models.loading import load_policy
        from rlhf_train.models.sampling import Decoding, PromptInput, sample_completions

        model, tokenizer = load_policy(str(policy_folder))
        decoding = Decoding(
            settings.max_new_tokens, settings.temperature, settings.top_p, batch_size
        )
        started = time.perf_counter()
        for start in range(len(done), len(prompts), chunk):
            texts = prompts[start : start + chunk]
            requests = [
                (PromptInput(text, chat=False), settings.samples_per_prompt) for text in texts
            ]
            # A seed per chunk: resuming after an interruption samples what a whole run would.
            completions = sample_completions(
                model, tokenizer, requests, decoding, seed=settings.sampling_seed + start * 1000
            )
            done.extend(
                (text, [c.text for c in samples])
                for text, samples in zip(texts, completions, strict=True)
            )
            _write(path, settings, done)
            print(
                f"pool: {len(done)}/{len(prompts)} prompts, {time.perf_counter() - started:.0f} s",
                flush=True,
            )
    done = done[: len(prompts)]
    if [prompt for prompt, _ in done] != prompts:
        raise UserError(f"{path} holds other prompts than these settings give; delete it.")
    cut = settings.train_prompts
    return Pool(
        settings,
        Part([p for p, _ in done[:cut]], [r for _, r in done[:cut]]),
        Part([p for p, _ in done[cut:]], [r for _, r in done[cut:]]),
    )
