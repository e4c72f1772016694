"""RewardScorer: (prompt, response) texts in, one scalar reward each out.

Everything downstream (PPO, RLOO/GRPO reward functions, evaluation) scores through
this class, with the reward model's own tokenizer: a policy and a reward model may have
different vocabularies, so text, not token ids, crosses between them.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from rlhf_train.reward.backbone import load_sequence_classifier
from rlhf_train.reward.format import RewardInputFormat, Text


class RewardScorer:
    def __init__(
        self,
        model: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        input_format: RewardInputFormat,
        batch_size: int = 32,
    ) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.input_format = input_format
        self.batch_size = batch_size

    @classmethod
    def load(cls, location: str | Path, device: str = "cpu", batch_size: int = 32) -> RewardScorer:
        model, tokenizer = load_sequence_classifier(str(location))
        model.to(device)
        model.eval()
        return cls(model, tokenizer, RewardInputFormat.load(Path(location), tokenizer), batch_size)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @torch.inference_mode()
    def score(self, prompts: Sequence[Text], responses: Sequence[Text]) -> np.ndarray:
        """Rewards as float32, in the order of the inputs."""
        if len(prompts) != len(responses):
            raise ValueError(f"{len(prompts)} prompts but {len(responses)} responses")
        ids = self.input_format.encode(self.tokenizer, prompts, responses)
        return self.score_ids(ids)

    @torch.inference_mode()
    def score_ids(self, ids: list[list[int]]) -> np.ndarray:
        """Rewards of already encoded inputs (see RewardInputFormat.encode)."""
        rewards = np.zeros(len(ids), dtype=np.float32)
        # Similar lengths share a batch, so little of the compute is spent on padding.
        order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
        was_training = self.model.training
        self.model.eval()
        for start in range(0, len(order), self.batch_size):
            chosen = order[start : start + self.batch_size]
            batch = self.tokenizer.pad(
                {"input_ids": [ids[i] for i in chosen]}, padding=True, return_tensors="pt"
            ).to(self.device)
            logits = self.model(**batch).logits[:, 0]
            rewards[chosen] = logits.float().cpu().numpy()
        self.model.train(was_training)
        return rewards
