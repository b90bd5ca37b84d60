"""Train less than the whole model: freezing presets and LoRA adapters, to keep what the model knew.

Full fine-tuning moves every weight and costs zero-shot accuracy. Two cheaper ways, chosen
by :class:`~hf_hardneg.config.HardNegCLIPConfig` fields and applied by
:class:`~hf_hardneg.trainer.HardNegCLIPTrainer` before training:

* ``train_parameters``: ``"all"`` (default), ``"text"`` (the text tower and its projection;
  the image tower stays as pretrained, LiT's reverse), ``"vision"``, or ``"projections"``
  (the two projections only). The logit scale (and SigLIP's bias) trains in every preset:
  it is the loss's temperature, not a tower's knowledge.
* ``lora_towers``: ``"text"``, ``"vision"`` or ``"both"``: low-rank adapters (through
  ``peft``, ``pip install 'hf_hardneg[peft]'``) on the attention projections of those
  towers; only the adapters train. Checkpoints hold the adapters (and resume exactly); the
  final ``output_dir`` holds the merged model as a plain checkpoint any
  ``from_pretrained`` loads, with the adapters themselves in ``output_dir/adapter/``.

Which parameters a family's towers and projections are comes from the family table
(:class:`~hf_hardneg.models.ModelFamily`).
"""

from __future__ import annotations

import copy
import logging
import re
from typing import Any

import torch
from torch import nn

__all__ = [
    "ADAPTER_FOLDER",
    "DEFAULT_LORA_TARGETS",
    "LORA_TOWERS",
    "TRAIN_PARAMETER_PRESETS",
    "add_lora_adapters",
    "count_parameters",
    "freeze_for_preset",
    "is_peft_model",
    "merge_adapters",
    "prepare_trainable_parameters",
    "save_merged_model",
    "trained_parameter_summary",
]

logger = logging.getLogger(__name__)

TRAIN_PARAMETER_PRESETS = ("all", "text", "vision", "projections")
LORA_TOWERS = ("text", "vision", "both")
#: Attention projections LoRA adapts by default: CLIP/SigLIP names, and ViT/BERT names (dual encoders).
DEFAULT_LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "out_proj", "query", "key", "value")
#: Sub-folder of the final output that keeps the LoRA adapters beside the merged model.
ADAPTER_FOLDER = "adapter"
_LORA_MARK = "lora_"


def is_peft_model(model: Any) -> bool:
    """Whether ``model`` is a ``peft.PeftModel`` (without importing peft when it is not installed)."""
    return any(cls.__name__ == "PeftModel" and cls.__module__.startswith("peft") for cls in type(model).__mro__)


def _logit_names(model: nn.Module) -> set[str]:
    names = {"logit_scale", "logit_bias"}
    return {n for n, _ in model.named_parameters() if n in names}


def freeze_for_preset(model: nn.Module, preset: str) -> nn.Module:
    """Leave only the preset's parameters trainable (``"all"`` changes nothing); returns ``model``."""
    from hf_hardneg.models import family_of, unwrap_model

    if preset not in TRAIN_PARAMETER_PRESETS:
        raise ValueError(f"train_parameters must be one of {TRAIN_PARAMETER_PRESETS}, got {preset!r}")
    if preset == "all":
        return model
    inner = unwrap_model(model)
    family = family_of(inner)
    prefixes = {"text": family.text_tower, "vision": family.vision_tower, "projections": family.projections}[preset]
    logit = _logit_names(inner)
    kept = 0
    for name, parameter in inner.named_parameters():
        train = name.startswith(prefixes) or name in logit
        parameter.requires_grad_(train)
        kept += int(train and name not in logit)
    if kept == 0:
        raise ValueError(f"train_parameters={preset!r}: no parameter of this {type(inner).__name__} starts with "
                         f"{prefixes}; its family entry in hf_hardneg.models names the wrong prefixes")
    return model


def add_lora_adapters(model: nn.Module, towers: str, rank: int = 8, alpha: float = 16.0, dropout: float = 0.0,
                      target_modules: list[str] | None = None, seed: int = 0) -> nn.Module:
    """``model`` wrapped as a ``peft.PeftModel`` with LoRA adapters on the attention projections of ``towers``
    (``"text"``, ``"vision"`` or ``"both"``); only the adapters are trainable.

    The adapters' random initialisation is drawn from ``seed`` (the global random state is left as it
    was), so two runs with one seed start from the same adapters whatever ran before them.
    """
    from hf_hardneg.models import family_of

    if towers not in LORA_TOWERS:
        raise ValueError(f"lora_towers must be one of {LORA_TOWERS}, got {towers!r}")
    try:
        from peft import LoraConfig, get_peft_model
    except ImportError as err:
        raise ImportError("LoRA training needs peft: pip install 'hf_hardneg[peft]'") from err
    family = family_of(model)
    modules = {"text": [family.text_tower[0]], "vision": [family.vision_tower[0]],
               "both": [family.text_tower[0], family.vision_tower[0]]}[towers]
    leaves = list(target_modules or DEFAULT_LORA_TARGETS)
    pattern = (rf"({'|'.join(re.escape(m.rstrip('.')) for m in modules)})\..*\."
               rf"({'|'.join(re.escape(t) for t in leaves)})")
    # nn.MultiheadAttention (SigLIP's pooling head) reads its out_proj's weight without calling it: an adapter
    # there would change the merged model but never the adapted one
    inside_mha = {f"{n}.{child}" if n else child for n, m in model.named_modules()
                  if isinstance(m, nn.MultiheadAttention) for child, _ in m.named_children()}
    matched = [n for n, m in model.named_modules()
               if re.fullmatch(pattern, n) and isinstance(m, nn.Linear) and n not in inside_mha]
    if not matched:
        raise ValueError(f"lora_towers={towers!r}: no linear layer named {leaves} under {modules} in this "
                         f"{type(model).__name__}; set lora_target_modules to its attention layers' names")
    # the full names: peft matches a list entry by suffix, and a full name is its own only match
    config = LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=dropout, target_modules=matched, bias="none")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return get_peft_model(model, config)


def prepare_trainable_parameters(model: nn.Module, args: Any) -> nn.Module:
    """Apply ``args.train_parameters`` and ``args.lora_towers`` (see the module docstring); returns the model
    to train (a ``PeftModel`` with LoRA). Logs how many parameters train."""
    preset = getattr(args, "train_parameters", "all") or "all"
    towers = getattr(args, "lora_towers", None)
    if towers and not is_peft_model(model):
        if preset != "all":
            raise ValueError(f"train_parameters={preset!r} with lora_towers={towers!r}: LoRA trains its adapters "
                             "only; choose a freezing preset or LoRA")
        model = add_lora_adapters(model, towers, args.lora_rank, args.lora_alpha, args.lora_dropout,
                                  args.lora_target_modules, seed=getattr(args, "seed", 0))
    elif preset != "all":
        freeze_for_preset(model, preset)
    if preset != "all" or towers:
        trainable, total = count_parameters(model)
        logger.info("training %s of %s parameters (%s)", f"{trainable:,}", f"{total:,}", _describe(args))
    return model


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """``(trainable, total)``; LoRA adapter weights count as trainable and not in the total, which is the
    size of the model without them (what the merged export holds)."""
    trainable = total = 0
    for name, parameter in model.named_parameters():
        if parameter.requires_grad:
            trainable += parameter.numel()
        if _LORA_MARK not in name:
            total += parameter.numel()
    return trainable, total


def _describe(args: Any) -> str:
    towers = getattr(args, "lora_towers", None)
    if towers:
        which = "both towers" if towers == "both" else f"the {towers} tower"
        return (f"LoRA adapters (rank {args.lora_rank}, alpha {args.lora_alpha:g}) on the attention projections of "
                f"{which}; everything else frozen, adapters merged into the exported weights")
    preset = getattr(args, "train_parameters", "all") or "all"
    return {"all": "all parameters",
            "text": "the text tower and its projection (and the logit scale); the image tower frozen",
            "vision": "the image tower and its projection (and the logit scale); the text tower frozen",
            "projections": "the two projections and the logit scale; both towers frozen"}[preset]


def trained_parameter_summary(model: nn.Module | None, args: Any) -> dict[str, Any]:
    """What a model card says was trained: counts and a sentence; empty without a model."""
    if model is None:
        return {}
    trainable, total = count_parameters(model)
    return {"trainable": trainable, "total": total, "share": f"{100 * trainable / max(total, 1):.2f}%",
            "what": _describe(args)}


def merge_adapters(model: nn.Module) -> nn.Module:
    """A plain transformers model with the LoRA adapters merged in (a copy; ``model`` keeps training as it was).
    Models without adapters come back as they are."""
    if not is_peft_model(model):
        return model
    merged = copy.deepcopy(model).merge_and_unload()
    for parameter in merged.parameters():
        parameter.requires_grad_(True)
    return merged


def save_merged_model(model: nn.Module, folder: str) -> None:
    """Save the merged model to ``folder`` as a plain safetensors checkpoint (``CLIPModel.from_pretrained`` loads
    it without peft)."""
    merge_adapters(model).save_pretrained(folder, safe_serialization=True)
