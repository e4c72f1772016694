"""LoRA adapters: settings from the workspace config, checked against the model they are
for, so a target module that the architecture does not have is a clear error rather
than peft's stack trace."""

from __future__ import annotations

from torch import nn

from rlhf_train.config import LoraSettings
from rlhf_train.errors import UserError


def _linear_leaf_names(model: nn.Module) -> list[str]:
    names = set()
    for name, module in model.named_modules():
        # GPT-2 style models use transformers' Conv1D for their projections.
        if isinstance(module, nn.Linear) or type(module).__name__ == "Conv1D":
            names.add(name.rsplit(".", 1)[-1])
    return sorted(names)


def lora_target_modules(model: nn.Module, setting: str) -> list[str] | str | None:
    """What peft's `target_modules` gets for `setting` (None lets peft pick by architecture)."""
    text = setting.strip()
    if text == "auto":
        from peft.utils.constants import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING

        model_type = getattr(getattr(model, "config", None), "model_type", None)
        return (
            None
            if model_type in TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING
            else ("all-linear")
        )
    if text == "all-linear":
        return text
    wanted = [name.strip() for name in text.split(",") if name.strip()]
    available = _linear_leaf_names(model)
    missing = [name for name in wanted if name not in available]
    if missing:
        model_type = getattr(getattr(model, "config", None), "model_type", "this")
        raise UserError(
            f"LoRA target module {', '.join(repr(m) for m in missing)} is not in the "
            f"{model_type} model (its linear layers are: {', '.join(available)}); set "
            "lora.target_modules to some of those, all-linear or auto."
        )
    return wanted


def lora_config(model: nn.Module, settings: LoraSettings, task_type: str):
    """A peft LoraConfig for `model`; task_type is "CAUSAL_LM" or "SEQ_CLS"."""
    from peft import LoraConfig

    return LoraConfig(
        r=settings.rank,
        lora_alpha=settings.alpha,
        lora_dropout=settings.dropout,
        target_modules=lora_target_modules(model, settings.target_modules),
        layers_to_transform=_top_blocks(model, settings.layers),
        task_type=task_type,
    )


def _top_blocks(model: nn.Module, layers: int) -> list[int] | None:
    """The indices of the top `layers` transformer blocks (None: every block)."""
    if not layers:
        return None
    config = getattr(model, "config", None)
    count = getattr(config.get_text_config(), "num_hidden_layers", None) if config else None
    if count is None:
        raise UserError(
            "lora.layers needs a model whose config names its number of blocks "
            "(num_hidden_layers); set lora.layers = 0 for adapters in every block."
        )
    if layers > count:
        raise UserError(
            f"lora.layers is {layers} but the model has {count} transformer blocks; set it "
            f"to at most {count}, or 0 for every block."
        )
    return list(range(count - layers, count))


def is_adapter_folder(location: str) -> bool:
    from pathlib import Path

    folder = Path(location)
    return (folder / "adapter_config.json").is_file() and not (folder / "config.json").is_file()
