"""Image-caption data made ready for training: loading, column checks, concepts, image decoding.

One module does this for :class:`~hf_hardneg.trainer.HardNegCLIPTrainer`, ``train.py``
and the demo, so a dataset is checked and prepared the same way whichever way it
arrives:

* :func:`load_raw_data` -- a COCO layout, a Hub dataset, a dataset saved to disk or
  one data file (CSV, JSON Lines, Parquet, Arrow), plain or streaming;
* :func:`prepare_dataset` -- the columns named (one error naming the missing column
  and the flag or argument that sets it), the concepts applied (the paper's
  per-concept subset, plus ``negative_1..k``; see :func:`apply_concepts`), a size
  cap, and the image column left undecoded for the collator;
* :func:`load_training_data` -- both, for train.py's :class:`ImageCaptionDataArguments`.
"""

from __future__ import annotations

import glob
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hf_hardneg.collator import count_negative_columns

logger = logging.getLogger(__name__)

__all__ = [
    "ImageCaptionDataArguments",
    "apply_concepts",
    "load_raw_data",
    "load_training_data",
    "needs_concepts",
    "prepare_dataset",
    "prepare_image_column",
]

#: --dataset_path suffix -> the packaged `datasets` builder that reads such files
_DATA_FILE_BUILDERS = {".csv": "csv", ".json": "json", ".jsonl": "json", ".parquet": "parquet", ".arrow": "arrow"}


@dataclass
class ImageCaptionDataArguments:
    """Where image-caption pairs come from and how they become training rows (train.py's data flags)."""

    coco_captions_json: str | None = field(
        default=None, metadata={"help": "COCO captions annotation file, e.g. annotations/captions_train2017.json."})
    coco_images_dir: str | None = field(
        default=None, metadata={"help": "Folder with the COCO images named in --coco_captions_json."})
    eval_coco_captions_json: str | None = field(
        default=None, metadata={"help": "COCO captions file for the evaluation loss (e.g. captions_val2017.json)."})
    eval_coco_images_dir: str | None = field(
        default=None, metadata={"help": "Folder with the images of --eval_coco_captions_json."})
    dataset_name: str | None = field(
        default=None, metadata={"help": "A Hub dataset id (or a local folder/script-free dataset load_dataset reads)."})
    dataset_config_name: str | None = field(default=None, metadata={"help": "Configuration of --dataset_name."})
    dataset_path: str | None = field(
        default=None, metadata={"help": "A dataset saved with save_to_disk, a folder of data files, or one "
                                         ".csv/.json/.jsonl/.parquet/.arrow file (a glob such as 'data/*.parquet' "
                                         "works too)."})
    train_split: str = field(default="train", metadata={"help": "Split to train on."})
    eval_split: str | None = field(default=None, metadata={"help": "Split for the evaluation loss (none by default)."})
    image_column: str = field(
        default="image", metadata={"help": "Column with the images (datasets Image feature or file paths)."})
    caption_column: str = field(default="caption", metadata={"help": "Column with the (positive) captions."})
    streaming: bool = field(
        default=False, metadata={"help": "Stream the dataset instead of downloading it; needs --max_steps."})
    max_train_samples: int | None = field(
        default=None, metadata={"help": "Keep only the first N training rows (after concept filtering)."})
    max_eval_samples: int | None = field(
        default=None, metadata={"help": "Keep only the first N evaluation rows (after concept filtering)."})
    preprocessing_num_workers: int | None = field(
        default=None, metadata={"help": "Processes for the substitution pass over a non-streaming dataset."})
    paired_edits: bool = field(
        default=False,
        metadata={"help": "The data are original/edited image pairs (InpaintCOCO's layout by default): each pair "
                          "trains as rows whose hard negatives are the other side's caption (negative_1) and image "
                          "(negative_image_1). --image_column/--caption_column name the original side."})
    edited_image_column: str = field(
        default="inpaint_image", metadata={"help": "With --paired_edits: the column of the edited images."})
    edited_caption_column: str = field(
        default="inpaint_caption", metadata={"help": "With --paired_edits: the captions true for the edited images."})
    paired_rows: str = field(
        default="both", metadata={"help": "With --paired_edits: which rows a pair gives: both, original (the "
                                          "photograph against the edit) or edited (the edit against the photograph).",
                                  "choices": ["both", "original", "edited"]})
    skip_invalid_captions: bool = field(
        default=False, metadata={"help": "Leave out COCO captions that are null, blank or not text (counted and "
                                         "logged) instead of stopping at the first one with its file and row."})

    @property
    def prepared_columns(self) -> tuple[str, str]:
        """The image and caption columns of the prepared rows (``--paired_edits`` makes its own)."""
        return ("image", "caption") if self.paired_edits else (self.image_column, self.caption_column)


def prepare_image_column(dataset: Any, image_column: str = "image") -> Any:
    """Switch a ``datasets`` Image column to ``decode=False`` so the collator decodes it.

    Decoding in the collator (inside DataLoader workers) lets JPEGs be draft-decoded
    at the model's input size, and lets a corrupt file be named or skipped; with
    ``decode=True`` the dataset decodes at full size and a corrupt file fails inside
    ``datasets`` before the collator can say which row it was. A cheap change of
    the feature only: the stored bytes/paths are untouched.
    """
    features = getattr(dataset, "features", None)
    if not features or image_column not in features:
        return dataset
    from datasets import Image

    feature = features[image_column]
    if isinstance(feature, Image) and feature.decode:
        return dataset.cast_column(image_column, Image(decode=False))
    return dataset


def apply_concepts(dataset: Any, args: Any, caption_column: str = "caption",
                   num_proc: int | None = None) -> Any:
    """Apply ``args.concepts`` to a dataset: the paper's per-concept subset, plus hard negatives for k > 0.

    Keeps the rows whose caption holds a keyword of one of the concepts and, with
    ``args.num_hard_negatives = k > 0``, adds ``negative_1..negative_k`` drawn with
    ``args.substitution_seed`` (fixed per row, so a resumed run sees the same
    negatives). Without concepts the dataset is returned unchanged.
    """
    if dataset is None or not args.concepts:
        return dataset
    from hf_hardneg.concepts import resolve_concepts
    from hf_hardneg.substitution import add_hard_negatives, keep_rows_with_keywords

    concepts = resolve_concepts(args.concepts)
    if args.num_hard_negatives > 0:
        out = add_hard_negatives(dataset, concepts, num_negatives=args.num_hard_negatives,
                                 caption_column=caption_column, seed=args.substitution_seed,
                                 keep_only_matching=True, num_proc=num_proc)
    else:
        out = keep_rows_with_keywords(dataset, concepts, caption_column=caption_column, num_proc=num_proc)
    if hasattr(out, "__len__") and len(out) == 0:
        raise ValueError(
            f"none of the {len(dataset)} captions in column {caption_column!r} holds a keyword of the concepts "
            f"{[c.name for c in concepts]}, so there is nothing to train on; check --caption_column (is it the "
            "caption text?) and --concepts (keywords match whole words, e.g. 'red' but not 'reddish')")
    return out


def needs_concepts(dataset: Any, args: Any) -> bool:
    """True when ``args.concepts`` still has to be applied to ``dataset``.

    With k > 0 that is when the rows lack their negatives; with k = 0 (classic
    training) the rows are always restricted to the concepts' subset, so a classic
    run and a hard-negative run with the same ``concepts`` see the same captions.
    """
    columns = getattr(dataset, "column_names", None)
    if not args.concepts or columns is None:
        return False
    return args.num_hard_negatives == 0 or count_negative_columns(columns) < args.num_hard_negatives


def prepare_dataset(dataset: Any, args: Any, *, image_column: str | None = "image", caption_column: str = "caption",
                    role: str = "training", name_flags: bool = True, num_proc: int | None = None,
                    limit: int | None = None, source: str = "") -> Any:
    """Check the columns, apply ``args.concepts`` where still needed, cap at ``limit`` rows, leave images undecoded.

    ``args`` is a :class:`~hf_hardneg.config.HardNegCLIPConfig`. Errors name the missing
    column and what sets it: a train.py flag (``name_flags=True``) or the trainer's
    argument. ``image_column=None`` skips the image-column check (a custom collator may
    read other columns). Applying twice is harmless: rows that already carry their
    negatives are left as they are.
    """
    import datasets

    from hf_hardneg.substitution import CaptionColumnError

    if dataset is None:
        return None
    columns = getattr(dataset, "column_names", None)
    if isinstance(columns, list):
        for what, column in (("image_column", image_column), ("caption_column", caption_column)):
            if column is not None and column not in columns:
                how = f"--{what}" if name_flags else what
                fix = "" if name_flags else f". Pass {what}= to HardNegCLIPTrainer (train.py: --{what})"
                raise ValueError(f"{role} data has no column {column!r} ({how}); its columns are {columns}{fix}")
        k = args.num_hard_negatives
        if k > 0 and not args.concepts and count_negative_columns(columns) < k:
            raise ValueError(f"--num_hard_negatives {k} but the {role} data has {count_negative_columns(columns)} "
                             "negative_* columns; pass --concepts to generate them")
        m = getattr(args, "num_hard_negative_images", 0)
        if m > count_negative_columns(columns, images=True):
            raise ValueError(f"--num_hard_negative_images {m} but the {role} data has "
                             f"{count_negative_columns(columns, images=True)} negative_image_* columns; give the "
                             "images that do not match each caption in negative_image_1..m, or train on "
                             "original/edited pairs with --paired_edits")
    if needs_concepts(dataset, args):
        logger.info("applying concepts %s (keyword subset, %d hard negatives per row)", args.concepts,
                    args.num_hard_negatives)
        try:
            dataset = apply_concepts(dataset, args, caption_column, num_proc=num_proc)
        except CaptionColumnError as err:
            raise CaptionColumnError(f"{role} data{' ' + source if source else ''}: {err}") from err
    if limit is not None:
        if isinstance(dataset, datasets.IterableDataset):
            dataset = dataset.take(limit)
        else:
            dataset = dataset.select(range(min(limit, len(dataset))))
    return prepare_image_column(dataset, image_column or "image")


def _source_name(data_args: ImageCaptionDataArguments) -> str:
    """The flag and value the data came from, for error messages."""
    for flag, value in (("--coco_captions_json", data_args.coco_captions_json),
                        ("--dataset_name", data_args.dataset_name), ("--dataset_path", data_args.dataset_path)):
        if value:
            return f"({flag} {value})"
    return ""


def load_raw_data(data_args: ImageCaptionDataArguments) -> tuple[Any, Any]:
    """``(train, eval-or-None)`` as the source holds them, before any concept filtering."""
    import datasets

    from hf_hardneg.data import load_coco_captions

    sources = [flag for flag, value in (("--coco_captions_json/--coco_images_dir",
                                         data_args.coco_captions_json or data_args.coco_images_dir),
                                        ("--dataset_name", data_args.dataset_name),
                                        ("--dataset_path", data_args.dataset_path)) if value]
    if len(sources) > 1:
        raise ValueError(f"training data given twice ({' and '.join(sources)}); pass one source: a COCO layout, "
                         "--dataset_name, or --dataset_path")
    if data_args.coco_captions_json or data_args.coco_images_dir:
        if not (data_args.coco_captions_json and data_args.coco_images_dir):
            raise ValueError("a COCO layout needs both --coco_captions_json and --coco_images_dir")
        on_invalid = "skip" if data_args.skip_invalid_captions else "raise"
        train = load_coco_captions(data_args.coco_captions_json, data_args.coco_images_dir, on_invalid=on_invalid)
        evaluation = None
        if data_args.eval_coco_captions_json:
            if not data_args.eval_coco_images_dir:
                raise ValueError("--eval_coco_captions_json needs --eval_coco_images_dir")
            evaluation = load_coco_captions(data_args.eval_coco_captions_json, data_args.eval_coco_images_dir,
                                            on_invalid=on_invalid)
        return train, evaluation

    source = data_args.dataset_name or data_args.dataset_path
    if not source:
        raise ValueError("no training data: pass --coco_captions_json and --coco_images_dir, "
                         "or --dataset_name / --dataset_path")
    saved_to_disk = data_args.dataset_path and any(
        Path(data_args.dataset_path, marker).is_file() for marker in ("dataset_dict.json", "state.json"))
    builder = _DATA_FILE_BUILDERS.get(Path(data_args.dataset_path).suffix.lower()) if data_args.dataset_path else None
    if builder is not None and not saved_to_disk:
        # load_dataset(path) only resolves folders and Hub ids; one file needs its format's builder
        if not glob.glob(data_args.dataset_path):
            raise FileNotFoundError(f"--dataset_path {data_args.dataset_path}: no such file")
        loaded = datasets.load_dataset(builder, data_files=data_args.dataset_path, streaming=data_args.streaming)
    elif saved_to_disk:
        loaded = datasets.load_from_disk(data_args.dataset_path)
        if data_args.streaming:
            loaded = (loaded.to_iterable_dataset() if isinstance(loaded, datasets.Dataset)
                      else datasets.IterableDatasetDict({k: v.to_iterable_dataset() for k, v in loaded.items()}))
    else:
        loaded = datasets.load_dataset(source, data_args.dataset_config_name, streaming=data_args.streaming)
    if isinstance(loaded, (datasets.Dataset, datasets.IterableDataset)):
        if data_args.eval_split:
            raise ValueError(f"{source} has no splits, so --eval_split {data_args.eval_split!r} cannot be used")
        return loaded, None

    def split(name):
        if name not in loaded:
            raise ValueError(f"{source} has no split {name!r}; its splits are {list(loaded)}")
        return loaded[name]

    return split(data_args.train_split), (split(data_args.eval_split) if data_args.eval_split else None)


def load_training_data(data_args: ImageCaptionDataArguments, config: Any) -> tuple[Any, Any]:
    """``(train_dataset, eval_dataset_or_None)`` loaded and prepared (:func:`prepare_dataset`) for the trainer.

    Substitutions are computed once, on the main process first; the others then read
    the ``datasets`` cache.
    """
    train, evaluation = load_raw_data(data_args)
    num_proc = None if data_args.streaming else data_args.preprocessing_num_workers
    common = dict(image_column=data_args.image_column, caption_column=data_args.caption_column,
                  num_proc=num_proc, source=_source_name(data_args))
    if data_args.paired_edits:
        from hf_hardneg.data.paired_edits import paired_edit_rows

        def rows(pairs):
            return None if pairs is None else paired_edit_rows(
                pairs, original_image_column=data_args.image_column, original_caption_column=data_args.caption_column,
                edited_image_column=data_args.edited_image_column,
                edited_caption_column=data_args.edited_caption_column, pairing=data_args.paired_rows)

        train, evaluation = rows(train), rows(evaluation)
        common.update(zip(("image_column", "caption_column"), data_args.prepared_columns))
    with config.main_process_first(desc="hard negatives"):
        train = prepare_dataset(train, config, role="training", limit=data_args.max_train_samples, **common)
        if evaluation is not None:
            evaluation = prepare_dataset(evaluation, config, role="evaluation", limit=data_args.max_eval_samples,
                                         **common)
    return train, evaluation
