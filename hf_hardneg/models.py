"""The one place that knows dual-encoder families: a table of :class:`ModelFamily` specs.

Every other module asks this table instead of touching a model's attributes or
guessing from a class name: which loss a family was pretrained with, how its
texts must be padded, which processor class loads its preprocessing, how long
its texts may be, and how its logit scale is clamped. Supporting a new family is
one :class:`ModelFamily` entry in :data:`FAMILIES` (and a test); see the README's
"Extending" section.

Two version differences are handled here as well:

* transformers 5.x ``get_image_features`` / ``get_text_features`` return a
  ``BaseModelOutputWithPooling`` whose ``pooler_output`` is the projected,
  unnormalised embedding; 4.x returns that embedding as a plain tensor.
* a family whose class a transformers release lacks (``Siglip2Model`` before
  4.49) is skipped, not an import error.

Models wrapped for training (DDP, ``torch.compile``, DeepSpeed, FSDP, PEFT) are
unwrapped with accelerate's own ``extract_model_from_parallel`` (plus PEFT's base
model) for attribute access; see :func:`encode_batch` for why training under DDP
must go through ``forward``.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import nn

__all__ = [
    "FAMILIES",
    "ModelFamily",
    "SUPPORTED_MODEL_CLASSES",
    "check_local_model_path",
    "encode_batch",
    "encode_images",
    "encode_texts",
    "family_of",
    "logit_parameters",
    "logit_scale_and_bias",
    "max_text_length",
    "scale_from_logit_parameter",
    "text_padding_for",
    "unwrap_model",
    "uses_sigmoid_loss",
]

#: The largest temperature-inverse a softmax (CLIP-style) model may use, as in CLIP's training.
MAX_LOGIT_SCALE = 100.0
# tokenizers without a configured limit report a huge sentinel (transformers' VERY_LARGE_INTEGER, 1e30)
_NO_LIMIT = 1_000_000


@dataclass(frozen=True)
class ModelFamily:
    """What hf_hardneg needs to know about one family of dual encoders.

    Args:
        model_class: the ``transformers`` class, e.g. ``"CLIPModel"``.
        model_type: its ``config.model_type``, e.g. ``"clip"`` (how a saved config names the family).
        processor_class: the class a reader loads the preprocessing with (in model cards).
        loss: ``"softmax"`` (CLIP's InfoNCE) or ``"sigmoid"`` (SigLIP's pairwise loss), the
            objective the family was pretrained with and is continued with.
        text_padding: ``"longest"`` (dynamic) or ``"max_length"``: SigLIP's text tower pools the
            last position, so it was trained, and must be fed, with every text padded to full length.
        max_logit_scale: clamp of ``exp(logit_scale)`` during training (CLIP: 100); ``None`` for
            families trained without one (released SigLIP checkpoints sit above 100).
        default_max_text_length: the text length when neither the tokenizer nor the config says.
        text_tower, vision_tower, projections: parameter-name prefixes of each tower (with its
            projection) and of the projections alone, for the freezing presets of
            :mod:`hf_hardneg.parameter_efficient`; a tower's first prefix is the module LoRA adapts.
    """

    model_class: str
    model_type: str
    processor_class: str
    loss: Literal["softmax", "sigmoid"] = "softmax"
    text_padding: Literal["longest", "max_length"] = "longest"
    max_logit_scale: float | None = MAX_LOGIT_SCALE
    default_max_text_length: int = 77
    text_tower: tuple[str, ...] = ("text_model.", "text_projection.")
    vision_tower: tuple[str, ...] = ("vision_model.", "visual_projection.")
    projections: tuple[str, ...] = ("text_projection.", "visual_projection.")

    @property
    def uses_sigmoid_loss(self) -> bool:
        return self.loss == "sigmoid"

    @property
    def pads_to_max_length(self) -> bool:
        return self.text_padding == "max_length"


_SIGLIP_TOWERS = dict(text_tower=("text_model.",), vision_tower=("vision_model.",),
                      projections=("text_model.head.", "vision_model.head."))

#: Model class name -> its family. Add a family by adding an entry (and a test).
FAMILIES: dict[str, ModelFamily] = {
    family.model_class: family
    for family in (
        ModelFamily("CLIPModel", "clip", "CLIPProcessor"),
        ModelFamily("VisionTextDualEncoderModel", "vision-text-dual-encoder", "VisionTextDualEncoderProcessor",
                    default_max_text_length=512),
        # SigLIP's towers end in their own heads (a linear layer; attention pooling on the vision side)
        ModelFamily("SiglipModel", "siglip", "SiglipProcessor", loss="sigmoid", text_padding="max_length",
                    max_logit_scale=None, default_max_text_length=64, **_SIGLIP_TOWERS),
        ModelFamily("Siglip2Model", "siglip2", "Siglip2Processor", loss="sigmoid", text_padding="max_length",
                    max_logit_scale=None, default_max_text_length=64, **_SIGLIP_TOWERS),
        # CLIP with a Chinese BERT text tower: CLIP's loss and pooling, a longer text limit
        ModelFamily("ChineseCLIPModel", "chinese_clip", "ChineseCLIPProcessor", default_max_text_length=512),
    )
}

#: Supported class names -> whether they train with the sigmoid loss (derived from :data:`FAMILIES`).
SUPPORTED_MODEL_CLASSES: dict[str, bool] = {name: f.uses_sigmoid_loss for name, f in FAMILIES.items()}


def _supported_classes() -> dict[type, ModelFamily]:
    """The families whose class this transformers version has, keyed by that class."""
    transformers = importlib.import_module("transformers")
    found = {}
    for name, family in FAMILIES.items():
        try:
            cls = getattr(transformers, name)
        except (AttributeError, ImportError):  # e.g. Siglip2Model before transformers 4.49
            continue
        found[cls] = family
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
    """The transformers model inside DDP / DataParallel / DeepSpeed / FSDP / torch.compile / PEFT wrappers."""
    from accelerate.utils import extract_model_from_parallel

    if not isinstance(model, nn.Module):
        return model
    seen = set()
    while id(model) not in seen:
        seen.add(id(model))
        model = extract_model_from_parallel(model, keep_torch_compile=False)
        if hasattr(model, "get_base_model") and callable(model.get_base_model):  # peft.PeftModel
            model = model.get_base_model()
    return model


def family_of(model_or_class: nn.Module | str | None) -> ModelFamily:
    """The :class:`ModelFamily` of a model (wrappers looked through) or of a class name such as ``"SiglipModel"``.

    Raises a ``TypeError`` naming the supported classes for anything else.
    """
    if isinstance(model_or_class, str) or model_or_class is None:
        family = FAMILIES.get(model_or_class or "")
        if family is not None:
            return family
        name = model_or_class
    else:
        inner = unwrap_model(model_or_class)
        for cls, family in _supported_classes().items():
            if isinstance(inner, cls):
                return family
        if not isinstance(inner, nn.Module):  # a config-like object: its model_type names the family
            model_type = getattr(getattr(inner, "config", None), "model_type", None)
            family = next((f for f in FAMILIES.values() if f.model_type == model_type), None)
            if family is not None:
                return family
        name = type(inner).__name__
    raise TypeError(
        f"hf_hardneg does not support {name}; supported model classes are {', '.join(FAMILIES)} "
        "(load a checkpoint of one of them, e.g. with transformers.AutoModel.from_pretrained, "
        "not a vision-only or text-only model)."
    )


def text_padding_for(model: Any) -> str:
    """``"max_length"`` for families that pool the text at the LAST position (SigLIP), else ``"longest"``."""
    return family_of(model).text_padding


def _family(model: nn.Module) -> tuple[nn.Module, ModelFamily]:
    """``(unwrapped model, its family)``; raises the TypeError of :func:`family_of`."""
    return unwrap_model(model), family_of(model)


def max_text_length(model: nn.Module, tokenizer: Any = None) -> int:
    """The longest text the model takes: the tokenizer's limit capped by the text encoder's positions.

    Falls back to the family's usual length when neither is known.
    """
    family = family_of(model)
    config = getattr(unwrap_model(model), "config", None)
    limits = [getattr(getattr(config, "text_config", None), "max_position_embeddings", None),
              getattr(tokenizer, "model_max_length", None)]
    limits = [int(x) for x in limits if isinstance(x, int) and 0 < x < _NO_LIMIT]
    return min(limits) if limits else family.default_max_text_length


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
    return family_of(model).uses_sigmoid_loss


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
    *,
    with_logit_scale: bool = False,
    **kwargs: Any,
):
    """Image and text embeddings from ONE call of ``model(...)``; L2-normalised.

    Use this in training. DistributedDataParallel only all-reduces gradients
    when its own ``forward`` ran in that step: calling ``model.module.get_*``
    directly leaves ranks with silently diverging weights. The number of texts
    may differ from the number of images (positives plus hard negatives).
    The vectors come back normalised (that is what the models' forward returns);
    the losses normalise again, which does not change the values.

    ``with_logit_scale=True`` also returns the logit scale (``exp``'d and clamped,
    see :func:`logit_scale_and_bias`) and the bias, read DURING the forward: FSDP2
    and DeepSpeed ZeRO-3 hold a model's parameters whole only while its forward
    runs, so reading them afterwards would see a shard. Returns
    ``(image_embeds, text_embeds)`` or ``(image_embeds, text_embeds, scale, bias)``.
    """
    inner, family = _family(model)  # clear error before running a large forward
    captured: dict[str, Any] = {}
    handle = None
    if with_logit_scale:
        def read_logit_parameters(module, args, output):
            raw, bias = logit_parameters(module)
            # new tensors, not views: the parameters' storage may be freed (resharded) right after this hook
            captured["scale"] = scale_from_logit_parameter(raw, family)
            captured["bias"] = bias.clone() if bias is not None else None

        handle = inner.register_forward_hook(read_logit_parameters, prepend=True)
    try:
        out = model(pixel_values=pixel_values, input_ids=input_ids, attention_mask=attention_mask,
                    return_loss=False, **kwargs)
    finally:
        if handle is not None:
            handle.remove()
    image_embeds = getattr(out, "image_embeds", None)
    text_embeds = getattr(out, "text_embeds", None)
    if image_embeds is None or text_embeds is None:
        # return_dict=False: (logits_per_image, logits_per_text, text_embeds, image_embeds, ...)
        if isinstance(out, (tuple, list)) and len(out) >= 5:
            text_embeds, image_embeds = out[2], out[3]
        else:
            raise TypeError(f"{type(unwrap_model(model)).__name__}.forward returned no image/text embeddings")
    if with_logit_scale:
        return image_embeds, text_embeds, captured["scale"], captured["bias"]
    return image_embeds, text_embeds


def logit_scale_and_bias(model: nn.Module, max_scale: float | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Return ``(scale, bias)``: the multiplier of cosine similarities, already ``exp()``'d, and the bias.

    ``max_scale=None`` picks the family's rule (:attr:`ModelFamily.max_logit_scale`):
    softmax models are clamped at 100 as in CLIP's training (above it a
    logit-scale gradient would only blow up the softmax); sigmoid models are not
    clamped, because SigLIP was trained without a clamp and released checkpoints
    sit above 100 -- clamping them would change a pretrained model's logits before
    the first step. Pass a number to force a clamp. ``bias`` is ``None`` for models
    without one. Both keep their gradient (they are parameters being trained).
    """
    raw_scale, bias = logit_parameters(model)
    return scale_from_logit_parameter(raw_scale, family_of(model), max_scale), bias


def logit_parameters(model: nn.Module) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The parameters themselves: ``(logit_scale, logit_bias or None)``, before ``exp`` and clamping."""
    inner = unwrap_model(model)
    family_of(inner)
    bias = getattr(inner, "logit_bias", None)
    return inner.logit_scale, bias if isinstance(bias, torch.Tensor) else None


def scale_from_logit_parameter(raw: torch.Tensor, family: ModelFamily, max_scale: float | None = None) -> torch.Tensor:
    """``exp(raw)``, clamped by the family's rule (see :func:`logit_scale_and_bias`)."""
    scale = raw.exp()
    max_scale = family.max_logit_scale if max_scale is None else max_scale
    return scale if max_scale is None else scale.clamp(max=max_scale)
