"""Benchmark `rlhf generate` against a bare `model.generate` loop.

Compares, in one run and on the same machine, samples/s of

- ours: `generate_round` (what `rlhf generate` runs) filling a new round: prompt
  selection, model load, batched sampling, pairing and the database writes; and
- bare: a plain Python loop over batches in input order calling `model.generate` on the
  same model (loaded once), the same prompt texts, batch size, temperature, top-p and
  `max_new_tokens`, decoding the outputs with the tokenizer.

Model loading is timed apart (the model is loaded once by the bare loop, and once per
round inside `generate_round`), so the headline ratio compares like with like: ours
without its model load against the bare loop without its model load. Ours end to end is
reported as well. The runs alternate ours, bare, ours, bare, ... (`--repeats` of each)
and the fastest run of each variant is kept. Generated tokens/s (new tokens up to and
including the end-of-sequence token) show whether both did comparable work: sampling
stops at different points from run to run. Each run also records how many cores other
processes kept busy meanwhile: on a shared machine torch's threads slow down many times
over when another process takes a core, and such a run is not a measurement of ours.

Setup is not timed: a fresh workspace in a temporary folder (or `--workspace`), the
packaged IMDB prompts, and the default policy converted from its GGUF once (about 25 s;
a converted copy in ./rlhf-workspace/models is reused if there is one).

Run it from the repository root:

    python bench/generate.py            # prints a table, writes bench/results/generate.json
    python bench/generate.py --prompts 16 --repeats 1 --max-new-tokens 16   # a quick look
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import argparse
import datetime as dt
import gc
import statistics
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from common import cpu_clock, machine, other_cores, run_benchmark
from sqlalchemy import func, select
from transformers import PreTrainedModel, PreTrainedTokenizerBase

import rlhf_train.rounds.generate as generate_module
from db.engine import transaction
from db.models import Prompt, Sample
from db.prompts import add_prompts
from db.rounds import find_round, next_round_number
from rlhf_train.models.builtin import BUILTIN_MODELS
from rlhf_train.models.loading import configure_threads, load_policy, resolve_device
from rlhf_train.models.sampling import end_token_ids
from rlhf_train.models.source import model_location, resolve_policy
from rlhf_train.prompts.sources import builtin_prompts
from rlhf_train.rounds.generate import RoundRequest, generate_round, request_from_config
from rlhf_train.workspace import Workspace
from rlhf_train.workspace_setup import init_workspace

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
DEFAULT_OUT = BENCH_DIR / "results" / "generate.json"
# A model cache that `rlhf up` in the repository root leaves behind, reused if present.
REPO_MODEL_CACHE = REPO_ROOT / "rlhf-workspace" / "models"
TARGET_RATIO = 0.9
PROMPT_WORDS = 8
BARE_SEED = 0
# Other processes busier than this (in cores) during a kept run make its figures suspect.
DISTURBED_CORES = 0.25


@dataclass(frozen=True)
class Run:
    """One timed run of one variant."""

    samples: int
    tokens: int
    seconds: float  # excluding model load
    load_seconds: float = 0.0  # model load inside the timed call (ours only)
    other_cores: float = 0.0  # cores kept busy by other processes during the run

    @property
    def samples_per_s(self) -> float:
        return self.samples / self.seconds

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.seconds

    @property
    def end_to_end_seconds(self) -> float:
        return self.seconds + self.load_seconds

    @property
    def end_to_end_samples_per_s(self) -> float:
        return self.samples / self.end_to_end_seconds

    @property
    def end_to_end_tokens_per_s(self) -> float:
        return self.tokens / self.end_to_end_seconds


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="samples/s of `rlhf generate` against a bare model.generate loop"
    )
    parser.add_argument(
        "--model",
        default="smollm2-135m-instruct",
        help="built-in policy name or a local model folder (default smollm2-135m-instruct)",
    )
    parser.add_argument("--prompts", type=int, default=48, help="prompts per run (default 48)")
    parser.add_argument(
        "--samples-per-prompt", type=int, default=2, help="samples per prompt (default 2)"
    )
    parser.add_argument("--batch-size", type=int, default=16, help="batch size (default 16)")
    parser.add_argument(
        "--max-new-tokens", type=int, default=48, help="new tokens at most (default 48)"
    )
    parser.add_argument(
        "--repeats", type=int, default=2, help="timed runs of each variant (default 2)"
    )
    parser.add_argument(
        "--workspace",
        type=Path,
        default=None,
        help="workspace to use and keep, e.g. to keep the converted model between runs; "
        "new rounds are added to it (default: a fresh temporary folder)",
    )
    parser.add_argument(
        "--device",
        default="cpu",
        help="torch device for both: cpu, cuda, cuda:N or auto (default cpu)",
    )
    parser.add_argument(
        "--threads", type=int, default=0, help="CPU threads, 0 for all cores (default 0)"
    )
    parser.add_argument(
        "--out", type=Path, default=DEFAULT_OUT, help="JSON output (default %(default)s)"
    )
    args = parser.parse_args()
    for name in ("prompts", "batch_size", "max_new_tokens", "repeats"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.samples_per_prompt < 2:
        parser.error("--samples-per-prompt must be at least 2 (pairs need two samples)")
    return args


# ---- setup (not timed) -----------------------------------------------------------------


def reuse_model_cache(workspace: Workspace, model: str) -> None:
    """Link a built-in model already converted in ./rlhf-workspace into `workspace`."""
    cached = REPO_MODEL_CACHE / model
    target = workspace.models_dir / model
    if model in BUILTIN_MODELS and (cached / "config.json").is_file() and not target.exists():
        target.symlink_to(cached.resolve(), target_is_directory=True)


def open_workspace(root: Path, args: argparse.Namespace) -> Workspace:
    overrides = {
        # Never write benchmark rounds into a database that RLHF_DB_URL points at.
        "database.url": "",
        "generation.n_prompts": args.prompts,
        "generation.samples_per_prompt": args.samples_per_prompt,
        "generation.batch_size": args.batch_size,
        "generation.max_new_tokens": args.max_new_tokens,
        "runtime.device": args.device,
    }
    workspace = Workspace.open(root, overrides)
    init_workspace(workspace)
    reuse_model_cache(workspace, args.model)
    return workspace


def import_prompts(workspace: Workspace, count: int) -> None:
    texts = builtin_prompts("imdb", count, PROMPT_WORDS, seed=0)
    with transaction(workspace.sessions) as session:
        # All in the train split, which is what `rlhf generate` draws from.
        add_prompts(session, texts, source="builtin:imdb", chat=False)


def register_policy(workspace: Workspace, spec: str) -> tuple[str, str]:
    """Register (and convert, for a built-in) the policy; its name and load location."""
    with transaction(workspace.sessions) as session:
        row = resolve_policy(session, spec, workspace.models_dir)
        return row.name, model_location(row)


# ---- measuring ------------------------------------------------------------------------


# ---- ours ------------------------------------------------------------------------------


@contextmanager
def timed_model_loads() -> Iterator[list[float]]:
    """Time every `load_policy` call made by `generate_round`; yields the list of seconds.

    `generate_round` looks `load_policy` up in its module when it runs, so replacing it
    there with a timed pass-through measures the load inside the timed call without
    changing what it does.
    """
    original = generate_module.load_policy
    seconds: list[float] = []

    def timed(*args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        loaded = original(*args, **kwargs)
        seconds.append(time.perf_counter() - started)
        return loaded

    generate_module.load_policy = timed
    try:
        yield seconds
    finally:
        generate_module.load_policy = original


def round_tokens_and_texts(workspace: Workspace, number: int) -> tuple[int, list[str]]:
    """Generated tokens in round `number` and its prompt texts, in the order it took them."""
    with workspace.sessions() as session:
        round_ = find_round(session, number)
        assert round_ is not None
        tokens = session.scalar(
            select(func.sum(Sample.token_count)).where(Sample.round_id == round_.id)
        )
        used = select(Sample.prompt_id).where(Sample.round_id == round_.id)
        texts = session.scalars(
            select(Prompt.text).where(Prompt.id.in_(used)).order_by(Prompt.content_hash)
        )
        return int(tokens or 0), list(texts)


def run_ours(workspace: Workspace, policy: str) -> tuple[Run, list[str]]:
    """One new round through `generate_round`; the run and the prompt texts it used."""
    with workspace.sessions() as session:
        number = next_round_number(session)
    request: RoundRequest = request_from_config(workspace, number, policy, None)
    with timed_model_loads() as loads:
        before = cpu_clock()
        report = generate_round(workspace, request, progress=False)
        after = cpu_clock()
    tokens, texts = round_tokens_and_texts(workspace, number)
    load = sum(loads)
    seconds = after.wall - before.wall - load
    return Run(report.samples, tokens, seconds, load, other_cores(before, after)), texts


# ---- bare ------------------------------------------------------------------------------


def new_token_count(tokens: list[int], end_ids: set[int]) -> int:
    """New tokens up to and including the first end-of-sequence token."""
    for position, token in enumerate(tokens):
        if token in end_ids:
            return position + 1
    return len(tokens)


@torch.no_grad()
def bare_generate(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    texts: list[str],
    settings: RoundRequest,
) -> tuple[list[str], int]:
    """The plain loop: decoded completions and the number of new tokens."""
    decoding = settings.decoding
    device = next(model.parameters()).device
    end_ids = end_token_ids(model, tokenizer)
    inputs = [text for text in texts for _copy in range(settings.samples_per_prompt)]
    completions: list[str] = []
    tokens = 0
    torch.manual_seed(BARE_SEED)
    for start in range(0, len(inputs), decoding.batch_size):
        batch = tokenizer(
            inputs[start : start + decoding.batch_size], padding=True, return_tensors="pt"
        ).to(device)
        output = model.generate(
            **batch,
            do_sample=True,
            temperature=decoding.temperature,
            top_p=decoding.top_p,
            max_new_tokens=decoding.max_new_tokens,
            pad_token_id=tokenizer.pad_token_id,
        )
        new = output[:, batch["input_ids"].shape[1] :]
        completions += tokenizer.batch_decode(new, skip_special_tokens=True)
        tokens += sum(new_token_count(row, end_ids) for row in new.tolist())
    return completions, tokens


def run_bare(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    texts: list[str],
    settings: RoundRequest,
) -> Run:
    before = cpu_clock()
    completions, tokens = bare_generate(model, tokenizer, texts, settings)
    after = cpu_clock()
    return Run(len(completions), tokens, after.wall - before.wall, 0.0, other_cores(before, after))


# ---- report ----------------------------------------------------------------------------


def best(runs: list[Run]) -> Run:
    # The fastest run, not the median: on a shared machine other work only ever slows a
    # run down, so the fastest one is the least disturbed measurement of each variant.
    # How much work a run did (tokens up to the end of sequence) is in the table too.
    return max(runs, key=lambda run: run.samples_per_s)


def median_samples_per_s(runs: list[Run]) -> float:
    return statistics.median(run.samples_per_s for run in runs)


TableRow = tuple[str, int, float, float, float, float]


def table(rows: list[TableRow]) -> str:
    header = ("variant", "samples", "seconds", "samples/s", "tokens/s", "other load")
    cells = [header] + [
        (name, str(samples), f"{seconds:.2f}", f"{per_s:.3f}", f"{tokens:.1f}", f"{others:.2f}")
        for name, samples, seconds, per_s, tokens, others in rows
    ]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    lines = []
    for number, row in enumerate(cells):
        numbers = zip(row[1:], widths[1:], strict=True)
        parts = [row[0].ljust(widths[0])] + [cell.rjust(width) for cell, width in numbers]
        lines.append("  ".join(parts))
        if number == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def summarize(
    args: argparse.Namespace,
    settings: RoundRequest,
    ours_runs: list[Run],
    bare_runs: list[Run],
    bare_load_seconds: float,
    threads: int,
) -> dict[str, object]:
    ours, bare = best(ours_runs), best(bare_runs)
    ratio = ours.samples_per_s / bare.samples_per_s
    return {
        "model": args.model,
        "prompts": args.prompts,
        "samples_per_prompt": args.samples_per_prompt,
        "batch_size": settings.decoding.batch_size,
        "max_new_tokens": settings.decoding.max_new_tokens,
        "temperature": settings.decoding.temperature,
        "top_p": settings.decoding.top_p,
        "repeats": args.repeats,
        "aggregate": "fastest of repeats",
        "ours_samples": ours.samples,
        "ours_tokens": ours.tokens,
        "ours_seconds": round(ours.seconds, 3),
        "ours_samples_per_s": round(ours.samples_per_s, 4),
        "ours_tokens_per_s": round(ours.tokens_per_s, 2),
        "ours_load_seconds": round(ours.load_seconds, 3),
        "ours_end_to_end_seconds": round(ours.end_to_end_seconds, 3),
        "ours_end_to_end_samples_per_s": round(ours.end_to_end_samples_per_s, 4),
        "ours_end_to_end_tokens_per_s": round(ours.end_to_end_tokens_per_s, 2),
        "ours_samples_per_s_median": round(median_samples_per_s(ours_runs), 4),
        "ours_other_load_cores": round(ours.other_cores, 2),
        "bare_samples": bare.samples,
        "bare_tokens": bare.tokens,
        "bare_seconds": round(bare.seconds, 3),
        "bare_samples_per_s": round(bare.samples_per_s, 4),
        "bare_tokens_per_s": round(bare.tokens_per_s, 2),
        "bare_load_seconds": round(bare_load_seconds, 3),
        "bare_samples_per_s_median": round(median_samples_per_s(bare_runs), 4),
        "bare_other_load_cores": round(bare.other_cores, 2),
        "ratio": round(ratio, 4),
        "ratio_end_to_end": round(ours.end_to_end_samples_per_s / bare.samples_per_s, 4),
        "ratio_tokens": round(ours.tokens_per_s / bare.tokens_per_s, 4),
        "ratio_median_of_repeats": round(
            median_samples_per_s(ours_runs) / median_samples_per_s(bare_runs), 4
        ),
        "target_ratio": TARGET_RATIO,
        "meets_target": ratio >= TARGET_RATIO,
        "disturbed": max(ours.other_cores, bare.other_cores) > DISTURBED_CORES,
        "machine": machine(
            ("torch", "transformers"), threads=threads, device=resolve_device(args.device)
        ),
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }


def print_report(ours_runs: list[Run], bare_runs: list[Run], figures: dict[str, Any]) -> None:
    ours, bare = best(ours_runs), best(bare_runs)
    rows: list[TableRow] = [
        (
            "ours, end to end (model load + sampling + pairing + DB)",
            ours.samples,
            ours.end_to_end_seconds,
            ours.end_to_end_samples_per_s,
            ours.end_to_end_tokens_per_s,
            ours.other_cores,
        ),
        (
            "ours without model load (sampling + pairing + DB)",
            ours.samples,
            ours.seconds,
            ours.samples_per_s,
            ours.tokens_per_s,
            ours.other_cores,
        ),
        (
            "bare model.generate loop (sampling + decoding)",
            bare.samples,
            bare.seconds,
            bare.samples_per_s,
            bare.tokens_per_s,
            bare.other_cores,
        ),
    ]
    print()
    print(
        f"{figures['model']}, {figures['prompts']} prompts x {figures['samples_per_prompt']} "
        f"samples, batch {figures['batch_size']}, max {figures['max_new_tokens']} new tokens, "
        f"{figures['machine']['threads']} threads on {figures['machine']['device']}; "
        f"fastest of {len(ours_runs)} runs each"
    )
    print(table(rows))
    print(
        "ours: generate_round, as `rlhf generate` runs it; bare: the model loaded once before, "
        "not timed.\n"
        "tokens/s: new tokens up to and including end of sequence; other load: cores kept "
        "busy by\nother processes during the run.\n"
        f"model load: {ours.load_seconds:.2f} s inside ours, "
        f"{figures['bare_load_seconds']:.2f} s for the bare loop"
    )
    verdict = "PASS" if figures["meets_target"] else "FAIL"
    print(
        f"ratio ours/bare samples/s without model load: {figures['ratio']:.3f} "
        f"(target >= {TARGET_RATIO}): {verdict}"
    )
    print(
        f"  end to end: {figures['ratio_end_to_end']:.3f}; tokens/s: "
        f"{figures['ratio_tokens']:.3f}; median of runs: {figures['ratio_median_of_repeats']:.3f}"
    )
    if figures["disturbed"]:
        print(
            f"WARNING: other processes kept more than {DISTURBED_CORES} cores busy during a kept "
            "run, so these figures measure the machine's load; rerun on an idle machine."
        )


# ---- main ------------------------------------------------------------------------------


def warm_up(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, text: str) -> None:
    """One tiny generation, so that one-time start-up costs land in no timed run."""
    inputs = tokenizer([text], return_tensors="pt").to(next(model.parameters()).device)
    with torch.no_grad():
        model.generate(**inputs, max_new_tokens=2, pad_token_id=tokenizer.pad_token_id)


def benchmark(workspace: Workspace, args: argparse.Namespace, threads: int) -> dict[str, object]:
    import_prompts(workspace, args.prompts * args.repeats + args.batch_size)
    print(f"Preparing {args.model} (converted once; not timed)...", flush=True)
    policy, location = register_policy(workspace, args.model)
    started = time.perf_counter()
    model, tokenizer = load_policy(location, resolve_device(args.device))
    bare_load_seconds = time.perf_counter() - started
    settings = request_from_config(workspace, 1, policy, None)
    warm_up(model, tokenizer, "The movie was")
    ours_runs: list[Run] = []
    bare_runs: list[Run] = []
    for repeat in range(1, args.repeats + 1):
        ours, texts = run_ours(workspace, policy)
        gc.collect()
        ours_runs.append(ours)
        print(
            f"run {repeat}: ours {ours.samples} samples in {ours.end_to_end_seconds:.1f} s "
            f"({ours.load_seconds:.1f} s load), {ours.samples_per_s:.3f} samples/s without load, "
            f"other load {ours.other_cores:.2f} cores",
            flush=True,
        )
        bare = run_bare(model, tokenizer, texts, settings)
        bare_runs.append(bare)
        print(
            f"run {repeat}: bare {bare.samples} samples in {bare.seconds:.1f} s, "
            f"{bare.samples_per_s:.3f} samples/s, other load {bare.other_cores:.2f} cores",
            flush=True,
        )
    figures = summarize(args, settings, ours_runs, bare_runs, bare_load_seconds, threads)
    print_report(ours_runs, bare_runs, figures)
    return figures


def main() -> int:
    args = parse_args()
    threads = configure_threads(args.threads)

    def run(folder: Path) -> dict[str, object]:
        resolve_device(args.device)  # an unusable device fails before the slow setup
        return benchmark(open_workspace(folder, args), args, threads)

    return run_benchmark(args, "bench-generate-", run)


if __name__ == "__main__":
    raise SystemExit(main())
