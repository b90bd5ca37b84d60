"""Tiny, offline dual encoders for tests, notebooks and the demo.

Nothing here downloads: the tokenizer is trained on the captions you pass with
`tokenizers`, and the model is built from a small config with random weights.
Everything is saved with `save_pretrained`, so the same `from_pretrained`
loading code that serves Hub checkpoints is exercised.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable, Literal

import torch

SPECIAL_TOKENS = ("<pad>", "<unk>", "<|startoftext|>", "<|endoftext|>")
PAD_ID, UNK_ID, BOS_ID, EOS_ID = 0, 1, 2, 3


def build_word_tokenizer(texts: Iterable[str], max_length: int = 32, min_frequency: int = 1):
    """Train a lower-cased word-level tokenizer on `texts`.

    Special ids are pad=0, unk=1, bos=2, eos=3. The end-of-text id is not 2 on
    purpose: CLIP's text model treats ``eos_token_id == 2`` as the legacy
    "pool at the largest token id" rule.
    """
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel(unk_token="<unk>"))
    tok.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase()])
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    trainer = trainers.WordLevelTrainer(special_tokens=list(SPECIAL_TOKENS), min_frequency=min_frequency)
    tok.train_from_iterator(list(texts), trainer=trainer)
    tok.post_processor = processors.TemplateProcessing(
        single="<|startoftext|> $A <|endoftext|>",
        special_tokens=[("<|startoftext|>", BOS_ID), ("<|endoftext|>", EOS_ID)],
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        model_max_length=max_length,
        pad_token="<pad>",
        unk_token="<unk>",
        bos_token="<|startoftext|>",
        eos_token="<|endoftext|>",
    )


def make_tiny_model(
    texts: Iterable[str],
    output_dir: str | Path | None = None,
    kind: Literal["clip", "siglip", "dual_encoder"] = "clip",
    image_size: int = 32,
    patch_size: int = 8,
    hidden_size: int = 32,
    num_layers: int = 2,
    projection_dim: int = 16,
    max_length: int = 32,
    seed: int = 0,
):
    """Return ``(model, tokenizer, image_processor)`` for a tiny randomly initialised dual encoder.

    ``kind`` picks the architecture: ``CLIPModel``, ``SiglipModel`` or a
    ``VisionTextDualEncoderModel`` (ViT + BERT). With ``output_dir`` all three
    are saved there with ``save_pretrained`` (safetensors).
    """
    from transformers import CLIPImageProcessor

    torch.manual_seed(seed)
    tokenizer = build_word_tokenizer(texts, max_length=max_length)
    vocab = len(tokenizer)
    heads = max(1, hidden_size // 16)
    vision = dict(hidden_size=hidden_size, intermediate_size=2 * hidden_size, num_hidden_layers=num_layers,
                  num_attention_heads=heads, image_size=image_size, patch_size=patch_size)
    text = dict(vocab_size=vocab, hidden_size=hidden_size, intermediate_size=2 * hidden_size,
                num_hidden_layers=num_layers, num_attention_heads=heads, max_position_embeddings=max_length)
    size = {"shortest_edge": image_size}
    crop = {"height": image_size, "width": image_size}
    if kind == "clip":
        from transformers import CLIPConfig, CLIPModel

        config = CLIPConfig(
            text_config=dict(text, pad_token_id=PAD_ID, bos_token_id=BOS_ID, eos_token_id=EOS_ID),
            vision_config=vision,
            projection_dim=projection_dim,
        )
        model = CLIPModel(config)
        image_processor = CLIPImageProcessor(size=size, crop_size=crop)
    elif kind == "siglip":
        from transformers import SiglipConfig, SiglipModel

        config = SiglipConfig(
            text_config=dict(text, pad_token_id=PAD_ID, bos_token_id=BOS_ID, eos_token_id=EOS_ID,
                             projection_size=hidden_size),
            vision_config=vision,
        )
        model = SiglipModel(config)
        image_processor = CLIPImageProcessor(size=size, crop_size=crop, do_center_crop=True)
    elif kind == "dual_encoder":
        from transformers import BertConfig, ViTConfig, VisionTextDualEncoderConfig, VisionTextDualEncoderModel

        config = VisionTextDualEncoderConfig.from_vision_text_configs(
            ViTConfig(**vision),
            BertConfig(**text, pad_token_id=PAD_ID),
            projection_dim=projection_dim,
        )
        model = VisionTextDualEncoderModel(config)
        image_processor = CLIPImageProcessor(size=size, crop_size=crop)
    else:
        raise ValueError(f"unknown kind {kind!r}; use 'clip', 'siglip' or 'dual_encoder'")
    if output_dir is not None:
        output_dir = Path(output_dir)
        model.save_pretrained(output_dir, safe_serialization=True)
        tokenizer.save_pretrained(output_dir)
        image_processor.save_pretrained(output_dir)
    return model, tokenizer, image_processor
