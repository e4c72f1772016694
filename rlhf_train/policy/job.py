"""What a policy optimizer is given and gives back: the options of one run, the job
with everything resolved (policy, tokenizer, prompts, reward, export, the recorded run),
and the samples it prints along the way.

Kept apart from optimize.py (which prepares jobs and records runs) and from the
algorithms (ppo_runner.py, trl_runner.py), which import it: so no algorithm imports the
module that chooses among them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from transformers import PreTrainedModel, PreTrainedTokenizerBase

from rlhf_train.config import Config
from rlhf_train.export.reader import PreferenceExport
from rlhf_train.models.sampling import PromptInput
from rlhf_train.policy.deadline import Deadline
from rlhf_train.reward.source import RewardSource
from rlhf_train.runs.lifecycle import TrainedModel
from rlhf_train.runs.record import RunLog
from rlhf_train.workspace import Workspace

ALGORITHMS = ("ppo", "dpo", "rloo", "grpo")
# The settings sections each algorithm reads, recorded with its runs.
SECTIONS = {
    "ppo": ("optimize", "ppo", "lora"),
    "dpo": ("optimize", "dpo", "lora"),
    "rloo": ("optimize", "group", "lora"),
    "grpo": ("optimize", "group", "lora"),
}


@dataclass(frozen=True)
class OptimizeOptions:
    algorithm: str
    policy: str | None = None  # None: the current policy
    reward: str | None = None  # reward model or module:function; None: newest reward model
    data: str | None = None  # an export folder (DPO)
    prompts: str | None = None  # "workspace" (default), a prompt file, imdb, rotten_tomatoes
    chat: bool = False  # wrap prompts from a file in the chat template
    name: str | None = None  # None: ALGORITHM-RUN
    lora: bool = False
    save_adapter: bool = False  # with lora: save the adapter instead of merging it
    promote: bool = False
    max_steps: int | None = None  # overrides optimize.steps
    time_limit: float | None = None  # minutes; stop after the step that passes it
    report_to: str = "none"  # or "tensorboard"
    progress: bool = True

    def recorded(self) -> dict[str, Any]:
        values = asdict(self)
        for key in ("data", "prompts"):
            path = values[key]
            if path and Path(path).expanduser().exists():
                values[key] = str(Path(path).expanduser().resolve())
        return values


# What `rlhf train ppo|dpo|rloo|grpo` gives back: the one result type of every trainer.
OptimizeResult = TrainedModel


@dataclass
class PolicyJob:
    """Everything an algorithm needs, resolved and checked before the run is recorded."""

    options: OptimizeOptions
    config: Config
    device: str
    policy_id: int
    policy_name: str
    policy_location: str
    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    peft_config: Any  # a peft LoraConfig with --lora, else None
    # The policy the KL penalty holds the run to, where that is not the starting policy
    # itself (ppo.reference = "start" on a policy trained before): its folder or hub id.
    reference_location: str | None = None
    prompts: list[PromptInput] | None = None
    reward: RewardSource | None = None
    export: PreferenceExport | None = None
    # Set once the run is recorded:
    workspace: Workspace | None = None
    run_id: int = 0
    checkpoints: Path = field(default_factory=Path)
    resume_from: Path | None = None
    log: RunLog | None = None
    deadline: Deadline = field(default_factory=lambda: Deadline(None))

    @property
    def steps(self) -> int:
        return self.options.max_steps or self.config.optimize.steps


# An algorithm trains job.model and returns the trained model (a peft model under LoRA)
# and its metrics. Only the main process's return value is used.
Algorithm = Callable[[PolicyJob], tuple[PreTrainedModel, dict[str, Any]]]


def print_samples(step: int, samples: list[dict[str, Any]], limit: int = 4) -> None:
    """A few of the responses of a step with their scores, on the terminal."""
    print(f"-- samples at step {step} --")
    for sample in samples[:limit]:
        response = sample["response"].replace("\n", " ")
        print(f"[{sample['score']:+.3f}] {sample['prompt']!r} -> {response[:160]!r}")
