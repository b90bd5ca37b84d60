"""Tiny random CLIPSeg and Stable-Diffusion-inpainting checkpoints, built locally, for tests and dry runs.

The real checkpoints cannot be downloaded in tests or CI; these have the same classes and
folder layout (``save_pretrained``, safetensors), so the very loading code that serves
``CIDAS/clipseg-rd64-refined`` and ``stabilityai/stable-diffusion-2-inpainting`` is run.
Their outputs are noise of the right shapes: they exercise the tool, not the quality.
"""

from __future__ import annotations

from pathlib import Path

import torch

__all__ = ["make_tiny_clip_tokenizer", "make_tiny_clipseg", "make_tiny_inpaint_pipeline"]


def make_tiny_clip_tokenizer(max_length: int = 16):
    """A CLIP byte-level BPE tokenizer with no merges: every character is a token (514 ids)."""
    from tokenizers import pre_tokenizers
    from transformers import CLIPTokenizer

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for suffix in ("", "</w>"):
        for char in alphabet:
            vocab[char + suffix] = len(vocab)
    return CLIPTokenizer(vocab=vocab, merges=[], model_max_length=max_length)


def _tiny_text_config(vocab_size: int, hidden_size: int, max_length: int) -> dict:
    return dict(
        vocab_size=vocab_size, hidden_size=hidden_size, intermediate_size=2 * hidden_size, num_hidden_layers=2,
        num_attention_heads=2, max_position_embeddings=max_length, bos_token_id=0, eos_token_id=1, pad_token_id=1,
    )


def make_tiny_clipseg(output_dir: str | Path, image_size: int = 32, seed: int = 0) -> Path:
    """Save a random ``CLIPSegForImageSegmentation`` and its ``CLIPSegProcessor`` to ``output_dir``."""
    from transformers import CLIPSegConfig, CLIPSegForImageSegmentation, CLIPSegProcessor, ViTImageProcessor

    torch.manual_seed(seed)
    tokenizer = make_tiny_clip_tokenizer()
    config = CLIPSegConfig(
        text_config=_tiny_text_config(len(tokenizer), 32, tokenizer.model_max_length),
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                           image_size=image_size, patch_size=8),
        projection_dim=16, extract_layers=[0, 1], reduce_dim=16, decoder_num_attention_heads=2,
        decoder_intermediate_size=32,
    )
    model = CLIPSegForImageSegmentation(config)
    # CLIPSeg's processor: a ViT image processor at the model's square size, with ImageNet statistics
    image_processor = ViTImageProcessor(size={"height": image_size, "width": image_size},
                                        image_mean=[0.485, 0.456, 0.406], image_std=[0.229, 0.224, 0.225])
    output_dir = Path(output_dir)
    model.save_pretrained(output_dir, safe_serialization=True)
    CLIPSegProcessor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(output_dir)
    return output_dir


def make_tiny_inpaint_pipeline(output_dir: str | Path, seed: int = 0) -> Path:
    """Save a random ``StableDiffusionInpaintPipeline`` (9-channel UNet, like SD 2 Inpainting) to ``output_dir``."""
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionInpaintPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(seed)
    tokenizer = make_tiny_clip_tokenizer()
    unet = UNet2DConditionModel(
        sample_size=16, in_channels=9, out_channels=4,  # 4 noisy latents + 4 masked-image latents + 1 mask
        block_out_channels=(8, 16), layers_per_block=1, norm_num_groups=4, attention_head_dim=2,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=16,
    )
    vae = AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(8, 16), norm_num_groups=4,
        down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2, sample_size=32,
    )
    text_encoder = CLIPTextModel(CLIPTextConfig(**_tiny_text_config(len(tokenizer), 16, tokenizer.model_max_length)))
    scheduler = DDIMScheduler(beta_schedule="scaled_linear", clip_sample=False, set_alpha_to_one=False, steps_offset=1)
    pipeline = StableDiffusionInpaintPipeline(
        vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet, scheduler=scheduler,
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )
    output_dir = Path(output_dir)
    pipeline.save_pretrained(output_dir, safe_serialization=True)
    return output_dir
