"""LoRA in the top blocks only: the blocks below are computed once, and only where that
reproduces a whole pass (tests/test_ppo_logprobs.py holds PPO's numbers to it)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from peft import LoraConfig, get_peft_model
from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

from rlhf_train.config import LoraSettings
from rlhf_train.errors import UserError
from rlhf_train.models.lora import lora_config
from rlhf_train.models.sampling import left_padded_positions
from rlhf_train.policy.frozen_blocks import frozen_blocks
from rlhf_train.policy.ppo import response_pass


def _llama(blocks: int = 3) -> LlamaForCausalLM:
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=blocks,
        num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=64,
    )  # fmt: skip
    return LlamaForCausalLM(config)


def _adapted(model, top: list[int] | None, targets: list[str] | None = None):
    adapter = LoraConfig(
        r=4, lora_alpha=8, task_type="CAUSAL_LM", layers_to_transform=top, target_modules=targets
    )
    adapted = get_peft_model(model, adapter)
    for name, parameter in adapted.named_parameters():
        if "lora_B" in name:  # an identity adapter would hide a wrong path
            torch.nn.init.normal_(parameter, std=0.1)
    return adapted


def _batch() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    tokens = torch.randint(0, 64, (3, 10), generator=torch.Generator().manual_seed(1))
    mask = torch.ones_like(tokens)
    mask[0, :3] = 0
    return tokens, mask, left_padded_positions(mask)


def test_adapters_in_every_block_leave_nothing_frozen() -> None:
    assert frozen_blocks(_adapted(_llama(), None)) is None
    assert frozen_blocks(_llama()) is None  # no adapter at all


def test_the_first_adapted_block_is_found() -> None:
    frozen = frozen_blocks(_adapted(_llama(4), [2, 3]))
    assert frozen is not None and frozen.first_adapted == 2
    with frozen.adapted_only():
        assert len(getattr(frozen.owner, frozen.attribute)) == 2
    assert len(getattr(frozen.owner, frozen.attribute)) == 4  # restored


def test_a_model_that_adds_to_its_embeddings_gets_whole_passes() -> None:
    """GPT-2 adds position embeddings to inputs_embeds: starting a pass from a block's
    input would add them twice, so the check on the model itself refuses the shortcut."""
    config = GPT2Config(vocab_size=64, n_embd=32, n_layer=3, n_head=4, n_positions=64)
    model = GPT2LMHeadModel(config)
    assert frozen_blocks(_adapted(model, [2], ["c_attn"])) is None


def test_the_shortcut_gives_the_gradients_of_a_whole_pass() -> None:
    """Same loss, same adapter gradients: the update optimizes the same objective."""
    policy = _adapted(_llama(3), [2])
    frozen = frozen_blocks(policy)
    assert frozen is not None
    tokens, mask, positions = _batch()
    prompt = 4

    def adapter_gradients(boundary: torch.Tensor | None) -> list[torch.Tensor]:
        policy.zero_grad()
        logits = response_pass(
            policy, tokens, mask, positions, prompt, boundary=boundary, frozen=frozen
        ).logits
        logits.log_softmax(-1).gather(-1, tokens[:, prompt:, None]).sum().backward()
        return [p.grad.clone() for n, p in policy.named_parameters() if "lora_" in n]

    with torch.no_grad():
        hidden = policy(
            input_ids=tokens[:, :-1],
            attention_mask=mask[:, :-1],
            position_ids=positions[:, :-1],
            output_hidden_states=True,
        ).hidden_states
    whole, short = adapter_gradients(None), adapter_gradients(hidden[frozen.first_adapted])
    assert len(whole) == 4 and all(g.abs().max() > 0 for g in whole)
    for a, b in zip(whole, short, strict=True):
        assert torch.allclose(a, b, atol=1e-6)


def test_lora_layers_puts_adapters_in_the_top_blocks(tmp_path: Path) -> None:
    model = _llama(4)
    config = lora_config(model, LoraSettings(layers=2), "CAUSAL_LM")
    assert config.layers_to_transform == [2, 3]
    assert lora_config(model, LoraSettings(), "CAUSAL_LM").layers_to_transform is None
    with pytest.raises(UserError, match="lora.layers is 5 but the model has 4"):
        lora_config(model, LoraSettings(layers=5), "CAUSAL_LM")
