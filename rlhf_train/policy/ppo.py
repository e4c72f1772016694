"""PPO for language models, written out in one file: rollouts, a KL-penalized reward,
GAE, and the clipped policy and value losses, in plain torch on top of accelerate.

TRL 1.16 no longer ships a PPO trainer, so this is ours. It follows the published
recipe for PPO on language models (Ziegler et al. 2019, Stiennon et al. 2020, Ouyang
et al. 2022, and "The N Implementation Details of RLHF with PPO", Huang et al. 2024):

1. Rollout. Sample a response to each prompt from the current policy; the sampling pass
   itself gives pi_old's log-probabilities (and, with the shared trunk, the values), so no
   second forward pass is made. Score (prompt, response) texts with the reward function.
   A response that never produced an end token loses `missing_eos_penalty`.
2. Reward. r_t = -beta * (log pi(a_t|s_t) - log pi_ref(a_t|s_t)) for every response
   token, plus the score on the last one. beta is fixed or adapted towards a target KL.
3. Advantages. Generalized advantage estimation with (gamma, lambda) over the response
   tokens, then whitened over the batch.
4. Update. Several epochs of minibatches over the rollout: the clipped surrogate loss
   for the policy and the clipped squared error for the value function.

The value function is a linear head on the policy's last hidden state (a shared trunk):
one forward pass gives both the next-token distribution and the value, and no second
copy of the network is held. `value_model="separate"` gives the critic its own copy of
the trunk instead; README.md reports what each costs and gains.

The reference policy is the starting policy, frozen: with LoRA it is the same network
with the adapter switched off, so no second copy of the weights exists. A caller may give
another reference instead (the loop's first policy, so that the KL of many rounds is
measured from where they began); it is then held frozen beside the policy.

With LoRA in the top blocks only (`lora.layers`), the blocks below never change, so the
hidden state entering the first adapted block is read from the sampling pass and the
reference's log-probabilities and every update epoch run the adapted blocks alone
(rlhf_train/policy/frozen_blocks.py); the numbers are those of whole passes.
"""

from __future__ import annotations

import copy
import json
import math
import shutil
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from rlhf_train.atomic import write_text_atomically
from rlhf_train.config import OptimizeSettings, PpoSettings, setting_field
from rlhf_train.models.sampling import (
    PromptInput,
    encode_prompt,
    end_token_ids,
    left_padded_positions,
    token_logprobs,
)
from rlhf_train.policy.frozen_blocks import FrozenBlocks, frozen_blocks
from rlhf_train.runs.trainer_args import checkpoint_folders

ScoreFunction = Callable[[list[str], list[str]], torch.Tensor]


def _from_setting(key: str, zero_means_none: bool = False) -> Any:
    """A PPOConfig field whose default is the workspace setting `key` ("ppo.gamma"), so
    PPOConfig() and a fresh rlhf.toml cannot disagree. `zero_means_none`: the setting
    writes "off" as 0, PPOConfig as None."""
    item = setting_field(key)
    if item is None:
        raise KeyError(f"PPOConfig names {key!r}, which is not a setting")
    default = (item.default or None) if zero_means_none else item.default
    return field(default=default, metadata={"setting": key, "zero_means_none": zero_means_none})


@dataclass(frozen=True)
class PPOConfig:
    """Every field is a workspace setting of [optimize] or [ppo] (named in its metadata),
    whose default and help live in rlhf_train/config.py; `from_settings` builds one."""

    # Rollouts: prompts per process per step, and how responses are sampled. Sampling
    # at temperature T means log-probabilities are those of logits / T, in the rollout
    # and in the update alike.
    rollout_batch_size: int = _from_setting("optimize.batch_size")
    max_new_tokens: int = _from_setting("optimize.max_new_tokens")
    temperature: float = _from_setting("optimize.temperature")
    # Update: epochs over each rollout, examples per optimizer step, and how many
    # forward/backward passes one minibatch is split into.
    ppo_epochs: int = _from_setting("ppo.ppo_epochs")
    minibatch_size: int = _from_setting("ppo.minibatch_size")
    gradient_accumulation_steps: int = _from_setting("ppo.gradient_accumulation_steps")
    learning_rate: float = _from_setting("optimize.learning_rate")
    # "linear" decays the rate to 0 at step `steps` (the run's length, set by the runner).
    lr_schedule: str = _from_setting("optimize.lr_schedule")
    steps: int = _from_setting("optimize.steps")
    max_grad_norm: float = _from_setting("ppo.max_grad_norm")
    # The PPO objective.
    gamma: float = _from_setting("ppo.gamma")
    lam: float = _from_setting("ppo.lam")
    clip_range: float = _from_setting("ppo.clip_range")
    clip_range_value: float = _from_setting("ppo.clip_range_value")
    value_coef: float = _from_setting("ppo.value_coef")
    # The value head's (and a separate critic's) rate; None: learning_rate.
    value_learning_rate: float | None = _from_setting(
        "ppo.value_learning_rate", zero_means_none=True
    )
    whiten_advantages: bool = _from_setting("ppo.whiten_advantages")
    value_model: str = _from_setting("ppo.value_model")  # "shared" or "separate"
    # KL penalty against the reference: beta, and its adaptive controller (Ziegler et
    # al.) that moves beta so the measured KL approaches target_kl over kl_horizon
    # episodes. Training stops early when the KL passes kl_limit (None: never).
    kl_coef: float = _from_setting("optimize.kl_coef")
    adaptive_kl: bool = _from_setting("ppo.adaptive_kl")
    target_kl: float = _from_setting("ppo.target_kl")
    kl_horizon: int = _from_setting("ppo.kl_horizon")
    kl_floor: bool = _from_setting("ppo.kl_floor")
    kl_limit: float | None = _from_setting("ppo.kl_limit", zero_means_none=True)
    # Scores: the penalty for a response without an end token, and optional running
    # normalization and clipping of the score before the KL term is added (None: off).
    missing_eos_penalty: float | None = _from_setting(
        "ppo.missing_eos_penalty", zero_means_none=True
    )
    normalize_rewards: bool = _from_setting("ppo.normalize_rewards")
    reward_clip: float | None = _from_setting("ppo.reward_clip", zero_means_none=True)
    seed: int = _from_setting("optimize.seed")

    @classmethod
    def from_settings(cls, optimize: OptimizeSettings, ppo: PpoSettings) -> PPOConfig:
        """The PPOConfig of a workspace's [optimize] and [ppo] sections."""
        given = {"optimize": optimize, "ppo": ppo}
        values = {}
        for item in fields(cls):
            section, _, name = item.metadata["setting"].partition(".")
            value = getattr(given[section], name)
            values[item.name] = (value or None) if item.metadata["zero_means_none"] else value
        return cls(**values)

    def check(self) -> None:
        if self.minibatch_size % self.gradient_accumulation_steps:
            raise ValueError("minibatch_size must be a multiple of gradient_accumulation_steps")
        if self.rollout_batch_size % self.minibatch_size:
            raise ValueError("rollout_batch_size must be a multiple of minibatch_size")
        if self.value_model not in ("shared", "separate"):
            raise ValueError("value_model must be 'shared' or 'separate'")
        if self.lr_schedule not in ("constant", "linear"):
            raise ValueError("lr_schedule must be 'constant' or 'linear'")


# ---- the math -----------------------------------------------------------------------


def masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return (values * mask).sum() / mask.sum().clamp(min=1)


def masked_var(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Unbiased variance of the masked entries."""
    mean = masked_mean(values, mask)
    count = mask.sum()
    squares = ((values - mean) ** 2 * mask).sum()
    return squares / (count - 1).clamp(min=1)


def masked_whiten(
    values: torch.Tensor, mask: torch.Tensor, shift_mean: bool = True
) -> torch.Tensor:
    mean, var = masked_mean(values, mask), masked_var(values, mask)
    whitened = (values - mean) * torch.rsqrt(var + 1e-8)
    if not shift_mean:
        whitened = whitened + mean
    return whitened * mask


def kl_penalized_rewards(
    scores: torch.Tensor,
    logprobs: torch.Tensor,
    ref_logprobs: torch.Tensor,
    mask: torch.Tensor,
    kl_coef: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token rewards [batch, tokens]: -kl_coef * (logp - ref_logp) on every response
    token and the sequence's score added on its last token; and the per-token KL."""
    kl = (logprobs - ref_logprobs) * mask
    rewards = -kl_coef * kl
    last = (mask.sum(dim=1).long() - 1).clamp(min=0)
    rewards[torch.arange(len(scores)), last] += scores
    return rewards * mask, kl


def generalized_advantages(
    rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float, lam: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """GAE (Schulman et al. 2016) over the response tokens; returns (advantages, returns).

    Positions after a response's end carry no reward and no value, so the last real
    token bootstraps from a value of 0: the episode ends with the response.
    """
    values = values * mask
    advantages = torch.zeros_like(rewards)
    running = torch.zeros(rewards.shape[0], dtype=rewards.dtype, device=rewards.device)
    for t in reversed(range(rewards.shape[1])):
        next_value = values[:, t + 1] if t + 1 < rewards.shape[1] else torch.zeros_like(running)
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        running = (delta + gamma * lam * running) * mask[:, t]
        advantages[:, t] = running
    return advantages, (advantages + values) * mask


def clipped_policy_loss(
    logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    clip_range: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """PPO's clipped surrogate; returns (loss, clip fraction, approximate KL old->new)."""
    log_ratio = (logprobs - old_logprobs) * mask
    ratio = torch.exp(log_ratio)
    unclipped = -advantages * ratio
    clipped = -advantages * torch.clamp(ratio, 1 - clip_range, 1 + clip_range)
    loss = masked_mean(torch.maximum(unclipped, clipped), mask)
    clip_fraction = masked_mean((clipped > unclipped).float(), mask)
    # The low-variance estimator (k3 in Schulman's note): E[(r - 1) - log r].
    approx_kl = masked_mean((ratio - 1) - log_ratio, mask)
    return loss, clip_fraction, approx_kl


def clipped_value_loss(
    values: torch.Tensor,
    old_values: torch.Tensor,
    returns: torch.Tensor,
    mask: torch.Tensor,
    clip_range: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """0.5 * max((v - R)^2, (clip(v, v_old +- eps) - R)^2); returns (loss, clip fraction)."""
    clipped_values = old_values + torch.clamp(values - old_values, -clip_range, clip_range)
    unclipped_error = (values - returns) ** 2
    clipped_error = (clipped_values - returns) ** 2
    loss = 0.5 * masked_mean(torch.maximum(unclipped_error, clipped_error), mask)
    return loss, masked_mean((clipped_error > unclipped_error).float(), mask)


def explained_variance(values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor) -> float:
    """1 - Var[R - V] / Var[R]: 1 is a perfect value function, 0 no better than a constant."""
    variance = masked_var(returns, mask)
    if variance.item() == 0:
        return float("nan")
    return (1 - masked_var(returns - values, mask) / variance).item()


def token_entropy(logits: torch.Tensor) -> torch.Tensor:
    log_probs = F.log_softmax(logits, dim=-1)
    return -(log_probs.exp() * log_probs).sum(dim=-1)


class KLController:
    """beta, fixed, or adapted with Ziegler et al.'s proportional rule: the error
    (KL / target - 1), clipped to +-0.2, scaled by episodes / horizon.

    With a floor, beta never falls below its starting value. A run begins at KL 0, so
    the plain rule lowers beta at every step until the policy moves; with a short
    horizon that is a collapse (0.04 to 0.002 in 14 steps in bench/loop.py), and
    nothing holds the KL when the policy does move. The floor turns the target into
    a budget: beta rises when the KL passes it and otherwise stays where it began."""

    def __init__(self, config: PPOConfig) -> None:
        self.value = config.kl_coef
        self.floor = config.kl_coef if config.kl_floor else 0.0
        self.adaptive = config.adaptive_kl
        self.target = config.target_kl
        self.horizon = config.kl_horizon

    def update(self, kl: float, episodes: int) -> None:
        if self.adaptive:
            error = min(max(kl / self.target - 1, -0.2), 0.2)
            self.value = max(self.value * (1 + error * episodes / self.horizon), self.floor)

    def state_dict(self) -> dict[str, float]:
        return {"value": self.value}

    def load_state_dict(self, state: dict[str, float]) -> None:
        self.value = state["value"]


class RunningMoments:
    """Mean and standard deviation of every score seen so far (Chan et al.'s update)."""

    def __init__(self) -> None:
        self.count, self.mean, self.m2 = 0, 0.0, 0.0

    def update(self, values: torch.Tensor) -> None:
        count = values.numel()
        mean, var = values.mean().item(), values.var(unbiased=False).item()
        delta, total = mean - self.mean, self.count + count
        self.m2 += var * count + delta**2 * self.count * count / total
        self.mean += delta * count / total
        self.count = total

    @property
    def std(self) -> float:
        return math.sqrt(self.m2 / self.count) if self.count > 1 else 1.0

    def state_dict(self) -> dict[str, float]:
        return {"count": self.count, "mean": self.mean, "m2": self.m2}

    def load_state_dict(self, state: dict[str, float]) -> None:
        self.count, self.mean, self.m2 = int(state["count"]), state["mean"], state["m2"]


# ---- the networks -------------------------------------------------------------------


class PolicyAndValue(nn.Module):
    """The policy and a scalar value head, on the policy's trunk or on a copy of it."""

    def __init__(self, policy: PreTrainedModel, value_model: str) -> None:
        super().__init__()
        self.policy = policy
        hidden = policy.config.get_text_config().hidden_size
        # The critic's own trunk starts as a copy of the policy's (without the LM head).
        self.critic = copy.deepcopy(_trunk(policy)) if value_model == "separate" else None
        if self.critic is not None:
            self.critic.requires_grad_(True)
        # Set by PPOTrainer where the policy's lowest blocks have no adapter.
        self.frozen: FrozenBlocks | None = None
        self.value_head = nn.Linear(hidden, 1)
        # A zero head predicts 0 everywhere: the value loss starts small and does not
        # shake the shared trunk in the first updates.
        nn.init.zeros_(self.value_head.weight)
        nn.init.zeros_(self.value_head.bias)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        position_ids: torch.Tensor,
        prompt_length: int,
        boundary: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits [batch, response, vocab] and values [batch, response] at the positions
        that predict each response token (prompt_length - 1 up to the next-to-last).
        `boundary`: the hidden states entering the first adapted block (FrozenBlocks)."""
        output = response_pass(
            self.policy,
            input_ids,
            attention_mask,
            position_ids,
            prompt_length,
            boundary=boundary,
            frozen=self.frozen,
            hidden_states=self.critic is None,
        )
        if self.critic is None:
            hidden = output.hidden_states[-1][:, prompt_length - 1 :]
            return output.logits, self.value(hidden)
        values = self.critic_values(input_ids, attention_mask, position_ids, prompt_length)
        return output.logits, values

    def parameter_groups(self, value_learning_rate: float | None) -> list[dict[str, Any]]:
        """The trainable parameters for the optimizer: one group, or with a value learning
        rate of its own a second group (marked "value") for the value head and a separate
        critic's trunk. One group otherwise, so that a checkpoint of an earlier run resumes."""
        trainable = [p for p in self.parameters() if p.requires_grad]
        if value_learning_rate is None:
            return [{"params": trainable}]
        critic = [] if self.critic is None else list(self.critic.parameters())
        value = {id(p) for p in [*self.value_head.parameters(), *critic]}
        return [
            {"params": [p for p in trainable if id(p) not in value]},
            {"params": [p for p in trainable if id(p) in value], "value": True},
        ]

    def value(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.value_head(hidden.to(self.value_head.weight.dtype)).squeeze(-1)

    def critic_values(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        position_ids: torch.Tensor,
        prompt_length: int,
    ) -> torch.Tensor:
        """Values [batch, response] from the separate critic's own trunk."""
        hidden = self.critic(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            use_cache=False,
        ).last_hidden_state
        return self.value(hidden[:, prompt_length - 1 : -1])


def response_pass(
    model: nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    position_ids: torch.Tensor,
    prompt_length: int,
    boundary: torch.Tensor | None = None,
    frozen: FrozenBlocks | None = None,
    hidden_states: bool = False,
) -> Any:
    """`model`'s output whose logits are exactly those that predict the response tokens
    ([batch, response, vocab]). The last token predicts nothing, so it is not fed; the
    LM head runs on the response's positions only. With `boundary` (the hidden states
    entering the first adapted block, one column fewer than `input_ids`; it needs
    `frozen`), only the adapted blocks run."""
    inputs = {"input_ids": input_ids[:, :-1]} if boundary is None else {"inputs_embeds": boundary}
    blocks = nullcontext() if boundary is None else frozen.adapted_only()
    with blocks:
        return model(
            **inputs,
            attention_mask=attention_mask[:, :-1],
            position_ids=position_ids[:, :-1],
            output_hidden_states=hidden_states,
            use_cache=False,
            logits_to_keep=input_ids.shape[1] - prompt_length,
        )


def _trunk(policy: PreTrainedModel) -> nn.Module:
    model = policy.get_base_model() if hasattr(policy, "get_base_model") else policy
    return model.base_model


def _adamw(parameters: list[dict[str, Any]], learning_rate: float) -> torch.optim.AdamW:
    """AdamW with the fused kernel where the device has one: one pass over all parameters
    instead of a loop over tensors, about 5x faster per step for 135M parameters on a CPU
    (transformers' Trainer, and so TRL's trainers, use it too)."""
    try:
        return torch.optim.AdamW(parameters, lr=learning_rate, eps=1e-5, fused=True)
    except RuntimeError:
        return torch.optim.AdamW(parameters, lr=learning_rate, eps=1e-5)


def _disable_dropout(model: nn.Module) -> None:
    # Dropout would make the rollout's log-probabilities differ from the update's for
    # the same weights; PPO's ratio must be exactly 1 before the first step.
    for module in model.modules():
        if isinstance(module, nn.Dropout):
            module.p = 0.0


# ---- rollouts -----------------------------------------------------------------------


@dataclass
class Rollout:
    query_responses: torch.Tensor  # [batch, prompt + response] token ids
    attention_mask: torch.Tensor
    position_ids: torch.Tensor
    prompt_length: int  # prompts are left-padded to this length
    response_mask: torch.Tensor  # [batch, response]: 1 up to and including the end token
    logprobs: torch.Tensor
    ref_logprobs: torch.Tensor
    values: torch.Tensor
    scores: torch.Tensor  # from the reward function, before the penalties
    finished: torch.Tensor  # bool: the response produced an end token
    prompts: list[str]
    responses: list[str]
    # [batch, prompt + response - 1, hidden]: what enters the first adapted block, where
    # the blocks below it have no adapter (FrozenBlocks); else None.
    boundary: torch.Tensor | None = None

    def __len__(self) -> int:
        return self.query_responses.shape[0]


class PhaseClock:
    """Seconds spent in each phase of a step (generate, score, reference, ...), so the run
    log and bench/optimize.py can say where a step's time goes."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextmanager
    def __call__(self, phase: str) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            # CUDA runs asynchronously: without a sync the time lands in a later phase.
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            self.seconds[phase] = self.seconds.get(phase, 0.0) + time.perf_counter() - started


@dataclass
class Minibatch:
    """Some episodes of a rollout, trimmed to the columns that hold any of their tokens."""

    query_responses: torch.Tensor
    attention_mask: torch.Tensor
    position_ids: torch.Tensor
    prompt_length: int
    response_mask: torch.Tensor  # [batch, longest response of these episodes]
    boundary: torch.Tensor | None = None  # the rollout's, on the same columns but the last


class PPOTrainer:
    """Runs PPO steps; knows nothing of workspaces or databases (see rlhf_train.policy.optimize)."""

    def __init__(
        self,
        config: PPOConfig,
        policy: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        score: ScoreFunction,
        prompts: Sequence[PromptInput],
        accelerator: Any | None = None,
        reference: PreTrainedModel | None = None,
    ) -> None:
        from accelerate import Accelerator

        config.check()
        self.config = config
        self.tokenizer = tokenizer
        self.score = score
        self.prompts = list(prompts)
        self.accelerator = accelerator or Accelerator(
            cpu=not torch.cuda.is_available(),
            gradient_accumulation_steps=config.gradient_accumulation_steps,
        )
        self.lora = hasattr(policy, "disable_adapter")
        _disable_dropout(policy)
        # Without LoRA the reference is a frozen copy of the starting weights.
        if reference is None and not self.lora:
            reference = copy.deepcopy(policy)
        self.reference = None if reference is None else reference.eval().requires_grad_(False)
        model = PolicyAndValue(policy, config.value_model)
        # Below the lowest adapted block nothing ever changes: computed once per rollout.
        self.frozen = frozen_blocks(policy) if self.lora else None
        model.frozen = self.frozen
        optimizer = _adamw(model.parameter_groups(config.value_learning_rate), config.learning_rate)
        self.model, self.optimizer = self.accelerator.prepare(model, optimizer)
        if self.reference is not None:
            self.reference.to(self.accelerator.device)
        self.kl = KLController(config)
        self.score_moments = RunningMoments()
        self.accelerator.register_for_checkpointing(self.kl, self.score_moments)
        self.end_ids = sorted(end_token_ids(policy, tokenizer))
        self.step_count = 0
        self.episodes = 0
        self.clock = PhaseClock()

    @property
    def policy(self) -> PreTrainedModel:
        return self.accelerator.unwrap_model(self.model).policy

    # -- one step ---------------------------------------------------------------------

    def _prompt_batch(self) -> list[PromptInput]:
        """This process's prompts for the current step: a seeded draw without replacement
        within each step, disjoint between processes."""
        world, rank = self.accelerator.num_processes, self.accelerator.process_index
        size = self.config.rollout_batch_size
        generator = torch.Generator().manual_seed(self.config.seed * 1_000_003 + self.step_count)
        count = size * world
        order = torch.cat(
            [
                torch.randperm(len(self.prompts), generator=generator)
                for _ in range(math.ceil(count / len(self.prompts)))
            ]
        )[:count]
        return [self.prompts[i] for i in order[rank * size : (rank + 1) * size].tolist()]

    @contextmanager
    def _reference_policy(self) -> Iterator[nn.Module]:
        if self.reference is not None:
            yield self.reference
        else:
            with self.policy.disable_adapter():
                yield self.policy

    @torch.no_grad()
    def rollout(self, batch: list[PromptInput]) -> Rollout:
        config, tokenizer, device = self.config, self.tokenizer, self.accelerator.device
        unwrapped = self.accelerator.unwrap_model(self.model)
        encoded = [encode_prompt(tokenizer, prompt)[0] for prompt in batch]
        tokenizer.padding_side = "left"
        padded = tokenizer.pad({"input_ids": encoded}, return_tensors="pt").to(device)
        prompt_length = padded["input_ids"].shape[1]
        generator_seed = config.seed * 7919 + self.step_count * 131 + self.accelerator.process_index
        torch.manual_seed(generator_seed)
        with self.clock("generate"):
            output = unwrapped.policy.generate(
                **padded,
                do_sample=True,
                temperature=config.temperature,
                top_k=0,
                top_p=1.0,
                max_new_tokens=config.max_new_tokens,
                pad_token_id=tokenizer.pad_token_id,
                eos_token_id=self.end_ids,
                return_dict_in_generate=True,
                output_logits=True,
                output_hidden_states=unwrapped.critic is None or self.frozen is not None,
            )
        responses = output.sequences[:, prompt_length:]
        is_end = torch.isin(responses, torch.tensor(self.end_ids, device=device))
        finished = is_end.any(dim=1)
        # Tokens up to and including the first end token belong to the response.
        after_end = (is_end.cumsum(dim=1) - is_end.long()) > 0
        response_mask = (~after_end).long()
        responses = torch.where(after_end, tokenizer.pad_token_id, responses)
        query_responses = torch.cat([padded["input_ids"], responses], dim=1)
        attention_mask = torch.cat([padded["attention_mask"], response_mask], dim=1)
        position_ids = left_padded_positions(attention_mask)

        with self.clock("old_logprobs_values"):
            # The sampling pass already ran the policy on exactly these tokens: its raw
            # logits (before temperature) give pi_old, and with the shared trunk its last
            # hidden states give the values, so no second forward pass is needed. Tokens
            # after a response's end differ (pad here, anything there) but are masked.
            logprobs = token_logprobs(
                torch.stack(output.logits, dim=1), responses, config.temperature
            )
            # Step 0 holds the whole prompt; each later step one new position.
            boundary = None
            if self.frozen is not None:
                first = self.frozen.first_adapted
                boundary = torch.cat([step[first] for step in output.hidden_states], dim=1)
            if unwrapped.critic is None:
                last = [step[-1][:, -1:] for step in output.hidden_states]
                values = unwrapped.value(torch.cat(last, dim=1)).float()
            else:
                values = unwrapped.critic_values(
                    query_responses, attention_mask, position_ids, prompt_length
                ).float()
            del output
        with self.clock("reference"), self._reference_policy() as reference:
            # The adapter-free policy shares the frozen blocks; a separate reference does not.
            shared = boundary if self.reference is None else None
            ref_logits = response_pass(
                reference,
                query_responses,
                attention_mask,
                position_ids,
                prompt_length,
                boundary=shared,
                frozen=self.frozen,
            ).logits
            ref_logprobs = token_logprobs(ref_logits, responses, config.temperature)
        # The reward model reads the response text without its end token.
        texts = [
            tokenizer.decode(tokens[keep], skip_special_tokens=True)
            for tokens, keep in zip(responses, response_mask.bool() & ~is_end, strict=True)
        ]
        prompts = [prompt.text for prompt in batch]
        with self.clock("score"):
            scores = self.score(prompts, texts).to(device=device, dtype=torch.float32)
        return Rollout(
            query_responses,
            attention_mask,
            position_ids,
            prompt_length,
            response_mask.float(),
            logprobs,
            ref_logprobs,
            values,
            scores,
            finished,
            prompts,
            texts,
            boundary,
        )

    def _shaped_scores(self, rollout: Rollout) -> torch.Tensor:
        config = self.config
        scores = rollout.scores.clone()
        if config.normalize_rewards:
            self.score_moments.update(self.accelerator.gather(scores))
            scores = (scores - self.score_moments.mean) / max(self.score_moments.std, 1e-6)
        if config.reward_clip is not None:
            scores = scores.clamp(-config.reward_clip, config.reward_clip)
        if config.missing_eos_penalty is not None:
            scores = torch.where(rollout.finished, scores, scores - config.missing_eos_penalty)
        return scores

    def step(self) -> dict[str, Any]:
        """One rollout and its PPO update; returns the step's statistics."""
        started = time.perf_counter()
        config = self.config
        self.clock = PhaseClock()
        self.model.eval()
        rollout = self.rollout(self._prompt_batch())
        mask = rollout.response_mask
        scores = self._shaped_scores(rollout)
        rewards, kl = kl_penalized_rewards(
            scores, rollout.logprobs, rollout.ref_logprobs, mask, self.kl.value
        )
        advantages, returns = generalized_advantages(
            rewards, rollout.values, mask, config.gamma, config.lam
        )
        if config.whiten_advantages:
            advantages = masked_whiten(advantages, mask)

        self.model.train()
        self._set_learning_rate()
        update = self._update(rollout, advantages, returns)
        mean_kl = self.accelerator.gather(kl.sum(dim=1)).mean().item()
        episodes = len(rollout) * self.accelerator.num_processes
        self.kl.update(mean_kl, episodes)
        self.step_count += 1
        self.episodes += episodes
        gathered_scores = self.accelerator.gather(rollout.scores)
        lengths = self.accelerator.gather(mask.sum(dim=1))
        stats = {
            "step": self.step_count,
            "episodes": self.episodes,
            "score_mean": gathered_scores.mean().item(),
            "score_std": gathered_scores.std().item() if len(gathered_scores) > 1 else 0.0,
            "reward_mean": self.accelerator.gather(rewards.sum(dim=1)).mean().item(),
            "kl": mean_kl,
            "kl_coef": self.kl.value,
            "response_length": lengths.float().mean().item(),
            "unfinished_fraction": 1
            - self.accelerator.gather(rollout.finished.float()).mean().item(),
            "explained_variance": explained_variance(rollout.values, returns, mask),
            **update,
            "seconds": time.perf_counter() - started,
            "phase_seconds": dict(self.clock.seconds),
        }
        stats["samples"] = [
            {"prompt": p, "response": r, "score": round(s, 4)}
            for p, r, s in zip(
                rollout.prompts, rollout.responses, rollout.scores.tolist(), strict=True
            )
        ]
        return stats

    def _set_learning_rate(self) -> None:
        # A function of the step count alone, so a resumed run continues the same schedule.
        config = self.config
        schedule = 1.0
        if config.lr_schedule == "linear":
            schedule = max(0.0, 1 - self.step_count / config.steps)
        for group in self.optimizer.param_groups:
            base = config.value_learning_rate if group.get("value") else config.learning_rate
            group["lr"] = base * schedule

    def _update(
        self, rollout: Rollout, advantages: torch.Tensor, returns: torch.Tensor
    ) -> dict[str, float]:
        config = self.config
        micro = config.minibatch_size // config.gradient_accumulation_steps
        totals: dict[str, float] = {}
        passes = 0
        generator = torch.Generator().manual_seed(config.seed + 17 * self.step_count)
        for epoch in range(config.ppo_epochs):
            order = torch.randperm(len(rollout), generator=generator).tolist()
            with self.clock(f"update_epoch_{epoch + 1}"):
                self._epoch(rollout, advantages, returns, order, micro, totals)
            passes += len(range(0, len(order), micro))
        return {key: value / passes for key, value in totals.items() if key != "loss"} | {
            "loss": totals["loss"] / passes
        }

    def _epoch(
        self,
        rollout: Rollout,
        advantages: torch.Tensor,
        returns: torch.Tensor,
        order: list[int],
        micro: int,
        totals: dict[str, float],
    ) -> None:
        """One pass over the rollout in minibatches of `micro` episodes; adds each
        minibatch's losses to `totals`."""
        config = self.config
        for start in range(0, len(order), micro):
            index = torch.tensor(order[start : start + micro], device=rollout.scores.device)
            with self.accelerator.accumulate(self.model):
                losses = self._losses(rollout, advantages, returns, index)
                self.accelerator.backward(losses["loss"])
                if self.accelerator.sync_gradients:
                    self.accelerator.clip_grad_norm_(self.model.parameters(), config.max_grad_norm)
                self.optimizer.step()
                self.optimizer.zero_grad()
            for key, value in losses.items():
                totals[key] = totals.get(key, 0.0) + value.item()

    def minibatch(self, rollout: Rollout, index: torch.Tensor) -> Minibatch:
        """Episodes `index` of the rollout, without the columns that are padding in every
        one of them: the prompts' common left padding and the positions after the longest
        response. Dropping them changes no log-probability or value (padding is masked
        out of attention, positions come from the mask); it only saves the work."""
        attention = rollout.attention_mask[index]
        mask = rollout.response_mask[index]
        p = rollout.prompt_length
        # Left padding: column p - 1 holds every prompt's last token, so one is found.
        first = int((attention[:, :p].sum(dim=0) > 0).nonzero()[0])
        longest = max(int(mask.sum(dim=1).max()), 1)
        columns = slice(first, p + longest)
        return Minibatch(
            query_responses=rollout.query_responses[index, columns],
            attention_mask=attention[:, columns],
            position_ids=rollout.position_ids[index, columns],
            prompt_length=p - first,
            response_mask=mask[:, :longest],
            boundary=None
            if rollout.boundary is None
            else rollout.boundary[index, first : p + longest - 1],
        )

    def minibatch_forward(
        self, batch: Minibatch
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The current policy's logits, log-probabilities and values of a minibatch's
        response tokens, each [batch, response(, vocab)]."""
        logits, values = self.model(
            batch.query_responses,
            batch.attention_mask,
            batch.position_ids,
            batch.prompt_length,
            batch.boundary,
        )
        tokens = batch.query_responses[:, batch.prompt_length :]
        return logits, token_logprobs(logits, tokens, self.config.temperature), values.float()

    def _losses(
        self,
        rollout: Rollout,
        advantages: torch.Tensor,
        returns: torch.Tensor,
        index: torch.Tensor,
    ) -> dict[str, torch.Tensor]:
        config = self.config
        batch = self.minibatch(rollout, index)
        mask, width = batch.response_mask, batch.response_mask.shape[1]
        logits, logprobs, values = self.minibatch_forward(batch)
        policy_loss, clip_fraction, approx_kl = clipped_policy_loss(
            logprobs,
            rollout.logprobs[index, :width],
            advantages[index, :width],
            mask,
            config.clip_range,
        )
        value_loss, value_clip_fraction = clipped_value_loss(
            values,
            rollout.values[index, :width],
            returns[index, :width],
            mask,
            config.clip_range_value,
        )
        with torch.no_grad():
            entropy = masked_mean(token_entropy(logits.float()), mask)
        return {
            "loss": policy_loss + config.value_coef * value_loss,
            "policy_loss": policy_loss.detach(),
            "value_loss": value_loss.detach(),
            "clip_fraction": clip_fraction,
            "value_clip_fraction": value_clip_fraction,
            "approx_kl": approx_kl.detach(),
            "entropy": entropy,
        }

    # -- checkpoints ------------------------------------------------------------------

    def save_checkpoint(self, folder: str) -> None:
        """Weights, optimizer, RNG, beta and score statistics: everything a resume needs."""
        self.accelerator.save_state(folder)
        if self.accelerator.is_main_process:
            # The progress file marks the checkpoint complete, so it is written last and
            # whole (renamed into place); only then are older checkpoints, and any a killed
            # run left half-written, removed.
            marker = Path(folder) / "ppo_progress.json"
            write_text_atomically(
                marker, json.dumps({"step": self.step_count, "episodes": self.episodes})
            )
            for _, older in checkpoint_folders(Path(folder).parent):
                if older != Path(folder):
                    shutil.rmtree(older, ignore_errors=True)
        self.accelerator.wait_for_everyone()

    def load_checkpoint(self, folder: str) -> None:
        self.accelerator.load_state(folder)
        progress = json.loads((Path(folder) / "ppo_progress.json").read_text())
        self.step_count, self.episodes = progress["step"], progress["episodes"]
