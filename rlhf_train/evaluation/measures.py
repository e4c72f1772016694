"""Measuring a policy: what its responses score, how far it moved from a reference policy,
and whether its text degenerated on the way.

These are the primitives that `rlhf evaluate policy` and bench/optimize.py share. They are
pure functions of models, texts and a score function, with no database, so that a policy
is measured the same way wherever it is measured:

- `evaluate_policy` samples one response per prompt (seeded), scores it, and reports the
  score, the length, the diversity (distinct-1/2, repetition), and, given a reference
  policy, a Monte-Carlo estimate of KL(policy || reference) on the policy's own samples
  and the reference's perplexity of those samples.
- `sequence_logprobs` is log pi(response | prompt) with the prompt encoded exactly as
  generation encodes it (`encode_prompt`) and the batch laid out as PPO lays out its
  rollouts (left-padded prompts, right-padded responses, position ids from the mask), so
  its numbers agree with the log-probabilities PPO trains on.
- `distinct_n` and `repetition_rate` are word-level text statistics: a policy optimized
  against a reward model often buys reward with repetition, and these show it.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from rlhf_train.judges import closes_sentence
from rlhf_train.models.sampling import (
    Decoding,
    PromptInput,
    encode_prompt,
    end_token_ids,
    left_padded_positions,
    response_logprobs,
    sample_completions,
)

ScoreFunction = Callable[[list[str], list[str]], Sequence[float]]

# A response "loops" when one word trigram occurs this many times in it.
LOOP_NGRAM = 3
LOOP_COUNT = 3


# ---- text statistics --------------------------------------------------------------------


def _ngrams(words: list[str], n: int) -> list[tuple[str, ...]]:
    return [tuple(words[i : i + n]) for i in range(len(words) - n + 1)]


def distinct_n(texts: Sequence[str], n: int) -> float:
    """Unique word n-grams over all texts / all word n-grams (0.0 when there are none).

    Words are whitespace-separated tokens, compared exactly (case and punctuation kept);
    n-grams never span two texts. 1.0: no n-gram is ever repeated; near 0: every response
    says the same thing.
    """
    if n < 1:
        raise ValueError(f"n must be at least 1, not {n}")
    every = [gram for text in texts for gram in _ngrams(text.split(), n)]
    return len(set(every)) / len(every) if every else 0.0


def loops(text: str) -> bool:
    """Whether some word trigram occurs at least three times in `text`."""
    counts = Counter(_ngrams(text.split(), LOOP_NGRAM))
    return bool(counts) and max(counts.values()) >= LOOP_COUNT


def repetition_rate(texts: Sequence[str]) -> float:
    """The share of texts that loop: some word trigram occurs 3 or more times in the text.

    Chosen over a per-token measure because it answers the question a reader asks of a
    trained policy, "how many of its responses are stuck repeating themselves", and does
    not count the ordinary repeated phrases of a long, healthy response. Words as in
    `distinct_n`; an empty list gives 0.0.
    """
    return sum(loops(text) for text in texts) / len(texts) if texts else 0.0


def ends(text: str, finished: bool) -> bool:
    """Whether a response ends rather than being cut off: it produced an end token, or its
    last words close a sentence. A policy that writes less by stopping mid-sentence at
    the token limit does not end its responses; one that writes a short sentence does."""
    return finished or closes_sentence(text)


# ---- log-probabilities ------------------------------------------------------------------


@dataclass(frozen=True)
class ResponseLogprobs:
    """Per response: the summed log-probability of its tokens, their count, and the
    log-probability of stopping right after them (of producing any end token)."""

    token_sums: torch.Tensor  # [n] float64
    token_counts: torch.Tensor  # [n] int64
    stop: torch.Tensor  # [n] float64


@contextmanager
def _eval_mode(model: PreTrainedModel):
    # Dropout would make log-probabilities random; the caller's mode is restored after.
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


@torch.no_grad()
def response_token_logprobs(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[PromptInput],
    responses: Sequence[str],
    batch_size: int = 16,
    temperature: float = 1.0,
) -> ResponseLogprobs:
    """The pieces `sequence_logprobs` adds up; see there for the encoding."""
    if len(prompts) != len(responses):
        raise ValueError(f"{len(prompts)} prompts but {len(responses)} responses")
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, not {batch_size}")
    device = next(model.parameters()).device
    end_ids = torch.tensor(sorted(end_token_ids(model, tokenizer)), device=device)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    encoded = [
        (
            encode_prompt(tokenizer, prompt)[0],
            tokenizer(text, add_special_tokens=False)["input_ids"],
        )
        for prompt, text in zip(prompts, responses, strict=True)
    ]
    count = len(encoded)
    token_sums = torch.zeros(count, dtype=torch.float64)
    token_counts = torch.zeros(count, dtype=torch.int64)
    stop = torch.zeros(count, dtype=torch.float64)
    # Similar total lengths share a batch, so little compute goes to padding.
    order = sorted(range(count), key=lambda i: len(encoded[i][0]) + len(encoded[i][1]))
    with _eval_mode(model):
        for start in range(0, count, batch_size):
            chosen = order[start : start + batch_size]
            prompt_length = max(len(encoded[i][0]) for i in chosen)
            # At least one response column: the stop probability after an empty response
            # is read from the logits at the prompt's last token.
            response_length = max(1, max(len(encoded[i][1]) for i in chosen))
            ids = torch.full((len(chosen), prompt_length + response_length), pad)
            mask = torch.zeros_like(ids)
            for row, i in enumerate(chosen):
                prompt_ids, response_ids = encoded[i]
                # PPO's layout: prompts padded on the left to one length, responses on
                # the right, so response token t sits at prompt_length + t in every row.
                begin = prompt_length - len(prompt_ids)
                end = prompt_length + len(response_ids)
                ids[row, begin:end] = torch.tensor(prompt_ids + response_ids)
                mask[row, begin:end] = 1
            ids, mask = ids.to(device), mask.to(device)
            positions = left_padded_positions(mask)
            logits = model(
                input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=False
            ).logits
            per_token = response_logprobs(logits, ids, prompt_length, temperature)
            response_mask = mask[:, prompt_length:].to(per_token.dtype)
            lengths = mask[:, prompt_length:].sum(dim=1)
            # The logits at prompt_length - 1 + L predict what follows the L-th response
            # token: the end of the response, for a response that stopped there.
            after = logits[torch.arange(len(chosen), device=device), prompt_length - 1 + lengths]
            stop_logprobs = torch.logsumexp(
                F.log_softmax(after.float() / temperature, dim=-1)[:, end_ids], dim=-1
            )
            index = torch.tensor(chosen)
            token_sums[index] = (per_token * response_mask).sum(dim=1).double().cpu()
            token_counts[index] = lengths.cpu()
            stop[index] = stop_logprobs.double().cpu()
    return ResponseLogprobs(token_sums, token_counts, stop)


def sequence_logprobs(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[PromptInput],
    responses: Sequence[str],
    batch_size: int = 16,
    *,
    finished: Sequence[bool] | None = None,
    temperature: float = 1.0,
) -> torch.Tensor:
    """log pi(response | prompt) for each pair, float64, in input order.

    The prompt is encoded as generation encodes it (`encode_prompt`: the chat template
    where the prompt asks for it and the tokenizer has one); the response is tokenized on
    its own, without special tokens. Log-probabilities are those of logits / temperature,
    as PPO computes them. With `finished`, a response marked True also adds the
    log-probability of stopping after it (of any end token): a sampled response's full
    probability includes the decision to end where it ended.
    """
    parts = response_token_logprobs(model, tokenizer, prompts, responses, batch_size, temperature)
    if finished is None:
        return parts.token_sums
    if len(finished) != len(responses):
        raise ValueError(f"{len(finished)} finished flags for {len(responses)} responses")
    ended = torch.tensor([bool(flag) for flag in finished], dtype=torch.bool)
    return parts.token_sums + torch.where(ended, parts.stop, torch.zeros_like(parts.stop))


# ---- evaluation ---------------------------------------------------------------------------


@contextmanager
def _no_top_k(model: PreTrainedModel):
    """Sample from the whole distribution: transformers otherwise applies top_k=50 by
    default, and a KL estimated on truncated samples is not the policy's KL."""
    config = model.generation_config
    saved = config.top_k
    config.top_k = 0
    try:
        yield
    finally:
        config.top_k = saved


def evaluate_policy(
    policy_model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[PromptInput],
    score: ScoreFunction,
    reference_model: PreTrainedModel | None = None,
    max_new_tokens: int = 48,
    temperature: float = 1.0,
    seed: int = 0,
    batch_size: int = 16,
    sample_rows: int = 4,
) -> dict[str, Any]:
    """Sample one response per prompt from `policy_model` and measure them.

    Returns n; score_mean, score_std (population) and score_sem (the standard error of
    the mean); scores, each response's score in prompt order (for paired comparisons of
    two policies on the same prompts); response_length (mean tokens, the end token
    included, as PPO counts them); unfinished_fraction (responses cut by max_new_tokens);
    ended_share (responses that end: an end token, or a closed sentence, see `ends`) and
    ended, that flag per response;
    distinct_1, distinct_2, repetition_rate; kl, the mean over responses of
    log pi(y) - log pi_ref(y) on the policy's own samples (a Monte-Carlo estimate of
    KL(policy || reference) in nats per response, whose single terms, kl_terms, may be
    negative),
    and reference_perplexity, exp of the mean per-token negative log-likelihood of the
    responses under the reference (both None without a reference); and `samples`, the
    first `sample_rows` (prompt, response, score). Sampling is seeded as in
    `sample_completions`, with top_p=1.0 and no top-k, so the same arguments give the
    same numbers.
    """
    if not prompts:
        raise ValueError("evaluate_policy needs at least one prompt")
    decoding = Decoding(max_new_tokens, temperature, top_p=1.0, batch_size=batch_size)
    with _no_top_k(policy_model):
        completions = sample_completions(
            policy_model, tokenizer, [(prompt, 1) for prompt in prompts], decoding, seed
        )
    responses = [sampled[0] for sampled in completions]
    texts = [completion.text for completion in responses]
    prompt_texts = [prompt.text for prompt in prompts]
    scores = np.asarray(score(prompt_texts, texts), dtype=np.float64)
    if scores.shape != (len(texts),):
        raise ValueError(f"the score function returned {scores.shape} for {len(texts)} responses")
    n = len(texts)
    ending = [ends(c.text, c.finished) for c in responses]
    figures: dict[str, Any] = {
        "n": n,
        "score_mean": float(scores.mean()),
        "score_std": float(scores.std()),
        "score_sem": float(scores.std(ddof=1) / math.sqrt(n)) if n > 1 else 0.0,
        "response_length": float(np.mean([c.token_count for c in responses])),
        "unfinished_fraction": float(np.mean([not c.finished for c in responses])),
        "distinct_1": distinct_n(texts, 1),
        "distinct_2": distinct_n(texts, 2),
        "repetition_rate": repetition_rate(texts),
        "ended_share": float(np.mean(ending)),
        "ended": ending,
        "scores": [float(value) for value in scores],
        "kl": None,
        "kl_terms": None,
        "reference_perplexity": None,
    }
    if reference_model is not None:
        finished = [c.finished for c in responses]
        arguments = (tokenizer, list(prompts), texts, batch_size)
        mine = sequence_logprobs(
            policy_model, *arguments, finished=finished, temperature=temperature
        )
        theirs = response_token_logprobs(reference_model, *arguments, temperature=temperature)
        ended = torch.tensor(finished, dtype=torch.bool)
        reference_total = theirs.token_sums + torch.where(
            ended, theirs.stop, torch.zeros_like(theirs.stop)
        )
        terms = mine - reference_total
        figures["kl"] = float(terms.mean())
        figures["kl_terms"] = [float(value) for value in terms]
        tokens = int(theirs.token_counts.sum())
        figures["reference_perplexity"] = (
            math.exp(-float(theirs.token_sums.sum()) / tokens) if tokens else None
        )
    figures["samples"] = [
        {"prompt": p, "response": r, "score": round(float(s), 4)}
        for p, r, s in list(zip(prompt_texts, texts, scores, strict=True))[:sample_rows]
    ]
    return figures
