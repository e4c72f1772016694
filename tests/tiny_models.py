"""Tiny causal LMs built in the test run: a byte-level BPE tokenizer trained on a few
sentences and a two-layer Llama, saved as ordinary Hugging Face folders."""

from __future__ import annotations

from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import (
    LlamaConfig,
    LlamaForCausalLM,
    LlamaForSequenceClassification,
    PreTrainedTokenizerFast,
)

CORPUS = [
    "This movie was great and the acting was wonderful.",
    "The film was terrible, boring and far too long.",
    "I loved the story, the music and the actors.",
    "What a waste of time; the plot made no sense.",
    "A charming, funny and warm film for the whole family.",
] * 20

CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{{ message['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def build_tokenizer(chat_template: bool = True) -> PreTrainedTokenizerFast:
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300,
        special_tokens=["<|im_end|>", "<|im_start|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tokenizer.train_from_iterator(CORPUS, trainer)
    wrapped = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, eos_token="<|im_end|>", bos_token="<|im_start|>"
    )
    if chat_template:
        wrapped.chat_template = CHAT_TEMPLATE
    return wrapped


# Two layers of width 32: every tiny model of the tests, Llama or BERT, trains in
# milliseconds per step.
TINY_SIZES = {
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
}


def tiny_llama_config(tokenizer: PreTrainedTokenizerFast, **extra: object) -> LlamaConfig:
    """Two layers, hidden size 32: a Llama that trains in milliseconds per step."""
    return LlamaConfig(
        vocab_size=len(tokenizer),
        **TINY_SIZES,
        num_key_value_heads=2,
        max_position_embeddings=256,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=tokenizer.bos_token_id,
        pad_token_id=tokenizer.eos_token_id,
        **extra,
    )


def build_tiny_reward_model(
    seed: int = 0,
) -> tuple[LlamaForSequenceClassification, PreTrainedTokenizerFast]:
    """A randomly initialised two-layer Llama with a scalar head, and its tokenizer."""
    tokenizer = build_tokenizer()
    tokenizer.pad_token = tokenizer.eos_token
    torch.manual_seed(seed)
    return LlamaForSequenceClassification(tiny_llama_config(tokenizer, num_labels=1)), tokenizer


def build_tiny_policy(folder: Path, seed: int = 0, chat_template: bool = True) -> Path:
    """A randomly initialised two-layer Llama with its tokenizer, saved in `folder`."""
    tokenizer = build_tokenizer(chat_template)
    torch.manual_seed(seed)
    model = LlamaForCausalLM(tiny_llama_config(tokenizer, tie_word_embeddings=True))
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def build_tiny_reward_backbone(folder: Path, seed: int = 0) -> Path:
    """A randomly initialised two-layer Llama with a scalar head, saved in `folder`."""
    model, tokenizer = build_tiny_reward_model(seed)
    model.config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def build_tiny_bert_backbone(folder: Path, seed: int = 0, head_bias: float = 0.0) -> Path:
    """A two-layer BERT with a scalar head and a WordPiece tokenizer with [CLS]/[SEP], saved
    in `folder`: the shape of the packaged MiniLM, small enough for a unit test.

    `head_bias` offsets every reward, which pairwise training alone never removes."""
    from tokenizers import normalizers, processors
    from transformers import BertConfig, BertForSequenceClassification

    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    raw = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    raw.normalizer = normalizers.BertNormalizer(lowercase=True)
    raw.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    raw.decoder = decoders.WordPiece()
    raw.train_from_iterator(
        CORPUS, trainers.WordPieceTrainer(vocab_size=200, special_tokens=specials)
    )
    cls, sep = raw.token_to_id("[CLS]"), raw.token_to_id("[SEP]")
    raw.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls), ("[SEP]", sep)],
    )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=raw,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
    )
    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=len(tokenizer),
        **TINY_SIZES,
        max_position_embeddings=128,
        num_labels=1,
        pad_token_id=tokenizer.pad_token_id,
    )
    model = BertForSequenceClassification(config)
    with torch.no_grad():
        model.classifier.bias.fill_(head_bias)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder
