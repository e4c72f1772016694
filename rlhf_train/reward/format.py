"""How a (prompt, response) pair becomes reward-model input, in training and in scoring.

There is one encoding per reward model, recorded in its folder, so the scores PPO and
evaluation see are computed on exactly the inputs the model was trained on:

- "pair": encoder models with separator tokens (BERT, MiniLM) read the prompt and the
  response as a text pair, `tokenizer(prompt, response, truncation=True)`;
- "concat": decoder models read `prompt + response` as one text, truncated on the left
  so that the end of the response, where the score is read, is always kept.

Plain transformers reproduces either with the saved tokenizer and the max_length in
prefloop_reward.json.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from transformers import PreTrainedTokenizerBase

FORMAT_FILE = "prefloop_reward.json"
Text = str | list[dict[str, str]]


def infer_style(tokenizer: PreTrainedTokenizerBase) -> str:
    return (
        "pair" if tokenizer.sep_token is not None and tokenizer.cls_token is not None else "concat"
    )


def _plain(value: Text) -> str:
    if isinstance(value, str):
        return value
    return "\n".join(message["content"] for message in value)


@dataclass(frozen=True)
class RewardInputFormat:
    style: str  # "pair" or "concat"
    max_length: int

    def prepare(self, tokenizer: PreTrainedTokenizerBase) -> None:
        """Set the tokenizer's truncation side for this format (saved with the tokenizer)."""
        side = "right" if self.style == "pair" else "left"
        tokenizer.truncation_side = side
        # The trainer's collator passes no token type ids, so the model never sees them;
        # a plain tokenizer call must not produce them either. save_pretrained writes
        # init_kwargs, not the attributes.
        inputs = ["input_ids", "attention_mask"]
        tokenizer.model_input_names = inputs
        tokenizer.init_kwargs.update(truncation_side=side, model_input_names=inputs)

    def _concat_text(self, tokenizer: PreTrainedTokenizerBase, prompt: Text, response: Text) -> str:
        if isinstance(prompt, list) and isinstance(response, list) and tokenizer.chat_template:
            return tokenizer.apply_chat_template(prompt + response, tokenize=False)
        return _plain(prompt) + _plain(response)

    def encode(
        self,
        tokenizer: PreTrainedTokenizerBase,
        prompts: Sequence[Text],
        responses: Sequence[Text],
    ) -> list[list[int]]:
        """Token ids of each (prompt, response), at most max_length long."""
        self.prepare(tokenizer)
        if self.style == "pair":
            encoded = tokenizer(
                [_plain(p) for p in prompts],
                [_plain(r) for r in responses],
                truncation=True,
                max_length=self.max_length,
            )
        else:
            texts = [
                self._concat_text(tokenizer, p, r) for p, r in zip(prompts, responses, strict=True)
            ]
            encoded = tokenizer(texts, truncation=True, max_length=self.max_length)
        return encoded["input_ids"]

    def save(self, folder: Path) -> None:
        (folder / FORMAT_FILE).write_text(
            json.dumps(asdict(self), indent=2) + "\n", encoding="utf-8"
        )

    @classmethod
    def load(cls, folder: Path, tokenizer: PreTrainedTokenizerBase) -> RewardInputFormat:
        """The format recorded in `folder`, or for a model we did not train, the one that
        fits its tokenizer."""
        path = folder / FORMAT_FILE
        if path.is_file():
            recorded: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
            return cls(style=recorded["style"], max_length=int(recorded["max_length"]))
        limit = tokenizer.model_max_length if tokenizer.model_max_length < 100_000 else 512
        return cls(style=infer_style(tokenizer), max_length=min(limit, 512))
