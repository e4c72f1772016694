"""Batched sampling from a causal LM: left padding, optional chat template, seeded."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from db.conversations import Message, plain_text_prompt
from db.text import storable


@dataclass(frozen=True)
class Decoding:
    max_new_tokens: int
    temperature: float
    top_p: float
    batch_size: int

    def as_record(self, chat_template: bool) -> dict[str, object]:
        """What a sample stores about how it was made."""
        return {
            "temperature": self.temperature,
            "top_p": self.top_p,
            "max_new_tokens": self.max_new_tokens,
            "batch_size": self.batch_size,
            "chat_template": chat_template,
        }


@dataclass(frozen=True)
class PromptInput:
    text: str
    chat: bool  # wrap in the chat template when the tokenizer has one
    # A conversation's turns (db/conversations.py), or None for a plain prompt; `text` is
    # then the conversation's readable rendering.
    messages: list[Message] | None = None


@dataclass(frozen=True)
class Completion:
    text: str
    token_count: int
    finished: bool  # ended with the end-of-sequence token, not by the length limit
    seed: int
    chat_template: bool


def encode_prompt(
    tokenizer: PreTrainedTokenizerBase, prompt: PromptInput
) -> tuple[list[int], bool]:
    """Token ids of the prompt and whether the chat template was applied.

    A conversation goes through the template whole, with the assistant's turn opened
    (add_generation_prompt). A policy without a chat template gets a conversation as its
    plain-text rendering ending with an open "Assistant:" line (plain_text_prompt), and
    a plain chat prompt as its bare text.
    """
    if prompt.chat and tokenizer.chat_template:
        messages = prompt.messages or [{"role": "user", "content": prompt.text}]
        rendered = tokenizer.apply_chat_template(
            messages, add_generation_prompt=True, tokenize=False
        )
        return tokenizer(rendered, add_special_tokens=False)["input_ids"], True
    if prompt.messages:
        return tokenizer(plain_text_prompt(prompt.messages))["input_ids"], False
    return tokenizer(prompt.text)["input_ids"], False


def end_token_ids(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> set[int]:
    """Every token id that ends a response: the generation config's and the tokenizer's."""
    configured = model.generation_config.eos_token_id
    ids = set(configured if isinstance(configured, list) else [configured])
    ids.add(tokenizer.eos_token_id)
    ids.discard(None)
    return ids


@torch.no_grad()
def sample_completions(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    requests: list[tuple[PromptInput, int]],
    decoding: Decoding,
    seed: int,
    on_batch: Callable[[int], None] | None = None,
) -> list[list[Completion]]:
    """For each (prompt, count), `count` sampled completions, in request order.

    Sequences are sorted by prompt length before batching so that a batch holds
    prompts of similar length and little padding. Batch i is sampled with seed
    `seed + i`, which each completion records.
    """
    encoded = [encode_prompt(tokenizer, prompt) for prompt, _count in requests]
    jobs = [(index, copy) for index, (_p, count) in enumerate(requests) for copy in range(count)]
    jobs.sort(key=lambda job: len(encoded[job[0]][0]))
    results: list[list[Completion | None]] = [[None] * count for _p, count in requests]
    end_ids = end_token_ids(model, tokenizer)
    device = next(model.parameters()).device
    for batch_number, start in enumerate(range(0, len(jobs), decoding.batch_size)):
        batch = jobs[start : start + decoding.batch_size]
        padded = tokenizer.pad(
            {"input_ids": [encoded[index][0] for index, _copy in batch]}, return_tensors="pt"
        ).to(device)
        batch_seed = seed + batch_number
        torch.manual_seed(batch_seed)
        output = model.generate(
            **padded,
            do_sample=True,
            temperature=decoding.temperature,
            top_p=decoding.top_p,
            max_new_tokens=decoding.max_new_tokens,
            pad_token_id=tokenizer.pad_token_id,
        )
        new_tokens = output[:, padded["input_ids"].shape[1] :].tolist()
        for (index, copy), tokens in zip(batch, new_tokens, strict=True):
            end = next((i for i, token in enumerate(tokens) if token in end_ids), None)
            kept = tokens if end is None else tokens[:end]
            results[index][copy] = Completion(
                text=storable(tokenizer.decode(kept, skip_special_tokens=True)),
                token_count=len(kept) + (0 if end is None else 1),
                finished=end is not None,
                seed=batch_seed,
                chat_template=encoded[index][1],
            )
        if on_batch is not None:
            on_batch(len(batch))
    return results  # type: ignore[return-value]


def token_logprobs(logits: torch.Tensor, tokens: torch.Tensor, temperature: float) -> torch.Tensor:
    """log pi(token | its context) under logits / temperature; logits [batch, n, vocab]
    are the ones that predict tokens [batch, n]."""
    log_probs = torch.log_softmax(logits.float() / temperature, dim=-1)
    return torch.gather(log_probs, 2, tokens.unsqueeze(-1)).squeeze(-1)


def left_padded_positions(attention_mask: torch.Tensor) -> torch.Tensor:
    """Position ids of left-padded rows: the first real token is position 0, as in
    generate()."""
    return (attention_mask.cumsum(dim=-1) - 1).clamp(min=0)


def response_logprobs(
    logits: torch.Tensor, query_responses: torch.Tensor, prompt_length: int, temperature: float
) -> torch.Tensor:
    """log pi(a_t | s_t) of each response token, under logits / temperature, from the
    logits of the whole sequence."""
    # Logits at position i predict token i + 1.
    return token_logprobs(
        logits[:, prompt_length - 1 : -1], query_responses[:, prompt_length:], temperature
    )
