"""Contrastive losses with hard-negative captions, exact across processes.

Notation: a process holds n images, their n positive captions and k hard
negatives per image; the global batch over W processes has N images. Image
``g`` (global index) owns hard negatives ``g, 1..k``.

* :class:`HardNegativeContrastiveLoss` -- CLIP's symmetric InfoNCE. The
  image-to-text rows also see hard negatives:

  - ``mode="replace"`` (the paper's recipe): in row ``g``, k randomly chosen
    off-diagonal columns (other images' captions) are swapped for g's own hard
    negatives, so every row keeps N columns and the share of hard negatives is
    k/N. The columns are drawn for the *global* batch, identically on every
    process, so a W-process run computes the same loss as one process. A batch
    with N <= k images (an epoch's short last batch) replaces its N-1 other
    captions and appends g's remaining hard negatives, rather than failing.
  - ``mode="append"`` (NegCLIP): all N*k hard negatives of the batch become
    extra columns (image-major: column ``N + g*k + j`` is g's j-th negative), so
    each row has N + N*k columns; another image's hard negatives are ordinary
    negatives for it.

  Hard negatives are never anchors: the text-to-image rows use the positive
  captions only. With k=0 both modes are exactly CLIP's loss.
* :class:`HardNegativeSigmoidLoss` -- SigLIP's pairwise loss; hard negatives
  enter as extra negative pairs, with the same ``mode`` meaning (replace k of a
  row's negative pairs, or append all hard negatives as extra texts).

Both take raw embeddings (normalised here, in float32 with autocast off, since
bf16 logits lose the small differences hard negatives are about) and follow
open_clip's local-loss scheme (see :mod:`hf_hardneg.distributed`): memory is
O(n * N) per process (O(n * N * (1+k)) in append mode), and the mean of the
per-process losses -- what DDP's gradient averaging optimises -- equals the
one-process loss, gradients included. That holds for unequal batch sizes too
(an epoch's short last batch, a process with no rows at all): each process
returns the sum of its rows' terms times W/N, which is its rows' mean when the
sizes are equal.

torch.compile: the math is free of ``.item()`` and of Python branches on
tensor values; branches depend only on shapes, ``k`` and ``mode``, so one
process compiles to a single graph (tested with ``fullgraph=True``). Two
things break the graph, by design: gathering across processes (it first
exchanges batch sizes, a host sync) and drawing the replaced columns from an
explicit ``torch.Generator`` (dynamo cannot trace generator arguments). Draw
them before the call with :func:`draw_replacement_columns` and pass
``replace_columns`` to keep one graph.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from . import distributed

__all__ = [
    "HardNegativeContrastiveLoss",
    "HardNegativeLossOutput",
    "HardNegativeSigmoidLoss",
    "build_loss_for",
    "draw_replacement_columns",
    "replacement_generator",
    "split_text_embeds",
]

Mode = Literal["replace", "append"]
MODES = ("replace", "append")


@dataclass
class HardNegativeLossOutput:
    """What a hard-negative loss returns.

    ``loss`` is this process's share: the sum of its rows' terms times W/N, so
    that the mean over processes is the global loss whatever the batch sizes.
    The statistics are detached means over this process's images (0 for a
    process without images); with equal batch sizes their mean over processes
    is the global value.
    """

    loss: torch.Tensor
    #: share of images whose positive caption scores higher than each of its own
    #: hard negatives; ``None`` when there are no hard negatives (k=0).
    hard_negative_accuracy: torch.Tensor | None = None
    #: this process's image rows of the scored matrix (n, width), with gradient
    logits_per_image: torch.Tensor | None = None
    #: this process's caption rows against all images (n, N); ``None`` for the sigmoid loss
    logits_per_text: torch.Tensor | None = None
    #: mean cosine similarity of image-positive pairs
    positive_similarity: torch.Tensor | None = None
    #: mean cosine similarity of image-own-hard-negative pairs; ``None`` when k=0
    hard_negative_similarity: torch.Tensor | None = None
    #: share of captions whose image scores higher than each of the caption's own hard-negative
    #: images; ``None`` without image-side negatives (m=0)
    image_hard_negative_accuracy: torch.Tensor | None = None

    def metrics(self) -> dict[str, torch.Tensor]:
        """The detached scalars worth logging (absent statistics are left out); no host sync here."""
        names = ("loss", "hard_negative_accuracy", "positive_similarity", "hard_negative_similarity",
                 "image_hard_negative_accuracy")
        return {name: getattr(self, name).detach() for name in names if getattr(self, name) is not None}


def split_text_embeds(text_embeds: torch.Tensor, num_images: int,
                      num_hard_negatives: int | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Split ``(n*(1+k), d)`` caption embeddings into positives ``(n, d)`` and hard negatives ``(n, k, d)``.

    Expects the collator's order: the n positives first, then the negatives
    image-major (``img0 neg1..negk, img1 neg1..negk, ...``). Getting this order
    wrong trains images toward other images' negatives without any error, so
    it lives in one place. ``num_hard_negatives`` states k (checked against the
    shapes); it is needed when ``num_images`` is 0 (a process whose share of the
    global batch is empty), where the shapes cannot tell it.
    """
    total = text_embeds.shape[0]
    if num_hard_negatives is not None:
        if num_images < 0 or total != num_images * (1 + num_hard_negatives):
            raise ValueError(
                f"got {total} caption embeddings for {num_images} images, expected "
                f"{num_images * (1 + num_hard_negatives)} (positives, then {num_hard_negatives} negatives per image)"
            )
        k = num_hard_negatives
    elif num_images <= 0 or total % num_images:
        raise ValueError(
            f"got {total} caption embeddings for {num_images} images; expected n*(1+k) "
            "(n positives, then k hard negatives per image, image-major)"
        )
    else:
        k = total // num_images - 1
    positives = text_embeds[:num_images]
    if k == 0:
        return positives, None
    return positives, text_embeds[num_images:].reshape(num_images, k, text_embeds.shape[-1])


def replacement_generator(seed: int, step: int) -> torch.Generator:
    """A CPU generator for step ``step`` of a run seeded with ``seed``.

    A fresh generator per step makes the replaced columns a pure function of
    (seed, step): identical on every process, and identical after resuming
    from a checkpoint, with no generator state to save.
    """
    return torch.Generator().manual_seed((int(seed) * 1_000_003 + int(step)) % (2**63))


def draw_replacement_columns(
    num_images: int,
    k: int,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """For each of ``num_images`` rows, k distinct columns in ``[0, num_images)`` other than the row's own.

    Returns a LongTensor (num_images, k), uniform over k-subsets (in random
    order). Needs only num_images*k random integers: the j-th pick is uniform
    over the ``num_images-1-j`` columns still free, then mapped past the
    excluded ones (the diagonal and earlier picks) in ascending order.
    """
    if k < 0:
        raise ValueError(f"k must be >= 0, got {k}")
    if k > num_images - 1:
        raise ValueError(
            f"mode='replace' puts k={k} hard negatives in place of other images' captions, so the global batch "
            f"needs at least k+1={k + 1} images; got {num_images}. Use a larger batch, fewer hard negatives, "
            "or mode='append'."
        )
    draw_device = generator.device if generator is not None else (device or "cpu")
    rows = torch.arange(num_images, device=draw_device)
    excluded = rows[:, None]  # (N, 1): the diagonal
    picks = []
    for j in range(k):
        pick = torch.randint(num_images - 1 - j, (num_images,), generator=generator, device=draw_device)
        for m in range(excluded.shape[1]):  # excluded is sorted per row
            pick = pick + (pick >= excluded[:, m]).long()
        picks.append(pick)
        excluded = torch.sort(torch.cat([excluded, pick[:, None]], dim=1), dim=1).values
    if not picks:
        return torch.empty((num_images, 0), dtype=torch.long, device=device or draw_device)
    cols = torch.stack(picks, dim=1)
    return cols if device is None else cols.to(device)


def _check_image_negatives(image_embeds, hard_negative_image_embeds) -> int:
    """Validate the (n, m, d) hard-negative image embeddings and return m (0 when there are none)."""
    if hard_negative_image_embeds is None:
        return 0
    n, d = image_embeds.shape
    if hard_negative_image_embeds.dim() != 3 or hard_negative_image_embeds.shape[0] != n \
            or hard_negative_image_embeds.shape[2] != d:
        raise ValueError(
            f"hard_negative_image_embeds must be (n, m, d) = ({n}, m, {d}), caption-major (row g holds the images "
            f"that do not match caption g); got {tuple(hard_negative_image_embeds.shape)}")
    return hard_negative_image_embeds.shape[1]


def _check_inputs(image_embeds, text_embeds, hard_negative_embeds, logit_scale) -> int:
    """Validate shapes (static checks only) and return k."""
    if image_embeds.dim() != 2 or text_embeds.dim() != 2:
        raise ValueError(
            f"image_embeds and text_embeds must be (n, d); got {tuple(image_embeds.shape)} "
            f"and {tuple(text_embeds.shape)}"
        )
    if image_embeds.shape != text_embeds.shape:
        raise ValueError(
            f"text_embeds must hold exactly one positive caption per image: image_embeds {tuple(image_embeds.shape)} "
            f"vs text_embeds {tuple(text_embeds.shape)}. If it also holds the hard negatives, split it with "
            "hf_hardneg.loss.split_text_embeds(text_embeds, num_images)."
        )
    if logit_scale is None:
        raise ValueError("logit_scale is required: pass hf_hardneg.models.logit_scale_and_bias(model)[0] or a float")
    if hard_negative_embeds is None:
        return 0
    n, d = image_embeds.shape
    if hard_negative_embeds.dim() != 3 or hard_negative_embeds.shape[0] != n or hard_negative_embeds.shape[2] != d:
        raise ValueError(
            f"hard_negative_embeds must be (n, k, d) = ({n}, k, {d}), image-major; got "
            f"{tuple(hard_negative_embeds.shape)} "
            "(hf_hardneg.loss.split_text_embeds builds it from the collator's order)"
        )
    return hard_negative_embeds.shape[1]


def _compute_dtype(*tensors: torch.Tensor) -> torch.dtype:
    """At least float32: half-precision logits cannot resolve a caption from its one-word variant.

    float64 stays float64 (keeps ``torch.autograd.gradcheck`` possible).
    """
    dtype = torch.float32
    for t in tensors:
        dtype = torch.promote_types(dtype, t.dtype)
    return dtype


def _as_scale(value, like: torch.Tensor) -> torch.Tensor:
    """A 0-d tensor in ``like``'s dtype from a float or a 1-element tensor (CLIP's is 0-d, SigLIP's (1,))."""
    if isinstance(value, torch.Tensor):
        return value.to(device=like.device, dtype=like.dtype).reshape(())
    return torch.tensor(float(value), device=like.device, dtype=like.dtype)


@dataclass
class _Scored:
    """What the losses' maths needs, after normalising and gathering (local rows, global columns)."""

    img: torch.Tensor  # (n, d) this process's images, normalised
    txt: torch.Tensor  # (n, d) their positive captions
    hn: torch.Tensor | None  # (n, k, d) their own hard negatives
    all_img: torch.Tensor  # (N, d) every process's images
    all_txt: torch.Tensor  # (N, d) every process's positives
    all_hn: torch.Tensor | None  # (N*k, d) image-major, gathered in append mode only
    scale: torch.Tensor
    bias: torch.Tensor | None
    k: int
    sizes: list[int]  # images per process
    rank: int
    labels: torch.Tensor  # (n,) column of each row's positive
    generator: torch.Generator | None
    replace_columns: torch.Tensor | None
    nimg: torch.Tensor | None = None  # (n, m, d) hard-negative images of this process's captions
    all_nimg: torch.Tensor | None = None  # (N*m, d) caption-major, gathered in append mode only
    m: int = 0
    replace_image_columns: torch.Tensor | None = None
    text_columns: torch.Tensor | None = None  # the global (N, k') columns the text side replaced, once drawn


class _HardNegativeLossBase(nn.Module):
    """What both losses share: validation, gathering, the replaced columns and the statistics."""

    def __init__(self, mode: Mode = "replace", gather_across_processes: bool = True, group=None):
        super().__init__()
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        self.mode = mode
        self.gather_across_processes = gather_across_processes
        self.group = group

    def extra_repr(self) -> str:
        return f"mode={self.mode!r}, gather_across_processes={self.gather_across_processes}"

    def _layout(self, n: int, device) -> tuple[list[int], int]:
        """(sizes of all processes, this process's rank) -- a single process when not gathering."""
        if self.gather_across_processes and distributed.is_distributed(self.group):
            return distributed.gather_sizes(n, device, self.group), distributed.get_rank(self.group)
        return [n], 0

    def _columns(self, total: int, k: int, generator, replace_columns, device) -> torch.Tensor:
        """The global (N, k) replaced columns, identical on every process."""
        if replace_columns is not None:
            if tuple(replace_columns.shape) != (total, k):
                raise ValueError(
                    f"replace_columns must be (global batch, k) = ({total}, {k}); got {tuple(replace_columns.shape)}"
                )
            return replace_columns.to(device)
        if generator is not None or not (self.gather_across_processes and distributed.is_distributed(self.group)):
            return draw_replacement_columns(total, k, generator, device=device)
        # no generator under several processes: the group's first process draws, everybody uses its draw
        cols = draw_replacement_columns(total, k, None, device=device)
        src = 0 if self.group is None else torch.distributed.get_global_rank(self.group, 0)
        torch.distributed.broadcast(cols, src=src, group=self.group)
        return cols

    def _features(self, image_embeds, text_embeds, hard_negative_embeds, k, sizes, rank,
                  hard_negative_image_embeds=None, m=0):
        """Normalise, then gather what the local rows need (one collective).

        Returns local (img, txt, hn, nimg) and global (img, txt, hn_flat, nimg_flat);
        the flat negatives are image-major (row g*k + j) resp. caption-major (g*m + j)
        and only gathered in append mode.
        """
        extra = [t for t, count in ((hard_negative_embeds, k), (hard_negative_image_embeds, m)) if count]
        dtype = _compute_dtype(image_embeds, text_embeds, *extra)
        img = F.normalize(image_embeds.to(dtype), dim=-1)
        txt = F.normalize(text_embeds.to(dtype), dim=-1)
        hn = F.normalize(hard_negative_embeds.to(dtype), dim=-1) if k else None
        nimg = F.normalize(hard_negative_image_embeds.to(dtype), dim=-1) if m else None
        d = img.shape[-1]
        # per row [img, pos, neg_1..neg_k, neg_image_1..neg_image_m]: gathering keeps each row's own negatives
        parts = [img[:, None], txt[:, None]]
        gather_hn, gather_nimg = bool(k and self.mode == "append"), bool(m and self.mode == "append")
        parts += [hn] if gather_hn else []
        parts += [nimg] if gather_nimg else []
        if len(sizes) == 1:  # one process: nothing to gather
            return (img, txt, hn, nimg, img, txt, hn.reshape(-1, d) if gather_hn else None,
                    nimg.reshape(-1, d) if gather_nimg else None)
        stacked = distributed.all_gather_with_grad(torch.cat(parts, dim=1), sizes, self.group)
        all_hn = stacked[:, 2:2 + k].reshape(-1, d) if gather_hn else None
        all_nimg = stacked[:, 2 + (k if gather_hn else 0):].reshape(-1, d) if gather_nimg else None
        return img, txt, hn, nimg, stacked[:, 0], stacked[:, 1], all_hn, all_nimg

    @staticmethod
    def _stats(img, txt, hn):
        """Means over this process's images; 0 without images, so a sum weighted by image counts stays finite."""
        with torch.no_grad():
            pos = (img * txt).sum(-1)
            count = max(img.shape[0], 1)
            if hn is None:
                return pos.sum() / count, None, None
            neg = (img[:, None] * hn).sum(-1)
            accuracy = (pos[:, None] > neg).all(dim=1).float().sum() / count
            return pos.sum() / count, neg.sum() / (count * max(neg.shape[1], 1)), accuracy

    @staticmethod
    def _share(terms_sum: torch.Tensor, sizes: list[int]) -> torch.Tensor:
        """This process's share of the global mean: its sum times W/N (its mean when all sizes are equal)."""
        return terms_sum * (len(sizes) / max(sum(sizes), 1))

    def forward(
        self,
        image_embeds: torch.Tensor,
        text_embeds: torch.Tensor,
        hard_negative_embeds: torch.Tensor | None = None,
        logit_scale: torch.Tensor | float | None = None,
        logit_bias: torch.Tensor | float | None = None,
        generator: torch.Generator | None = None,
        replace_columns: torch.Tensor | None = None,
        hard_negative_image_embeds: torch.Tensor | None = None,
        replace_image_columns: torch.Tensor | None = None,
    ) -> HardNegativeLossOutput:
        """Loss for this process's images and captions.

        ``image_embeds`` (n, d) and ``text_embeds`` (n, d, the positives) are raw
        embeddings; ``hard_negative_embeds`` (n, k, d), image-major (see
        :func:`split_text_embeds`). ``logit_scale`` multiplies cosine similarities
        (already exp()'d); ``logit_bias`` is added where the loss uses one (sigmoid).
        ``generator`` draws the replaced columns (replace mode); use the same seed on
        every process -- without one, process 0 draws from the default RNG and
        broadcasts. ``replace_columns`` (global (N, k), from
        :func:`draw_replacement_columns`) overrides it.

        ``hard_negative_image_embeds`` (n, m, d): for caption g, m images that do not
        match it (an edited copy of image g, say). They enter caption g's side of the
        loss the way text hard negatives enter image g's (replacing m other images, or
        appended); they are never anchors. ``replace_image_columns`` ((N, m)) fixes
        which images they replace.
        """
        k = _check_inputs(image_embeds, text_embeds, hard_negative_embeds, logit_scale)
        m = _check_image_negatives(image_embeds, hard_negative_image_embeds)
        with torch.autocast(device_type=image_embeds.device.type, enabled=False):
            sizes, rank = self._layout(image_embeds.shape[0], image_embeds.device)
            img, txt, hn, nimg, all_img, all_txt, all_hn, all_nimg = self._features(
                image_embeds, text_embeds, hard_negative_embeds, k, sizes, rank, hard_negative_image_embeds, m)
            b = _Scored(img, txt, hn, all_img, all_txt, all_hn, _as_scale(logit_scale, img),
                        None if logit_bias is None else _as_scale(logit_bias, img), k, sizes, rank,
                        torch.arange(img.shape[0], device=img.device) + sum(sizes[:rank]), generator, replace_columns,
                        nimg, all_nimg, m, replace_image_columns)
            terms_sum, logits_per_image, logits_per_text = self._terms(b)
            pos_sim, neg_sim, accuracy = self._stats(img, txt, hn)
            image_accuracy = self._stats(txt, img, nimg)[2] if m else None
        return HardNegativeLossOutput(self._share(terms_sum, sizes), accuracy, logits_per_image, logits_per_text,
                                      pos_sim, neg_sim, image_accuracy)

    def _terms(self, b: "_Scored") -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """``(sum of this process's loss terms, image rows, caption rows or None)``; the loss's own maths."""
        raise NotImplementedError

    def _image_rows(self, logits, b: "_Scored"):
        """This process's image rows: ``logits`` (n, N) with hard negatives replaced in or appended."""
        rows, cols = self._with_own_negatives(logits, b.img, b.hn, b.all_hn, b.k, b, b.replace_columns)
        b.text_columns = cols
        return rows

    def _caption_rows(self, logits, b: "_Scored"):
        """This process's caption rows: ``logits`` (n, N images) with hard-negative images replaced in or appended."""
        return self._with_own_negatives(logits, b.txt, b.nimg, b.all_nimg, b.m, b, b.replace_image_columns)[0]

    def _with_own_negatives(self, logits, anchors, own, all_own, count, b: "_Scored", fixed_columns):
        """Rows of ``anchors`` scored against N columns, with each row's ``count`` own negatives.

        append: every row also scores all gathered negatives (extra columns); replace:
        ``count`` random off-diagonal columns of each row take its own negatives (drawn
        for the global batch). Returns ``(rows, global replaced columns or None)``.
        """
        if count == 0:
            return logits, None
        if self.mode == "append":
            return torch.cat([logits, b.scale * (anchors @ all_own.T)], dim=1), None
        offset, n, total = sum(b.sizes[:b.rank]), anchors.shape[0], sum(b.sizes)
        # A global batch of N <= count rows (the short last batch of an epoch, or one thinned by skipped
        # corrupt images) has only N-1 other columns to replace: the remaining own negatives are
        # appended to the row, which then scores the positive against all of its own negatives.
        replaced = min(count, total - 1)
        all_cols = self._columns(total, replaced, b.generator, fixed_columns, anchors.device)
        cols = all_cols[offset: offset + n]
        scores = b.scale * (anchors[:, None] * own).sum(-1)
        if replaced < count:
            return torch.cat([logits.scatter(1, cols, scores[:, :replaced]), scores[:, replaced:]], dim=1), all_cols
        return logits.scatter(1, cols, scores), all_cols


class HardNegativeContrastiveLoss(_HardNegativeLossBase):
    """CLIP's symmetric InfoNCE with hard-negative captions (see the module docstring).

    Args:
        mode: ``"replace"`` (paper; rows keep width N) or ``"append"`` (NegCLIP; N + N*k columns).
        gather_across_processes: score against the global batch (open_clip's local
            loss). ``False`` makes each process's batch independent.
        group: process group to gather over (default: the world).

    Example::

        loss_fn = HardNegativeContrastiveLoss(mode="replace")
        scale, _ = logit_scale_and_bias(model)
        out = loss_fn(image_embeds, text_embeds, hard_negative_embeds, scale,
                      generator=replacement_generator(seed, step))
        out.loss.backward()
    """

    def _terms(self, b: "_Scored"):
        """Symmetric InfoNCE: image rows with their hard negatives, caption rows against images only.

        ``logit_bias`` cannot change a softmax, so it is ignored.
        """
        plain = b.scale * (b.img @ b.all_txt.T)
        logits_per_image = self._image_rows(plain, b)  # text side first: its draws do not depend on m
        # positives only: hard negatives are never anchors. One process: the same matrix, transposed.
        logits_per_text = self._caption_rows(plain.T if len(b.sizes) == 1 else b.scale * (b.txt @ b.all_img.T), b)
        loss = 0.5 * (F.cross_entropy(logits_per_image, b.labels, reduction="sum")
                      + F.cross_entropy(logits_per_text, b.labels, reduction="sum"))
        return loss, logits_per_image, logits_per_text


class HardNegativeSigmoidLoss(_HardNegativeLossBase):
    """SigLIP's pairwise sigmoid loss with hard negatives as extra negative pairs.

    Every (image, caption) pair is an independent binary term: positive on the
    diagonal, negative elsewhere; the per-image sum is averaged over images, as
    in ``SiglipModel(return_loss=True)``. ``mode="append"`` adds all hard
    negatives of the batch as extra negative captions for every image;
    ``mode="replace"`` swaps k of each image's negative pairs for its own hard
    negatives (same columns rule as the contrastive loss), keeping N terms per
    image. Only image rows are scored: the loss is symmetric already, and hard
    negatives are never anchors.
    """

    def __init__(self, mode: Mode = "append", gather_across_processes: bool = True, group=None):
        super().__init__(mode=mode, gather_across_processes=gather_across_processes, group=group)

    def _terms(self, b: "_Scored"):
        """One binary term per (image, caption) pair of the image rows; ``logit_bias`` (None = 0) shifts every score.

        Hard-negative images are negative pairs of their own caption: appended, every
        caption also meets every hard-negative image of the batch; replacing, each
        caption's own m images take the place of m of its pairs with other images
        (pairs the text side already replaced are not drawn).
        """
        logits = self._image_rows(b.scale * (b.img @ b.all_txt.T), b)
        if b.bias is not None:
            logits = logits + b.bias
        signs = 2.0 * F.one_hot(b.labels, logits.shape[1]).to(logits.dtype) - 1.0  # +1 positive pair, -1 otherwise
        terms = -F.logsigmoid(signs * logits)
        total = terms.sum()
        if b.m:
            total = total + self._image_negative_terms(terms, b)
        return total, logits, None

    def _negative_pairs(self, images: torch.Tensor, captions: torch.Tensor, b: "_Scored") -> torch.Tensor:
        scores = b.scale * (images * captions).sum(-1)
        return -F.logsigmoid(-(scores + b.bias if b.bias is not None else scores)).sum()

    def _image_negative_terms(self, terms: torch.Tensor, b: "_Scored") -> torch.Tensor:
        d = b.img.shape[-1]
        if self.mode == "append":  # each pair once, by the process that holds the negative image
            own = b.nimg.reshape(-1, d)
            return self._negative_pairs(own[:, None], b.all_txt[None], b)
        added = self._negative_pairs(b.nimg, b.txt[:, None], b)
        total, offset, n = sum(b.sizes), sum(b.sizes[:b.rank]), b.img.shape[0]
        picks, valid = self._dropped_pairs(total, b)
        local = (picks >= offset) & (picks < offset + n) & valid  # pairs (image r, caption g) held here
        captions = torch.arange(total, device=picks.device)[:, None].expand_as(picks)
        removed = terms[picks[local] - offset, captions[local]].sum()
        return added - removed

    def _dropped_pairs(self, total: int, b: "_Scored") -> tuple[torch.Tensor, torch.Tensor]:
        """For each caption g, the images r whose pair (r, g) its own negative images replace: ``(N, m')`` and valid.

        Uniform among the other images whose pair with g is still there (the text side may
        have replaced it); identical on every process.
        """
        count = min(b.m, total - 1)
        device = b.img.device

        def draw(generator):
            keys = torch.rand((total, total), generator=generator,
                              device=generator.device if generator is not None else "cpu").to(device)
            keys.fill_diagonal_(float("inf"))
            if b.text_columns is not None:  # row r of the images replaced the pairs (r, c) for c in its columns
                rows = torch.arange(total, device=device)[:, None].expand_as(b.text_columns)
                keys[b.text_columns.to(device), rows] = float("inf")
            values, picks = keys.topk(count, dim=1, largest=False)
            return picks, torch.isfinite(values)

        if b.replace_image_columns is not None:
            if tuple(b.replace_image_columns.shape) != (total, count):
                raise ValueError(f"replace_image_columns must be (global batch, m) = ({total}, {count}); got "
                                 f"{tuple(b.replace_image_columns.shape)}")
            picks = b.replace_image_columns.to(device)
            return picks, picks != torch.arange(total, device=device)[:, None]
        if b.generator is not None or not (self.gather_across_processes and distributed.is_distributed(self.group)):
            return draw(b.generator)
        picks, valid = draw(None)  # no generator under several processes: the first process's draw counts
        both = torch.cat([picks, valid.long()], dim=1)
        src = 0 if self.group is None else torch.distributed.get_global_rank(self.group, 0)
        torch.distributed.broadcast(both, src=src, group=self.group)
        return both[:, :count], both[:, count:].bool()


def build_loss_for(model: nn.Module, mode: Mode = "replace", **kwargs) -> _HardNegativeLossBase:
    """The loss matching the model's pretraining: sigmoid for SigLIP models, InfoNCE otherwise.

    ``mode`` keeps its meaning in both (replace k negatives / append all hard
    negatives); extra keyword arguments go to the loss constructor.
    """
    from .models import uses_sigmoid_loss

    cls = HardNegativeSigmoidLoss if uses_sigmoid_loss(model) else HardNegativeContrastiveLoss
    return cls(mode=mode, **kwargs)
