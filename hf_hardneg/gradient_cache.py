"""Gradient caching (GradCache): a contrastive batch larger than the activations that fit in memory.

A contrastive loss couples every image with every caption of the batch, so the
batch cannot simply be split like a classification batch: gradient accumulation
makes each micro-batch its own, smaller contrastive problem. Gradient caching
keeps the whole batch as one problem and only bounds the activations:

1. encode the batch in chunks of ``chunk_size`` images (with their captions and
   hard negatives) without building a graph, remembering each chunk's random state;
2. compute the loss on the detached embeddings -- gathered across processes, with
   the replaced columns drawn once, exactly as without caching -- and the gradient
   of the loss with respect to every embedding (and to the logit scale and bias);
3. when the Trainer back-propagates the returned loss, encode each chunk again with
   a graph, the same random state (so dropout draws the same masks) and the same
   autocast setting, and back-propagate its cached embedding gradients.

The parameter gradients equal those of the uncached step up to floating-point
rounding (tests/test_gradient_cache.py checks this in float64, one and two
processes). Memory holds one chunk's activations plus the (N, d) embeddings; each
chunk is encoded twice, so a step costs about one extra forward pass.

Under DDP the chunk passes but the last run under ``no_sync``, so gradients are
reduced once per step, as without caching. Only the model's forward is
repeated: the loss and its collectives run once.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import nn

from hf_hardneg.models import (
    encode_batch,
    family_of,
    logit_parameters,
    scale_from_logit_parameter,
)

__all__ = ["gradient_cached_loss"]


@dataclass
class _RandomState:
    """The random state a forward pass starts from, so that its second run draws the same numbers."""

    cpu: torch.Tensor
    device_type: str
    device_states: list[torch.Tensor] | None

    @classmethod
    def capture(cls, device: torch.device) -> "_RandomState":
        module = getattr(torch, device.type, None) if device.type != "cpu" else None
        states = module.get_rng_state_all() if module is not None and hasattr(module, "get_rng_state_all") else None
        return cls(torch.get_rng_state(), device.type, states)

    def restore(self) -> None:
        torch.set_rng_state(self.cpu)
        if self.device_states is not None:
            getattr(torch, self.device_type).set_rng_state_all(self.device_states)


@dataclass
class _Chunk:
    """Rows ``start:stop`` of the images, their positives and their hard negatives (image-major)."""

    start: int
    stop: int
    pixel_values: torch.Tensor
    input_ids: torch.Tensor
    attention_mask: torch.Tensor | None
    state: _RandomState | None = None


def _chunks(pixel_values, input_ids, attention_mask, k: int, chunk_size: int) -> list[_Chunk]:
    n = pixel_values.shape[0]
    out = []
    for start in range(0, n, chunk_size):
        stop = min(start + chunk_size, n)
        rows = torch.cat([torch.arange(start, stop), n + torch.arange(start * k, stop * k)]).to(input_ids.device)
        out.append(_Chunk(start, stop, pixel_values[start:stop], input_ids[rows],
                          None if attention_mask is None else attention_mask[rows]))
    return out


def _autocast_state(device_type: str) -> tuple[bool, torch.dtype]:
    return torch.is_autocast_enabled(device_type), torch.get_autocast_dtype(device_type)


def gradient_cached_loss(
    model: nn.Module,
    pixel_values: torch.Tensor,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None,
    num_hard_negatives: int,
    chunk_size: int,
    loss_fn: Callable[..., Any],
    generator: torch.Generator | None = None,
):
    """The loss output of one batch, its ``loss`` ready for ``backward`` through the chunked re-encoding.

    ``input_ids``/``attention_mask`` are the collator's texts: the n positives, then
    the n*k hard negatives image-major. ``loss_fn`` is a hard-negative loss module;
    ``generator`` draws its replaced columns, once for the whole batch. Returns
    ``(output, raw_scale)``: the loss module's output, whose ``loss`` is a leaf that,
    back-propagated, runs step 3 of the module docstring, and the logit-scale value
    the loss used (for logging).
    """
    if chunk_size < 1:
        raise ValueError(f"gradient_cache_chunk_size must be >= 1, got {chunk_size}")
    device = pixel_values.device
    n, k = pixel_values.shape[0], num_hard_negatives
    chunks = _chunks(pixel_values, input_ids, attention_mask, k, chunk_size)

    # 1. embeddings without a graph, remembering where each chunk's random numbers started
    images, positives, negatives = [], [], []
    with torch.no_grad():
        for chunk in chunks:
            chunk.state = _RandomState.capture(device)
            image_embeds, text_embeds = encode_batch(model, chunk.pixel_values, chunk.input_ids, chunk.attention_mask)
            rows = chunk.stop - chunk.start
            images.append(image_embeds)
            positives.append(text_embeds[:rows])
            if k:
                negatives.append(text_embeds[rows:].reshape(rows, k, text_embeds.shape[-1]))

    # 2. the loss on detached embeddings, and its gradient with respect to them and to the logit parameters
    leaves = [torch.cat(images).detach().requires_grad_(), torch.cat(positives).detach().requires_grad_()]
    hard_negatives = torch.cat(negatives).detach().requires_grad_() if k else None
    raw_scale, raw_bias = logit_parameters(model)
    scale_leaf = raw_scale.detach().requires_grad_()
    bias_leaf = raw_bias.detach().requires_grad_() if raw_bias is not None else None
    with torch.enable_grad():
        scale = scale_from_logit_parameter(scale_leaf, family_of(model))
        output = loss_fn(leaves[0], leaves[1], hard_negatives, scale, bias_leaf, generator=generator)
        inputs = [*leaves, *([hard_negatives] if k else []), scale_leaf, *([bias_leaf] if bias_leaf is not None else [])]
        grads = torch.autograd.grad(output.loss, inputs, allow_unused=True)
    grads = [torch.zeros_like(x) if g is None else g for x, g in zip(inputs, grads)]
    image_grad, positive_grad = grads[0], grads[1]
    negative_grad = grads[2] if k else None
    scale_grad = grads[2 + bool(k)]
    bias_grad = grads[3 + bool(k)] if bias_leaf is not None else None

    autocast_enabled, autocast_dtype = _autocast_state(device.type)
    ddp_no_sync = getattr(model, "no_sync", None)

    def replay(grad_output: torch.Tensor) -> None:
        """3. each chunk again, with a graph and its random state; its cached gradients go back through it."""
        rng_after = _RandomState.capture(device)
        for i, chunk in enumerate(chunks):
            last = i == len(chunks) - 1
            sync = contextlib.nullcontext() if last or ddp_no_sync is None else ddp_no_sync()
            chunk.state.restore()
            with sync, torch.enable_grad(), torch.autocast(device.type, dtype=autocast_dtype,
                                                             enabled=autocast_enabled):
                image_embeds, text_embeds = encode_batch(model, chunk.pixel_values, chunk.input_ids,
                                                         chunk.attention_mask)
                a, b = chunk.start, chunk.stop
                tensors = [image_embeds, text_embeds[: b - a]]
                cached = [image_grad[a:b], positive_grad[a:b]]
                if k:
                    tensors.append(text_embeds[b - a:])
                    cached.append(negative_grad[a:b].reshape((b - a) * k, -1))
                if last:  # the logit parameters' gradients join the one synchronised backward
                    tensors.append(raw_scale)
                    cached.append(scale_grad)
                    if raw_bias is not None:
                        tensors.append(raw_bias)
                        cached.append(bias_grad)
                torch.autograd.backward(tensors, [g.to(t.dtype) * grad_output for t, g in zip(tensors, cached)])
        rng_after.restore()

    loss = output.loss.detach().requires_grad_()
    loss.register_hook(lambda grad: replay(grad) or grad)
    output.loss = loss
    return output, scale.detach()
