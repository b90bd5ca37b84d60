"""FSDP2 (``torch.distributed.fsdp.fully_shard``) for the dual encoders, with checkpoints ``from_pretrained`` loads.

Two things stand between a transformers dual encoder and ``fully_shard``:

* ``CLIPModel.logit_scale`` (and a 0-dim ``logit_bias``) is a scalar parameter, which
  ``fully_shard`` refuses ("doesn't support scalar parameters"). :func:`make_fsdp2_ready`
  turns every 0-dim parameter into a 1-element one and registers state-dict hooks that
  give it back its 0-dim shape when saved and accept either shape when loaded, so a
  checkpoint is what ``CLIPModel.from_pretrained`` expects, sharded run or not. The
  model's own forward broadcasts the 1-element scale exactly like the scalar.
* what to shard as a unit: every module class the model lists in ``_no_split_modules``
  (the encoder layers and embeddings, as accelerate's transformer wrap policy does),
  then the root, in :func:`shard_dual_encoder`.

:func:`full_state_dict` gathers the sharded parameters into one ordinary state dict
(CPU, on every process or the first), ready for ``save_pretrained(state_dict=...)``
and safetensors.

The library reads the logit scale and bias during the model's forward (see
``hf_hardneg.models.encode_batch``), where FSDP2 and DeepSpeed ZeRO-3 hold them whole,
so the loss sees full tensors under either.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

__all__ = ["full_state_dict", "make_fsdp2_ready", "shard_dual_encoder"]

_MARK = "_hf_hardneg_scalar_parameters"


def _scalar_hooks(module: nn.Module, names: list[str]) -> None:
    def save(mod, state_dict, prefix, local_metadata):
        for name in names:
            key = prefix + name
            value = state_dict.get(key)
            # a sharded (DTensor) entry is reshaped by full_state_dict once gathered
            if value is not None and value.numel() == 1 and not hasattr(value, "full_tensor"):
                state_dict[key] = value.reshape(())
        return state_dict

    def load(state_dict, prefix, *args, **kwargs):
        for name in names:
            key = prefix + name
            if key in state_dict and state_dict[key].dim() == 0:
                state_dict[key] = state_dict[key].reshape(1)

    module._register_state_dict_hook(save)
    module._register_load_state_dict_pre_hook(load)


def make_fsdp2_ready(model: nn.Module) -> list[str]:
    """Give every 0-dim parameter one element (state dicts keep the 0-dim shape); returns their names.

    Safe to call twice; a model without scalar parameters is left as it is.
    """
    changed = []
    for module_name, module in model.named_modules():
        if getattr(module, _MARK, None) is not None:
            changed += [f"{module_name}.{n}".lstrip(".") for n in getattr(module, _MARK)]
            continue
        scalars = [name for name, p in module.named_parameters(recurse=False) if p.dim() == 0]
        for name in scalars:
            old = getattr(module, name)
            setattr(module, name, nn.Parameter(old.detach().reshape(1), requires_grad=old.requires_grad))
        if scalars:
            setattr(module, _MARK, scalars)
            _scalar_hooks(module, scalars)
            changed += [f"{module_name}.{n}".lstrip(".") for n in scalars]
    return changed


def shard_dual_encoder(model: nn.Module, mesh: Any = None, **fully_shard_kwargs: Any) -> nn.Module:
    """``fully_shard`` the model's layers (its ``_no_split_modules`` classes), then the whole model; returns it."""
    from torch.distributed.fsdp import fully_shard

    from hf_hardneg.models import unwrap_model

    make_fsdp2_ready(model)
    units = set(getattr(unwrap_model(model), "_no_split_modules", None) or [])
    if not units:
        raise ValueError(f"{type(model).__name__} names no _no_split_modules, so there is no layer to shard by; "
                         "pass a transformers dual encoder (CLIPModel, SiglipModel, ...)")
    for module in model.modules():
        if type(module).__name__ in units and module is not model:
            fully_shard(module, mesh=mesh, **fully_shard_kwargs)
    fully_shard(model, mesh=mesh, **fully_shard_kwargs)
    return model


def full_state_dict(model: nn.Module, rank0_only: bool = False) -> dict[str, torch.Tensor]:
    """The unsharded parameters and buffers, on the CPU, with the shapes ``from_pretrained`` expects.

    A collective: every process calls it. With ``rank0_only`` the others get ``{}``.
    """
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    # cpu_offload gathers onto the first process only (the others get {}), which is what rank0_only asks for
    state = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=rank0_only))
    if rank0_only and torch.distributed.is_initialized() and torch.distributed.get_rank() != 0:
        return {}
    state = {k: v.detach().cpu() for k, v in state.items()}
    # the scalar hooks run inside state_dict(); reshape again in case a wrapper bypassed them
    scalars = {f"{name}.{p}".lstrip(".") for name, module in model.named_modules()
               for p in getattr(module, _MARK, [])}
    return {k: (v.reshape(()) if k in scalars and v.numel() == 1 else v) for k, v in state.items()}
