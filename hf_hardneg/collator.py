"""Turn dataset rows (image, caption, negative_1..k) into one batch for a dual encoder.

Hard negatives are plain dataset columns (``negative_1`` ... ``negative_k``, as
written by :func:`hf_hardneg.substitution.add_hard_negatives`), so any
``datasets.Dataset`` with those columns trains. The collator

* decodes images itself (see :mod:`hf_hardneg.data.image_pipeline`): it runs inside
  DataLoader workers, where decoding and mode conversion are cheap to parallelise,
  and a corrupt file can be named and, on request, skipped. What else the workers
  do depends on the tier: the CPU tier resizes and crops in uint8 and normalises
  once per batch; the device tier only decodes and leaves the rest to the trainer's
  input step on the GPU (:func:`~hf_hardneg.data.image_pipeline.finish_images`);
* tokenises positives and negatives in ONE tokenizer call, so they share one
  padded width: the longest text of the batch rounded up to a multiple of 8
  (tensor-core friendly, few distinct shapes for ``torch.compile``) and never
  beyond the model's maximum length.

Text order is fixed and relied upon by the trainer: the ``n`` positives first,
then the negatives image-major ``[img0 neg1..negk, img1 neg1..negk, ...]``, so
``texts[n:].view(n, k, ...)`` gives every image its own negatives.

Hard-negative images (columns ``negative_image_1..m``: images that do not match the
row's caption, e.g. an edited copy of its image) are decoded on the same path as
the positives and returned as ``negative_pixel_values`` (n*m images, row-major:
``[row0 image1..m, row1 image1..m, ...]``).
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import torch

from hf_hardneg.models import _NO_LIMIT
from hf_hardneg.data.image_pipeline import ImagePipeline
from hf_hardneg.data.images import CorruptImageError, describe_image_source, processor_target_size

logger = logging.getLogger(__name__)

__all__ = ["HardNegativeCollator", "count_negative_columns"]

_NEGATIVE_COLUMN = re.compile(r"^negative_(\d+)$")
_NEGATIVE_IMAGE_COLUMN = re.compile(r"^negative_image_(\d+)$")
# row fields that help a user find a bad row in their data, in order of preference
_ROW_ID_FIELDS = ("id", "image_id", "caption_id", "sample_id", "file_name")


def count_negative_columns(column_names: Sequence[str], images: bool = False) -> int:
    """Number of hard-negative columns ``negative_1..negative_k`` (``images=True``: ``negative_image_1..m``).

    Raises if they are not consecutive from 1.
    """
    pattern, stem = (_NEGATIVE_IMAGE_COLUMN, "negative_image_") if images else (_NEGATIVE_COLUMN, "negative_")
    found = sorted(int(m.group(1)) for name in column_names if (m := pattern.match(name)))
    if found and found != list(range(1, len(found) + 1)):
        raise ValueError(
            f"hard-negative columns must be {stem}1..{stem}{'m' if images else 'k'} without gaps, found "
            f"{', '.join(f'{stem}{i}' for i in found)}"
        )
    return len(found)


@dataclass
class HardNegativeCollator:
    """Collate rows with an image, a caption and optional hard negatives into model inputs.

    Args:
        tokenizer: the model's tokenizer.
        image_processor: the model's image processor; its resize target also
            sets the JPEG draft-decoding scale.
        image_column: column holding a PIL image, a ``datasets`` Image entry
            (``{"path", "bytes"}``, e.g. after ``cast_column(col, Image(decode=False))``)
            or a file path.
        caption_column: column holding the positive caption.
        num_hard_negatives: how many ``negative_*`` columns to use; ``None``
            counts them in the first batch's rows; ``0`` trains the classic loss
            even when negatives are present.
        num_hard_negative_images: how many ``negative_image_*`` columns to use (m);
            ``None`` counts them in the first batch's rows.
        pad_to_multiple_of: round the padded text length up to a multiple of this.
        max_length: truncate texts to this many tokens; ``None`` uses the
            tokenizer's ``model_max_length``.
        padding: ``"longest"`` (dynamic, default) or ``"max_length"`` (required by
            SigLIP, see :func:`hf_hardneg.models.text_padding_for`).
        skip_corrupt_images: drop rows whose image cannot be decoded (logged and
            counted in the batch's ``num_skipped_images``) instead of raising.
        draft_decode: decode JPEGs at reduced scale when it cannot go below the
            processor's resize target, and in the CPU tier resize with torch's uint8
            kernels (faster; pixels differ slightly from a full
            decode followed by the processor's resize). ``False``: the processor's
            pixels bit for bit in the CPU tier.
        image_preprocessing: ``"cpu"`` (decode, resize and crop in uint8, normalise
            per batch: the processor's values bit for bit without draft decoding),
            ``"device"`` (decode only; the batch holds packed uint8 images that
            :func:`~hf_hardneg.data.image_pipeline.finish_images` completes on the
            GPU, as :class:`~hf_hardneg.trainer.HardNegCLIPTrainer` does),
            ``"processor"`` (the image processor per image), or ``"auto"``: the
            CPU tier, which the trainer and the evaluator turn into the device tier
            on a GPU (:meth:`for_device`).

    Example::

        >>> collator = HardNegativeCollator(tokenizer, image_processor)
        >>> batch = collator([{"image": "cat.jpg", "caption": "a white cat", "negative_1": "a brown cat"}])
        >>> batch["input_ids"].shape  # 1 positive + 1 negative, padded to a multiple of 8
        torch.Size([2, 8])
    """

    tokenizer: Any
    image_processor: Any
    image_column: str = "image"
    caption_column: str = "caption"
    num_hard_negatives: int | None = None
    num_hard_negative_images: int | None = None
    pad_to_multiple_of: int | None = 8
    max_length: int | None = None
    padding: str = "longest"
    skip_corrupt_images: bool = False
    draft_decode: bool = True
    image_preprocessing: str = "auto"
    _pipeline: ImagePipeline | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.padding not in ("longest", "max_length"):
            raise ValueError(f"padding must be 'longest' or 'max_length', got {self.padding!r}")
        if self.num_hard_negatives is not None and self.num_hard_negatives < 0:
            raise ValueError(f"num_hard_negatives must be >= 0, got {self.num_hard_negatives}")
        if self.max_length is None:
            model_max = getattr(self.tokenizer, "model_max_length", None)
            if not model_max or model_max >= _NO_LIMIT:
                raise ValueError(
                    "the tokenizer has no model_max_length; pass max_length= (the text encoder's "
                    "max_position_embeddings, e.g. 77 for CLIP)"
                )
            self.max_length = int(model_max)
        self._pipeline = ImagePipeline(self.image_processor, self.image_preprocessing, self.draft_decode)

    def for_device(self, device) -> "HardNegativeCollator":
        """Settle ``image_preprocessing="auto"`` for the device the model runs on (the device tier on a GPU)."""
        self._pipeline = ImagePipeline(self.image_processor, self.image_preprocessing, self.draft_decode, device)
        return self

    @property
    def image_tier(self) -> str:
        """The tier in use: ``"device"``, ``"cpu"`` or ``"processor"``."""
        return self._pipeline.tier

    # -- rows -> pieces ------------------------------------------------------------------

    def _row_label(self, index: int, row: Mapping[str, Any]) -> str:
        ids = [f"{key}={row[key]!r}" for key in _ROW_ID_FIELDS if key in row and row[key] is not None]
        return f"row {index} of the batch" + (f" ({', '.join(ids)})" if ids else "")

    def _num_negative_images(self, rows: Sequence[Mapping[str, Any]]) -> int:
        if self.num_hard_negative_images is None:  # frozen at the first batch, like k
            self.num_hard_negative_images = count_negative_columns(list(rows[0].keys()), images=True)
        return self.num_hard_negative_images

    def _num_negatives(self, rows: Sequence[Mapping[str, Any]]) -> int:
        if self.num_hard_negatives is not None:
            return self.num_hard_negatives
        # freeze the auto-detected count so every batch of the run has the same k
        self.num_hard_negatives = count_negative_columns(list(rows[0].keys()))
        return self.num_hard_negatives

    def _texts(self, index: int, row: Mapping[str, Any], k: int) -> list[str]:
        texts = []
        for column in [self.caption_column] + [f"negative_{j}" for j in range(1, k + 1)]:
            if column not in row:
                raise KeyError(
                    f"{self._row_label(index, row)} has no column {column!r} (columns: {sorted(row)}); "
                    + ("set caption_column to the caption column" if column == self.caption_column else
                       f"add {k} hard negatives with hf_hardneg.substitution.add_hard_negatives(num_negatives={k}) "
                       "or lower num_hard_negatives")
                )
            text = row[column]
            if not isinstance(text, str):
                raise ValueError(
                    f"{self._row_label(index, row)} has {text!r} in {column!r}, expected a string"
                    + ("" if column == self.caption_column else
                       " (its caption has no keyword to substitute: keep such rows out with "
                       "add_hard_negatives(keep_only_matching=True) or keep_rows_with_keywords)")
                )
            texts.append(text)
        return texts

    def _images(self, index: int, row: Mapping[str, Any], m: int) -> list | None:
        """The row's image and its m hard-negative images; ``None`` when one is corrupt and such rows are skipped."""
        images = [self._image(index, row)]
        for j in range(1, m + 1):
            column = f"negative_image_{j}"
            if column not in row:
                raise KeyError(f"{self._row_label(index, row)} has no column {column!r} (columns: {sorted(row)}); "
                               f"give every row {m} hard-negative images or lower num_hard_negative_images")
            images.append(None if images[0] is None else self._image(index, row, column))
        return None if any(image is None for image in images) else images

    def _image(self, index: int, row: Mapping[str, Any], column: str | None = None):
        column = column or self.image_column
        if column not in row:
            raise KeyError(
                f"{self._row_label(index, row)} has no column {column!r} (columns: {sorted(row)}); "
                "set image_column, and keep the column in the dataset (remove_unused_columns=False)"
            )
        source = row[column]
        try:
            return self._pipeline.open(source)
        except CorruptImageError as err:
            message = (
                f"{self._row_label(index, row)}: cannot decode image {describe_image_source(source)} "
                f"({err.__cause__ or err}). Remove or replace the file, or pass skip_corrupt_images=True "
                "to skip such rows."
            )
            if not self.skip_corrupt_images:
                raise CorruptImageError(message) from err
            logger.warning("skipping %s", message)
            return None

    # -- batch ---------------------------------------------------------------------------------

    def _tokenize(self, texts: list[str]) -> dict[str, torch.Tensor]:
        padding = "max_length" if self.padding == "max_length" else "longest"
        enc = self.tokenizer(texts, padding=padding, truncation=True, max_length=self.max_length,
                             return_tensors="pt")
        input_ids, attention_mask = enc["input_ids"], enc["attention_mask"]
        multiple = self.pad_to_multiple_of
        if padding == "longest" and multiple and multiple > 1:
            # Round up here rather than with the tokenizer's pad_to_multiple_of, which refuses a max_length
            # that is not itself a multiple (CLIP's 77) and would otherwise overshoot it (77 -> 80).
            width = input_ids.shape[1]
            target = min(-(-width // multiple) * multiple, self.max_length)
            if target > width:
                extra = (target - width, 0) if self.tokenizer.padding_side == "left" else (0, target - width)
                input_ids = torch.nn.functional.pad(input_ids, extra, value=self.tokenizer.pad_token_id)
                attention_mask = torch.nn.functional.pad(attention_mask, extra, value=0)
        return {"input_ids": input_ids, "attention_mask": attention_mask}

    def placeholder_batch(self) -> dict[str, Any]:
        """A batch of one blank image and blank texts, marked ``num_placeholder_images=1``.

        For a process whose share of an epoch's short last global batch is empty
        (see :class:`hf_hardneg.data.sampling.GlobalBatchSampler`): it must still
        run the model and join the loss's collectives, but nothing it holds may
        count. The trainer runs the placeholder through the model and leaves it
        out of the loss.
        """
        if self.num_hard_negatives is None:
            raise ValueError("an empty batch cannot tell how many hard negatives a row has; "
                             "set num_hard_negatives on the collator")
        import PIL.Image

        target = processor_target_size(self.image_processor) or {}
        side = int(target.get("shortest_edge") or target.get("height") or 224)
        image = PIL.Image.new("RGB", (int(target.get("width") or side), side))
        batch = {"pixel_values": self.image_processor(images=[image], return_tensors="pt")["pixel_values"]}
        batch.update(self._tokenize([""] * (1 + self.num_hard_negatives)))
        batch["num_hard_negatives"] = self.num_hard_negatives
        if self.num_hard_negative_images:
            batch["negative_pixel_values"] = batch["pixel_values"].repeat(self.num_hard_negative_images, 1, 1, 1)
            batch["num_hard_negative_images"] = self.num_hard_negative_images
        batch["num_placeholder_images"] = 1
        if self.skip_corrupt_images:
            batch["num_skipped_images"] = 0
        return batch

    def __call__(self, rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        if not rows:
            return self.placeholder_batch()
        k, m = self._num_negatives(rows), self._num_negative_images(rows)
        images, negative_images, positives, negatives, skipped = [], [], [], [], 0
        for index, row in enumerate(rows):
            texts = self._texts(index, row, k)  # validate text first: a text error is never skippable
            decoded = self._images(index, row, m)
            if decoded is None:
                skipped += 1
                continue
            images.append(decoded[0])
            negative_images.extend(decoded[1:])
            positives.append(texts[0])
            negatives.extend(texts[1:])
        if not images:
            raise CorruptImageError(
                f"all {len(rows)} images of this batch failed to decode (see the warnings above); "
                "check image_column and the image files"
            )
        # pixel_values first: the Trainer takes the batch size from the first tensor it finds
        batch = self._pipeline.collate(images)
        batch.update(self._tokenize(positives + negatives))
        batch["num_hard_negatives"] = k
        if m:
            batch.update(self._pipeline.collate(negative_images, "negative_pixel_values"))
            batch["num_hard_negative_images"] = m
        if self.skip_corrupt_images:
            batch["num_skipped_images"] = skipped
        return batch
