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


def _chunks(pixel_values, input_ids, attention_mask, k: int, chunk_size: int,
            negative_pixel_values=None, m: int = 0) -> list[_Chunk]:
    """Chunks of images with their hard-negative images (after them) and captions (positives, then negatives)."""
    n = pixel_values.shape[0]
    out = []
    for start in range(0, n, chunk_size):
        stop = min(start + chunk_size, n)
        rows = torch.cat([torch.arange(start, stop), n + torch.arange(start * k, stop * k)]).to(input_ids.device)
        pixels = pixel_values[start:stop]
        if m:
            pixels = torch.cat([pixels, negative_pixel_values[start * m: stop * m]])
        out.append(_Chunk(start, stop, pixels, input_ids[rows], None if attention_mask is None else attention_mask[rows]))
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
    negative_pixel_values: torch.Tensor | None = None,
):
    """The loss output of one batch, its ``loss`` ready for ``backward`` through the chunked re-encoding.

    ``input_ids``/``attention_mask`` are the collator's texts: the n positives, then
    the n*k hard negatives image-major; ``negative_pixel_values`` the n*m hard-negative
    images, caption-major (or ``None``). ``loss_fn`` is a hard-negative loss module;
    ``generator`` draws its replaced columns, once for the whole batch. Returns
    ``(output, raw_scale)``: the loss module's output, whose ``loss`` is a leaf that,
    back-propagated, runs step 3 of the module docstring, and the logit-scale value
    the loss used (for logging).
    """
    if chunk_size < 1:
        raise ValueError(f"gradient_cache_chunk_size must be >= 1, got {chunk_size}")
    device = pixel_values.device
    n, k = pixel_values.shape[0], num_hard_negatives
    m = 0 if negative_pixel_values is None else negative_pixel_values.shape[0] // max(n, 1)
    chunks = _chunks(pixel_values, input_ids, attention_mask, k, chunk_size, negative_pixel_values, m)

    # 1. embeddings without a graph, remembering where each chunk's random numbers started
    images, negative_images, positives, negatives = [], [], [], []
    with torch.no_grad():
        for chunk in chunks:
            chunk.state = _RandomState.capture(device)
            image_embeds, text_embeds = encode_batch(model, chunk.pixel_values, chunk.input_ids, chunk.attention_mask)
            rows, d = chunk.stop - chunk.start, text_embeds.shape[-1]
            images.append(image_embeds[:rows])
            positives.append(text_embeds[:rows])
            if k:
                negatives.append(text_embeds[rows:].reshape(rows, k, d))
            if m:
                negative_images.append(image_embeds[rows:].reshape(rows, m, d))

    # 2. the loss on detached embeddings, and its gradient with respect to them and to the logit parameters
    def leaf(parts):
        return torch.cat(parts).detach().requires_grad_() if parts else None

    embeddings = {"images": leaf(images), "positives": leaf(positives), "negatives": leaf(negatives),
                  "negative_images": leaf(negative_images)}
    raw_scale, raw_bias = logit_parameters(model)
    logit = {"scale": raw_scale.detach().requires_grad_(),
             "bias": raw_bias.detach().requires_grad_() if raw_bias is not None else None}
    with torch.enable_grad():
        scale = scale_from_logit_parameter(logit["scale"], family_of(model))
        extra = {"hard_negative_image_embeds": embeddings["negative_images"]} if m else {}
        output = loss_fn(embeddings["images"], embeddings["positives"], embeddings["negatives"], scale, logit["bias"],
                         generator=generator, **extra)
        named = {name: t for name, t in (*embeddings.items(), *logit.items()) if t is not None}
        grads = dict(zip(named, torch.autograd.grad(output.loss, list(named.values()), allow_unused=True)))
    grads = {name: torch.zeros_like(named[name]) if g is None else g for name, g in grads.items()}

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
                tensors = [image_embeds[: b - a], text_embeds[: b - a]]
                cached = [grads["images"][a:b], grads["positives"][a:b]]
                if k:
                    tensors.append(text_embeds[b - a:])
                    cached.append(grads["negatives"][a:b].reshape((b - a) * k, -1))
                if m:
                    tensors.append(image_embeds[b - a:])
                    cached.append(grads["negative_images"][a:b].reshape((b - a) * m, -1))
                if last:  # the logit parameters' gradients join the one synchronised backward
                    tensors.append(raw_scale)
                    cached.append(grads["scale"])
                    if raw_bias is not None:
                        tensors.append(raw_bias)
                        cached.append(grads["bias"])
                torch.autograd.backward(tensors, [g.to(t.dtype) * grad_output for t, g in zip(tensors, cached)])
        rng_after.restore()

    loss = output.loss.detach().requires_grad_()
    loss.register_hook(lambda grad: replay(grad) or grad)
    output.loss = loss
    return output, scale.detach()
