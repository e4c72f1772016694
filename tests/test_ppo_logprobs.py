"""The shortcuts in PPO's rollout and update never change its objective.

The rollout takes pi_old's log-probabilities (and, with the shared trunk, the values)
from the sampling pass itself, and each minibatch drops the columns that are padding in
all of its episodes. Both are exact only if they agree with a plain forward pass over the
whole sequence; these tests hold them to it (1e-5), for the shared trunk, the separate
critic, LoRA in every block and LoRA in the top block only (where the frozen block below
is computed once per rollout), on prompts of different lengths and responses that end at different
places."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from rlhf_train.models.loading import load_policy
from rlhf_train.models.sampling import PromptInput, response_logprobs
from rlhf_train.policy.ppo import PPOConfig, PPOTrainer

# Prompts of 1 to 12 words, so the batch is left-padded and minibatches trim differently.
PROMPTS = [
    PromptInput(" ".join(["the film was"] * (1 + i % 4))[: 4 + 9 * i], False) for i in range(16)
]
TOLERANCE = 1e-5


def _score(_prompts: list[str], responses: list[str]) -> torch.Tensor:
    return torch.tensor([len(set(r)) / 10 for r in responses])


def _trainer(folder: Path, value_model: str = "shared", lora: str = "") -> PPOTrainer:
    """lora: "" none, "every" adapters in every block, "top" in the top block only."""
    torch.set_num_threads(1)
    policy, tokenizer = load_policy(str(folder))
    # Many end tokens, so that the random policy's responses end at different lengths.
    ends = [tokenizer.eos_token_id, *range(40, 70)]
    policy.generation_config.eos_token_id = ends
    if lora:
        from peft import LoraConfig, get_peft_model

        top = [policy.config.num_hidden_layers - 1] if lora == "top" else None
        adapter = LoraConfig(r=4, lora_alpha=8, task_type="CAUSAL_LM", layers_to_transform=top)
        policy = get_peft_model(policy, adapter)
    config = PPOConfig(
        rollout_batch_size=16,
        minibatch_size=4,
        max_new_tokens=12,
        # Not 1: log-probabilities are those of logits / temperature everywhere.
        temperature=0.7,
        learning_rate=3e-3,
        value_model=value_model,
        missing_eos_penalty=None,
    )
    return PPOTrainer(config, policy, tokenizer, _score, PROMPTS)


def _fresh(trainer: PPOTrainer, rollout) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-probabilities and values from one plain forward pass over whole sequences,
    through the policy and the critic as a user of transformers would call them."""
    model = trainer.accelerator.unwrap_model(trainer.model)
    p = rollout.prompt_length
    with torch.no_grad():
        output = model.policy(
            input_ids=rollout.query_responses,
            attention_mask=rollout.attention_mask,
            position_ids=rollout.position_ids,
            output_hidden_states=True,
        )
        logprobs = response_logprobs(
            output.logits, rollout.query_responses, p, trainer.config.temperature
        )
        if model.critic is None:
            hidden = output.hidden_states[-1]
        else:
            hidden = model.critic(
                input_ids=rollout.query_responses,
                attention_mask=rollout.attention_mask,
                position_ids=rollout.position_ids,
            ).last_hidden_state
        values = model.value_head(hidden).squeeze(-1)[:, p - 1 : -1]
    return logprobs, values


@pytest.mark.parametrize(
    ("value_model", "lora"),
    [("shared", ""), ("separate", ""), ("shared", "every"), ("shared", "top"), ("separate", "top")],
)
def test_the_update_uses_the_log_probabilities_of_a_fresh_forward_pass(
    tiny_policy, value_model, lora
) -> None:
    trainer = _trainer(tiny_policy, value_model, lora)
    # The shortcut is taken exactly where the lowest block has no adapter.
    assert (trainer.frozen is not None) == (lora == "top")
    for _ in range(2):  # trained a little: a zero value head or an identity adapter hide errors
        trainer.step()
    rollout = trainer.rollout(PROMPTS)
    mask = rollout.response_mask.bool()
    lengths = rollout.response_mask.sum(dim=1)
    assert lengths.min() < lengths.max()  # responses end at different places
    assert (rollout.attention_mask[:, 0] == 0).any()  # and prompts are left-padded

    logprobs, values = _fresh(trainer, rollout)
    assert values[mask].abs().max() > 1e-3
    if lora:
        with trainer.policy.disable_adapter():
            reference, _ = _fresh(trainer, rollout)
        assert (reference[mask] - logprobs[mask]).abs().max() > 1e-3  # the adapter has moved
        assert torch.allclose(rollout.ref_logprobs[mask], reference[mask], atol=TOLERANCE)
    assert torch.allclose(rollout.logprobs[mask], logprobs[mask], atol=TOLERANCE)
    assert torch.allclose(rollout.values[mask], values[mask], atol=TOLERANCE)

    # Each trimmed minibatch: the same numbers on the same tokens.
    for start in range(0, len(rollout), 4):
        index = torch.arange(start, start + 4)
        batch = trainer.minibatch(rollout, index)
        assert batch.query_responses.shape[1] <= rollout.query_responses.shape[1]
        with torch.no_grad():
            _logits, trimmed_logprobs, trimmed_values = trainer.minibatch_forward(batch)
        width = batch.response_mask.shape[1]
        kept = mask[index, :width]
        assert torch.equal(kept, batch.response_mask.bool())
        assert mask[index, width:].sum() == 0  # nothing real was cut off
        assert torch.allclose(trimmed_logprobs[kept], logprobs[index, :width][kept], atol=TOLERANCE)
        assert torch.allclose(trimmed_values[kept], values[index, :width][kept], atol=TOLERANCE)


def test_some_minibatch_is_trimmed(tiny_policy) -> None:
    """The trimming is not a no-op on such a batch (else the test above proves little)."""
    trainer = _trainer(tiny_policy)
    rollout = trainer.rollout(PROMPTS)
    widths = [
        trainer.minibatch(rollout, torch.arange(start, start + 4)).query_responses.shape[1]
        for start in range(0, len(rollout), 4)
    ]
    assert min(widths) < rollout.query_responses.shape[1]


def test_the_first_minibatch_starts_at_ratio_one(tiny_policy) -> None:
    """Before any update the policy is pi_old: PPO's ratio is 1 on every token."""
    trainer = _trainer(tiny_policy)
    rollout = trainer.rollout(PROMPTS)
    batch = trainer.minibatch(rollout, torch.arange(4))
    with torch.no_grad():
        _logits, logprobs, _values = trainer.minibatch_forward(batch)
    width = batch.response_mask.shape[1]
    ratio = torch.exp(logprobs - rollout.logprobs[:4, :width])[batch.response_mask.bool()]
    assert torch.allclose(ratio, torch.ones_like(ratio), atol=TOLERANCE)
