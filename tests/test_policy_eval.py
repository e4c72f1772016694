"""rlhf_train/evaluation/measures.py: the text statistics on hand-made texts, and the
log-probabilities, KL and evaluation on the tiny policies built in the test run."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from rlhf_train.evaluation.measures import (
    distinct_n,
    evaluate_policy,
    repetition_rate,
    response_token_logprobs,
    sequence_logprobs,
)
from rlhf_train.models.loading import load_policy
from rlhf_train.models.sampling import PromptInput, encode_prompt, end_token_ids

PROMPTS = [
    PromptInput("This movie was", False),
    PromptInput("The acting was", True),
    PromptInput("I loved the story and", False),
    PromptInput("What a waste", True),
    PromptInput("A charming film", False),
    PromptInput("The plot made", False),
]
KEYS = {
    "n",
    "ended",
    "ended_share",
    "kl_terms",
    "score_mean",
    "score_std",
    "score_sem",
    "response_length",
    "unfinished_fraction",
    "distinct_1",
    "distinct_2",
    "repetition_rate",
    "scores",
    "kl",
    "reference_perplexity",
    "samples",
}


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)


def vowel_share(prompts: list[str], responses: list[str]) -> list[float]:
    return [sum(c in "aeiou" for c in r) / max(1, len(r)) for r in responses]


def test_distinct_n_counts_unique_ngrams_over_all_texts() -> None:
    texts = ["the film was great", "the film was bad"]
    assert distinct_n(texts, 1) == pytest.approx(5 / 8)
    # Bigrams: (the film) (film was) twice, (was great) (was bad) once: 4 unique of 6.
    assert distinct_n(texts, 2) == pytest.approx(4 / 6)
    # N-grams do not span texts: "great the" is not a bigram.
    assert distinct_n(["a b", "c d"], 2) == 1.0
    assert distinct_n([], 1) == 0.0
    assert distinct_n(["one", ""], 2) == 0.0
    assert distinct_n(["Great great"], 1) == 1.0  # exact comparison, case kept
    with pytest.raises(ValueError):
        distinct_n(texts, 0)


def test_repetition_rate_is_the_share_of_looping_texts() -> None:
    looping = "I loved it I loved it I loved it"
    assert repetition_rate([looping]) == 1.0
    # A trigram twice is an ordinary phrase, not a loop.
    twice = "I loved it and I loved it too"
    assert repetition_rate([twice]) == 0.0
    assert repetition_rate(["great " * 5]) == 1.0  # "great great great" three times
    assert repetition_rate([looping, twice, "short", ""]) == 0.25
    assert repetition_rate([]) == 0.0


def test_sequence_logprobs_equals_a_hand_computation(tiny_policy) -> None:
    model, tokenizer = load_policy(str(tiny_policy))
    prompt, response = PromptInput("This movie was", False), " great and wonderful"
    prompt_ids = encode_prompt(tokenizer, prompt)[0]
    response_ids = tokenizer(response, add_special_tokens=False)["input_ids"]
    ids = torch.tensor([prompt_ids + response_ids])
    with torch.no_grad():
        logits = model(input_ids=ids).logits[0]
    log_probs = F.log_softmax(logits.double(), dim=-1)
    expected = sum(
        log_probs[len(prompt_ids) + t - 1, token].item() for t, token in enumerate(response_ids)
    )
    got = sequence_logprobs(model, tokenizer, [prompt], [response], batch_size=4)
    assert got.shape == (1,)
    assert got[0].item() == pytest.approx(expected, abs=1e-4)
    # Finished: plus the probability of any end token after the last response token.
    stop = torch.logsumexp(log_probs[-1, sorted(end_token_ids(model, tokenizer))], dim=0)
    ended = sequence_logprobs(model, tokenizer, [prompt], [response], finished=[True])
    assert ended[0].item() == pytest.approx(expected + stop.item(), abs=1e-4)


def test_padding_and_batching_do_not_change_the_logprobs(tiny_policy) -> None:
    model, tokenizer = load_policy(str(tiny_policy))
    responses = [" great", " boring and far too long", "", " the music", " no sense", " warm"]
    batched = response_token_logprobs(model, tokenizer, PROMPTS, responses, batch_size=4)
    for i, (prompt, response) in enumerate(zip(PROMPTS, responses, strict=True)):
        alone = response_token_logprobs(model, tokenizer, [prompt], [response], batch_size=1)
        assert batched.token_sums[i].item() == pytest.approx(alone.token_sums[0].item(), abs=1e-4)
        assert batched.stop[i].item() == pytest.approx(alone.stop[0].item(), abs=1e-4)
        expected = len(tokenizer(response, add_special_tokens=False)["input_ids"])
        assert batched.token_counts[i].item() == expected
    assert batched.token_sums[2].item() == 0.0  # an empty response has no tokens


def test_kl_to_itself_is_zero_and_to_another_policy_positive(tiny_policy, tiny_policy_v2) -> None:
    policy, tokenizer = load_policy(str(tiny_policy))
    other, _ = load_policy(str(tiny_policy_v2))
    common = dict(max_new_tokens=8, seed=3, batch_size=4)
    itself = evaluate_policy(policy, tokenizer, PROMPTS, vowel_share, policy, **common)
    assert abs(itself["kl"]) < 1e-5
    assert max(abs(term) for term in itself["kl_terms"]) < 1e-4
    assert itself["reference_perplexity"] > 1.0
    apart = evaluate_policy(policy, tokenizer, PROMPTS, vowel_share, other, **common)
    assert apart["kl"] > 0.1
    assert sum(apart["kl_terms"]) / len(PROMPTS) == pytest.approx(apart["kl"])
    # The same samples either way: only the reference differs.
    assert apart["samples"] == itself["samples"]
    assert apart["reference_perplexity"] > itself["reference_perplexity"]


def test_evaluate_policy_is_deterministic_and_sane(tiny_policy) -> None:
    policy, tokenizer = load_policy(str(tiny_policy))
    first = evaluate_policy(policy, tokenizer, PROMPTS, vowel_share, max_new_tokens=8, seed=5)
    again = evaluate_policy(policy, tokenizer, PROMPTS, vowel_share, max_new_tokens=8, seed=5)
    other = evaluate_policy(policy, tokenizer, PROMPTS, vowel_share, max_new_tokens=8, seed=6)
    assert first == again
    assert first["samples"] != other["samples"]
    assert set(first) == KEYS
    assert first["n"] == len(PROMPTS)
    assert first["kl"] is None and first["reference_perplexity"] is None
    assert 0.0 <= first["score_mean"] <= 1.0 and first["score_std"] >= 0.0
    assert 1.0 <= first["response_length"] <= 8.0
    assert first["ended_share"] == sum(first["ended"]) / len(PROMPTS)
    assert first["kl_terms"] is None
    for key in ("unfinished_fraction", "distinct_1", "distinct_2", "repetition_rate"):
        assert 0.0 <= first[key] <= 1.0, key
    assert len(first["samples"]) == 4
    assert all(set(row) == {"prompt", "response", "score"} for row in first["samples"])
    assert first["samples"][0]["prompt"] == PROMPTS[0].text
    assert len(first["scores"]) == len(PROMPTS)
    assert first["samples"][1]["score"] == pytest.approx(first["scores"][1], abs=1e-4)
    # The default top-k of transformers is back in place after sampling without it.
    assert policy.generation_config.top_k is None
    assert math.isfinite(first["score_sem"])


def test_evaluate_policy_rejects_bad_input(tiny_policy) -> None:
    policy, tokenizer = load_policy(str(tiny_policy))
    with pytest.raises(ValueError):
        evaluate_policy(policy, tokenizer, [], vowel_share)
    with pytest.raises(ValueError):
        evaluate_policy(policy, tokenizer, PROMPTS, lambda p, r: [0.0], max_new_tokens=2)
    with pytest.raises(ValueError):
        sequence_logprobs(policy, tokenizer, PROMPTS, ["x"])
