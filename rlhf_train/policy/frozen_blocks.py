"""The transformer blocks below a LoRA adapter's lowest block never change in PPO.

With adapters only in the top blocks (`lora.layers`), every block underneath computes the
same thing with the adapter on or off and before or after any update: the hidden state
entering the lowest adapted block is a constant of the rollout. The sampling pass
already computes it, so the reference's log-probabilities and every update epoch can
start from it and run the adapted blocks alone, and the backward pass stops there too.

That is only exact where the model's forward from `inputs_embeds` is nothing but its
blocks, its final norm and its head. Some architectures add to the embeddings first
(GPT-2's position embeddings, Gemma's scaling), so `frozen_blocks` checks it on the model
itself, once, and returns None where it does not hold: PPO then runs whole passes.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn

from rlhf_train.models.sampling import left_padded_positions

# A full pass and a pass from the boundary run the same kernels on the same numbers.
_SAME = 1e-5


@dataclass
class FrozenBlocks:
    """The module holding the block list, its attribute name, and the first adapted block."""

    owner: nn.Module
    attribute: str
    first_adapted: int

    @contextmanager
    def adapted_only(self) -> Iterator[None]:
        """The model runs its adapted blocks alone while this is open: feed it the hidden
        state entering block `first_adapted` as `inputs_embeds`."""
        every = getattr(self.owner, self.attribute)
        setattr(self.owner, self.attribute, nn.ModuleList(list(every)[self.first_adapted :]))
        try:
            yield
        finally:
            setattr(self.owner, self.attribute, every)


def _block_list(model: nn.Module, count: int) -> tuple[nn.Module, str] | None:
    for owner in model.modules():
        for attribute, child in owner.named_children():
            if isinstance(child, nn.ModuleList) and len(child) == count:
                return owner, attribute
    return None


def _first_adapted(blocks: nn.ModuleList) -> int | None:
    from peft.tuners.lora import LoraLayer

    for index, block in enumerate(blocks):
        if any(isinstance(module, LoraLayer) for module in block.modules()):
            return index
    return None


def frozen_blocks(policy: nn.Module) -> FrozenBlocks | None:
    """The frozen blocks of a peft LoRA `policy`, or None when there are none (adapters
    from the first block on) or the shortcut would not reproduce a full pass."""
    if not hasattr(policy, "disable_adapter"):
        return None
    count = policy.config.get_text_config().num_hidden_layers
    found = _block_list(policy, count)
    if found is None:
        return None
    owner, attribute = found
    first = _first_adapted(getattr(owner, attribute))
    if not first:
        return None
    blocks = FrozenBlocks(owner, attribute, first)
    return blocks if _reproduces_a_full_pass(policy, blocks) else None


@torch.no_grad()
def _reproduces_a_full_pass(policy: nn.Module, blocks: FrozenBlocks) -> bool:
    device = next(policy.parameters()).device
    vocabulary = policy.config.get_text_config().vocab_size
    generator = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, vocabulary, (2, 7), generator=generator).to(device)
    mask = torch.ones_like(tokens)
    mask[0, :2] = 0  # left padding, as in a rollout
    positions = left_padded_positions(mask)
    was_training = policy.training
    policy.eval()
    try:
        full = policy(
            input_ids=tokens,
            attention_mask=mask,
            position_ids=positions,
            output_hidden_states=True,
            use_cache=False,
        )
        with blocks.adapted_only():
            upper = policy(
                inputs_embeds=full.hidden_states[blocks.first_adapted],
                attention_mask=mask,
                position_ids=positions,
                use_cache=False,
            )
    finally:
        policy.train(was_training)
    real = mask.bool()
    return torch.allclose(full.logits[real], upper.logits[real], atol=_SAME, rtol=0)
