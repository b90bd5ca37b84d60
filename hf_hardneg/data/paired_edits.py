"""Original/edited image pairs as training rows with hard negatives on both sides.

An edit changes one concept of a photograph (InpaintCOCO: a recoloured, swapped or
resized object) and comes with the caption that is true for the edited image. Such a
pair teaches the model in both directions:

* ``original`` row: the photograph and its caption; the edited caption is its text
  hard negative and the edited image its image hard negative;
* ``edited`` row: the edited image and its new caption; the original caption and the
  photograph are its hard negatives.

:func:`paired_edit_rows` turns any dataset of such pairs into rows of the columns the
trainer reads (``image``, ``caption``, ``negative_1``, ``negative_image_1``), one or
both per pair. The defaults name the columns of the published InpaintCOCO
(``coco_image``, ``coco_caption``, ``inpaint_image``, ``inpaint_caption``) and so of the
library's own builder; ``train.py --paired_edits`` calls it.
"""

from __future__ import annotations

import logging
from typing import Any, Literal

logger = logging.getLogger(__name__)

__all__ = ["PAIRINGS", "paired_edit_rows"]

#: which rows a pair gives: the original side, the edited side, or both
PAIRINGS = ("both", "original", "edited")


class _Pairs:
    """Picklable batched map: one pair -> its rows (kept hashable for the ``datasets`` cache)."""

    def __init__(self, columns: tuple[str, str, str, str], pairing: str):
        self.columns, self.pairing = columns, pairing

    def __call__(self, batch: dict[str, list]) -> dict[str, list]:
        original_image, original_caption, edited_image, edited_caption = (batch[c] for c in self.columns)
        out: dict[str, list] = {"image": [], "caption": [], "negative_1": [], "negative_image_1": [],
                                "edit_side": [], "pair_index": []}
        for i, index in enumerate(batch["__pair_index__"]):
            sides = []
            if self.pairing in ("both", "original"):
                sides.append(("original", original_image[i], original_caption[i], edited_caption[i], edited_image[i]))
            if self.pairing in ("both", "edited"):
                sides.append(("edited", edited_image[i], edited_caption[i], original_caption[i], original_image[i]))
            for side, image, caption, negative, negative_image in sides:
                for column, value in zip(("edit_side", "image", "caption", "negative_1", "negative_image_1",
                                          "pair_index"), (side, image, caption, negative, negative_image, index)):
                    out[column].append(value)
        return out


def _usable(caption: Any) -> bool:
    return isinstance(caption, str) and bool(caption.strip())


def paired_edit_rows(
    dataset,
    *,
    original_image_column: str = "coco_image",
    original_caption_column: str = "coco_caption",
    edited_image_column: str = "inpaint_image",
    edited_caption_column: str = "inpaint_caption",
    pairing: Literal["both", "original", "edited"] = "both",
):
    """Rows ``image, caption, negative_1, negative_image_1, edit_side, pair_index`` from a dataset of edit pairs.

    Images pass through undecoded (a ``datasets`` Image column is cast to
    ``decode=False``; paths stay paths), so this costs no image decoding. Pairs whose
    two captions are equal (ignoring case and surrounding space) or missing cannot give
    a hard negative: they are left out, counted and reported in a warning.
    """
    import datasets

    if pairing not in PAIRINGS:
        raise ValueError(f"pairing must be one of {PAIRINGS}, got {pairing!r}")
    columns = (original_image_column, original_caption_column, edited_image_column, edited_caption_column)
    missing = [c for c in columns if c not in (dataset.column_names or [])]
    if missing:
        raise ValueError(f"the edit pairs have no column(s) {missing}; their columns are {dataset.column_names}. "
                         "Name the original and edited image and caption columns (train.py: --image_column, "
                         "--caption_column, --edited_image_column, --edited_caption_column)")
    for column in (original_image_column, edited_image_column):
        feature = dataset.features.get(column) if dataset.features else None
        if isinstance(feature, datasets.Image) and feature.decode:
            dataset = dataset.cast_column(column, datasets.Image(decode=False))
    dataset = dataset.add_column("__pair_index__", list(range(len(dataset))))

    def keep(original, edited):
        return [_usable(a) and _usable(b) and a.strip().lower() != b.strip().lower() for a, b in zip(original, edited)]

    kept = dataset.filter(keep, batched=True, input_columns=[original_caption_column, edited_caption_column])
    if len(kept) < len(dataset):
        logger.warning("paired edits: left out %d of %d pairs whose two captions are equal or missing (no hard "
                       "negative to make)", len(dataset) - len(kept), len(dataset))
    if len(kept) == 0:
        raise ValueError(f"none of the {len(dataset)} edit pairs has two different captions in "
                         f"{original_caption_column!r} and {edited_caption_column!r}")
    image_feature = kept.features[original_image_column]
    if kept.features[edited_image_column] != image_feature:  # both sides share the image column
        raise ValueError(f"{original_image_column!r} holds {image_feature} but {edited_image_column!r} holds "
                         f"{kept.features[edited_image_column]}; store both as images or both as file paths")
    features = datasets.Features({
        "image": image_feature, "caption": datasets.Value("string"), "negative_1": datasets.Value("string"),
        "negative_image_1": image_feature, "edit_side": datasets.Value("string"),
        "pair_index": datasets.Value("int64")})
    return kept.map(_Pairs(columns, pairing), batched=True, remove_columns=kept.column_names, features=features)
