"""The one place that knows dual-encoder families and transformers versions.

Everything else in hf_hardneg calls these helpers instead of touching a model's
attributes, so supporting a new family or a new transformers release is a change
in this file only. Two version differences matter:

* transformers 5.x ``get_image_features`` / ``get_text_features`` return a
  ``BaseModelOutputWithPooling`` whose ``pooler_output`` is the projected,
  unnormalised embedding; 4.x returns that embedding as a plain tensor.
* ``Siglip2Model`` exists only in recent releases, so it is looked up lazily.

Models wrapped for training (DistributedDataParallel, ``torch.compile``,
accelerate, PEFT) are unwrapped for attribute access, but see
:func:`encode_batch` for why training under DDP must go through ``forward``.
"""

from __future__ import annotations

import importlib
from typing import Any

import torch
from torch import nn

__all__ = [
    "SUPPORTED_MODEL_CLASSES",
    "check_local_model_path",
    "encode_batch",
    "encode_images",
    "encode_texts",
    "logit_scale_and_bias",
    "unwrap_model",
    "uses_sigmoid_loss",
]

#: The largest temperature-inverse a softmax (CLIP-style) model may use, as in CLIP's training.
MAX_LOGIT_SCALE = 100.0

# Class names (importable from `transformers`) and whether they train with the sigmoid loss.
SUPPORTED_MODEL_CLASSES: dict[str, bool] = {
    "CLIPModel": False,
    "VisionTextDualEncoderModel": False,
    "SiglipModel": True,
    "Siglip2Model": True,
}


def _supported_classes() -> dict[type, bool]:
    """Map the supported classes that this transformers version has to their sigmoid flag."""
    transformers = importlib.import_module("transformers")
    found = {}
    for name, sigmoid in SUPPORTED_MODEL_CLASSES.items():
        try:
            cls = getattr(transformers, name)
        except (AttributeError, ImportError):  # e.g. Siglip2Model before transformers 4.49
            continue
        found[cls] = sigmoid
    return found


def check_local_model_path(name_or_path: str, what: str = "model") -> None:
    """Raise ``FileNotFoundError`` when ``name_or_path`` can only be a local folder and is not one.

    A Hub id is ``name`` or ``namespace/name``; an absolute path, one starting with
    ``.`` or ``~``, or one with more than one separator can only be local. Without
    this check ``from_pretrained`` treats a mistyped folder as a Hub id and fails with
    "Repo id must be in the form 'repo_name' or 'namespace/repo_name'", which does not
    say that the folder is missing.
    """
    import os
    from pathlib import Path

    text = os.fspath(name_or_path)
    local_only = (os.path.isabs(text) or text.startswith((".", "~")) or text.count("/") > 1
                  or (os.sep != "/" and os.sep in text))
    path = Path(text).expanduser()
    if path.is_file():
        raise NotADirectoryError(f"{what} {text}: a file, not a folder; pass the folder that save_pretrained "
                                 "wrote (config.json, weights, tokenizer and image processor)")
    if local_only and not path.is_dir():
        raise FileNotFoundError(f"{what} {text}: no such folder (a local path, so not looked up on the Hub); "
                                "pass the folder that save_pretrained wrote, or a Hub id such as "
                                "openai/clip-vit-base-patch32")


def unwrap_model(model: nn.Module) -> nn.Module:
    """Return the transformers model inside DDP / DataParallel / torch.compile / PEFT wrappers."""
    seen = set()
    while id(model) not in seen:
        seen.add(id(model))
        if isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
            model = model.module
        elif hasattr(model, "_orig_mod") and isinstance(model._orig_mod, nn.Module):  # torch.compile
            model = model._orig_mod
        elif hasattr(model, "get_base_model") and callable(model.get_base_model):  # peft.PeftModel
            model = model.get_base_model()
        elif type(model).__name__ in {"DeepSpeedEngine", "FullyShardedDataParallel"} and hasattr(model, "module"):
            model = model.module
    return model


def _family(model: nn.Module) -> tuple[nn.Module, bool]:
    """Return ``(unwrapped_model, uses_sigmoid)`` or raise a TypeError naming what is supported."""
    inner = unwrap_model(model)
    for cls, sigmoid in _supported_classes().items():
        if isinstance(inner, cls):
            return inner, sigmoid
    supported = ", ".join(SUPPORTED_MODEL_CLASSES)
    raise TypeError(
        f"hf_hardneg does not support {type(inner).__name__}; supported model classes are {supported} "
        "(load a checkpoint of one of them, e.g. with transformers.AutoModel.from_pretrained, "
        "not a vision-only or text-only model)."
    )


def _pooled(output: Any) -> torch.Tensor:
    """Projected embedding from a feature getter: a tensor (4.x) or an output object (5.x)."""
    if isinstance(output, torch.Tensor):
        return output
    pooled = getattr(output, "pooler_output", None)
    if pooled is None and isinstance(output, (tuple, list)) and len(output) > 1:  # return_dict=False
        pooled = output[1]
    if not isinstance(pooled, torch.Tensor):
        raise TypeError(f"expected a tensor or an output with `pooler_output`, got {type(output).__name__}")
    return pooled


def uses_sigmoid_loss(model: nn.Module) -> bool:
    """True for SigLIP-family models, which are trained with the pairwise sigmoid loss."""
    return _family(model)[1]


def encode_images(model: nn.Module, pixel_values: torch.Tensor, **kwargs: Any) -> torch.Tensor:
    """Projected, unnormalised image embeddings of shape (n, d).

    Extra keyword arguments go to ``get_image_features`` (``Siglip2Model`` needs
    ``pixel_attention_mask`` and ``spatial_shapes``).
    """
    inner, _ = _family(model)
    return _pooled(inner.get_image_features(pixel_values=pixel_values, **kwargs))


def encode_texts(
    model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, **kwargs: Any
) -> torch.Tensor:
    """Projected, unnormalised text embeddings of shape (n, d)."""
    inner, _ = _family(model)
    return _pooled(inner.get_text_features(input_ids=input_ids, attention_mask=attention_mask, **kwargs))


def encode_batch(
    model: nn.Module,
    pixel_values: torch.Tensor,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None = None,
    **kwargs: Any,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Image and text embeddings from ONE call of ``model(...)``; L2-normalised.

    Use this in training. DistributedDataParallel only all-reduces gradients
    when its own ``forward`` ran in that step: calling ``model.module.get_*``
    directly leaves ranks with silently diverging weights. The number of texts
    may differ from the number of images (positives plus hard negatives).
    The vectors come back normalised (that is what the models' forward returns);
    the losses normalise again, which does not change the values.
    """
    _family(model)  # clear error before running a large forward
    out = model(pixel_values=pixel_values, input_ids=input_ids, attention_mask=attention_mask,
                return_loss=False, **kwargs)
    image_embeds = getattr(out, "image_embeds", None)
    text_embeds = getattr(out, "text_embeds", None)
    if image_embeds is None or text_embeds is None:
        # return_dict=False: (logits_per_image, logits_per_text, text_embeds, image_embeds, ...)
        if isinstance(out, (tuple, list)) and len(out) >= 5:
            text_embeds, image_embeds = out[2], out[3]
        else:
            raise TypeError(f"{type(unwrap_model(model)).__name__}.forward returned no image/text embeddings")
    return image_embeds, text_embeds


def logit_scale_and_bias(model: nn.Module, max_scale: float | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Return ``(scale, bias)``: the multiplier of cosine similarities, already ``exp()``'d, and the bias.

    ``max_scale=None`` picks the family's rule: softmax models are clamped at
    100 as in CLIP's training (above it a logit-scale gradient would only blow
    up the softmax); sigmoid models are not clamped, because SigLIP was trained
    without a clamp and released checkpoints sit above 100 -- clamping them would
    change a pretrained model's logits before the first step. Pass a number to
    force a clamp. ``bias`` is ``None`` for models without one. Both keep their
    gradient (they are parameters being trained).
    """
    inner, sigmoid = _family(model)
    scale = inner.logit_scale.exp()
    if max_scale is None and not sigmoid:
        max_scale = MAX_LOGIT_SCALE
    if max_scale is not None:
        scale = scale.clamp(max=max_scale)
    bias = getattr(inner, "logit_bias", None)
    if not isinstance(bias, torch.Tensor):
        bias = None
    return scale, bias
