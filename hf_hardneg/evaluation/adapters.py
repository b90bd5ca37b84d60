"""Benchmark adapters: read each dataset in the schema its authors published.

Each ``load_*`` function takes ``source``: a Hub dataset id (the default), a
local path (a directory in the published raw layout, a ``save_to_disk``
directory, a folder of data files, or a single parquet/json/csv file), or an
already loaded ``datasets.Dataset``. It returns one of the containers of
:mod:`hf_hardneg.evaluation.tasks`.

Schemas (field names as published):

* **SugarCrepe** (7 subsets ``add_att add_obj replace_att replace_obj
  replace_rel swap_att swap_obj``). Raw: ``<subset>.json`` = ``{"0": {"filename",
  "caption", "negative_caption"}, ...}`` over COCO val2017 images. Hub
  (``HuggingFaceM4/SugarCrepe_<subset>``): ``image``, ``tested_labels`` =
  ``[caption, negative_caption]``, ``true_label`` (ClassLabel whose *name* is the
  true caption).
* **ARO** (``VG-Relation``, ``VG-Attribution``, ``COCO-Order``,
  ``Flickr30k-Order``). Raw VG files: ``visual_genome_{relation,attribution}.json``
  lists of ``{image_id, image_path, bbox_x, bbox_y, bbox_w, bbox_h, true_caption,
  false_caption, relation_name | attributes}`` plus ``images/``; the image is
  cropped to the box, as ARO does. Hub (``gowitheflow/ARO-*``): ``image``,
  ``true_caption``, ``false_caption`` and, for the VG sets, ``bbox`` = ``{x, y, w,
  h}``: the image is cropped to it unless it already has the box's size (the
  results' ``notes`` say how many were cropped). The Order sets: ``images``,
  ``correct_caption``, ``hard_text_1..4``. The Order sets' raw form needs spaCy
  to generate its perturbations, so only the published perturbed tables are read.
* **Winoground**: raw, ``examples.jsonl`` rows ``{id, caption_0, caption_1, image_0,
  image_1, tag, secondary_tag, num_main_preds, collapsed_tag}`` and PNGs named
  ``<image_0>.png`` (in ``images/`` or ``images.zip``); or a copy already loaded or
  saved (``save_to_disk``, Parquet, the Hub's table) whose ``image_0``/``image_1``
  columns hold the images. The Hub repo ``facebook/winoground`` is gated (accept
  its licence; ``HF_TOKEN`` from the environment).
* **InpaintCOCO**: through :func:`hf_hardneg.data.load_inpaintcoco` (columns
  ``coco_image``, ``inpaint_image``, ``coco_caption``, ``inpaint_caption``,
  ``concept``).
* **Captioned sets for concept accuracy** (paper Table 2): see
  :data:`CAPTIONED_DATASETS`.
"""

from __future__ import annotations

import json
import logging
import os
import zipfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Mapping, Sequence

from hf_hardneg.data.jsonl import read_jsonl

from .tasks import ClassificationSet, MultipleChoiceSet, PairedSet

logger = logging.getLogger(__name__)

__all__ = [
    "ARO_SUBSETS",
    "CAPTIONED_DATASETS",
    "CaptionedSpec",
    "SUGARCREPE_SUBSETS",
    "load_aro",
    "load_captioned",
    "load_classification",
    "load_coco",
    "load_inpaintcoco_pairs",
    "load_sugarcrepe",
    "load_table",
    "load_winoground",
]

SUGARCREPE_SUBSETS = ("add_att", "add_obj", "replace_att", "replace_obj", "replace_rel", "swap_att", "swap_obj")

ARO_SUBSETS = {
    "VG-Relation": "gowitheflow/ARO-Visual-Relation",
    "VG-Attribution": "gowitheflow/ARO-Visual-Attribution",
    "COCO-Order": "gowitheflow/ARO-COCO-order",
    "Flickr30k-Order": "gowitheflow/ARO-Flickr-Order",
}
_ARO_RAW_FILES = {"VG-Relation": "visual_genome_relation.json", "VG-Attribution": "visual_genome_attribution.json"}

_DATA_FILE_FORMATS = {".parquet": "parquet", ".json": "json", ".jsonl": "json", ".csv": "csv", ".arrow": "arrow"}


# ---------------------------------------------------------------------------
# Generic table loading
# ---------------------------------------------------------------------------


def load_table(source: Any, split: str | None = "test", config: str | None = None):
    """Load one split of a dataset from a ``Dataset``, a local path or a Hub id.

    A local directory written by ``save_to_disk`` is read with ``load_from_disk``;
    a single data file by its extension; any other directory or a Hub id with
    ``load_dataset``. When ``split`` is absent but the source has exactly one
    split, that split is used (local folders of data files load as ``train``).
    """
    import datasets

    if isinstance(source, datasets.Dataset):
        return source
    if isinstance(source, datasets.DatasetDict):
        return _pick_split(source, split, repr(source))
    path = Path(os.fspath(source))
    try:
        if path.exists():
            if path.is_dir() and ((path / "state.json").exists() or (path / "dataset_dict.json").exists()):
                loaded = datasets.load_from_disk(str(path))
                return loaded if isinstance(loaded, datasets.Dataset) else _pick_split(loaded, split, str(path))
            if path.is_file():
                fmt = _DATA_FILE_FORMATS.get(path.suffix.lower())
                if fmt is None:
                    raise ValueError(f"{path}: unsupported file type {path.suffix!r}; use one of {sorted(_DATA_FILE_FORMATS)}")
                return datasets.load_dataset(fmt, data_files=str(path), split="train")
            return _pick_split(datasets.load_dataset(str(path), config), split, str(path))
        return _pick_split(datasets.load_dataset(str(source), config), split, str(source))
    except FileNotFoundError as err:
        raise FileNotFoundError(
            f"cannot load dataset {source!r}: {err}. Pass an existing local path or a Hub dataset id "
            "(offline? set HF_DATASETS_OFFLINE=0 or point to a local copy)") from err


def _pick_split(dataset_dict, split: str | None, where: str):
    names = list(dataset_dict.keys())
    if split in dataset_dict:
        return dataset_dict[split]
    if len(names) == 1:
        return dataset_dict[names[0]]
    raise ValueError(f"{where}: split {split!r} not found; available splits: {names}")


def _require_columns(dataset, columns: Sequence[str], where: str, hint: str = "") -> None:
    missing = [c for c in columns if c not in dataset.column_names]
    if missing:
        raise KeyError(f"{where}: missing column(s) {missing}; found {dataset.column_names}. {hint}".rstrip())


def as_names(value: str | Sequence[str] | None) -> list[str] | None:
    """Subset names as a list; a string (from ``--source TASK:subsets=a,b``) is split at commas."""
    if value is None:
        return None
    if isinstance(value, str):
        return [v.strip() for v in value.split(",") if v.strip()]
    return list(value)


def _first_present(dataset, names: Sequence[str]) -> str | None:
    return next((n for n in names if n in dataset.column_names), None)


class _FileImages(Sequence):
    """Paths of image files, optionally cropped to ``(x, y, w, h)`` boxes when read."""

    def __init__(self, paths: Sequence[str], boxes: Sequence[tuple[float, float, float, float] | None] | None = None):
        self.paths, self.boxes = list(paths), list(boxes) if boxes is not None else None

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        box = self.boxes[i] if self.boxes is not None else None
        if box is None:
            return self.paths[i]
        from hf_hardneg.data.images import open_image

        x, y, w, h = box
        return open_image(self.paths[i]).crop((x, y, x + w, y + h))


def _check_files(paths: Sequence[str], where: str, hint: str) -> None:
    missing = [p for p in dict.fromkeys(paths) if not os.path.exists(p)]
    if missing:
        raise FileNotFoundError(f"{where}: {len(missing)} image file(s) not found, e.g. {missing[0]}. {hint}")


class _ColumnImages(Sequence):
    """Images of one column, one per row; list-valued cells (ARO's ``images``) give their first image."""

    def __init__(self, dataset, column: str):
        from .encoding import undecoded

        self._data = undecoded(dataset.select_columns([column]), column)
        self.column = column

    def __len__(self):
        return len(self._data)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        value = self._data[i][self.column]
        if isinstance(value, (list, tuple)):
            if not value:
                raise ValueError(f"row {i}: column {self.column!r} holds an empty image list")
            value = value[0]
        return value


# ---------------------------------------------------------------------------
# SugarCrepe
# ---------------------------------------------------------------------------


def load_sugarcrepe(
    source: Any = "HuggingFaceM4/SugarCrepe_{subset}",
    subsets: Sequence[str] = SUGARCREPE_SUBSETS,
    images_dir: str | os.PathLike | None = None,
    split: str = "test",
) -> MultipleChoiceSet:
    """SugarCrepe as one multiple-choice set; ``groups`` are the subset names.

    ``source`` is either a directory holding the raw ``<subset>.json`` files
    (then ``images_dir`` is COCO's ``val2017`` folder), or a Hub id / local path
    with ``{subset}`` in it, formatted per subset.
    """
    subsets = as_names(subsets)
    unknown = [s for s in subsets if s not in SUGARCREPE_SUBSETS]
    if unknown:
        raise ValueError(f"unknown SugarCrepe subset(s) {unknown}; known: {list(SUGARCREPE_SUBSETS)}")
    parts = []
    for subset in subsets:
        raw = Path(os.fspath(source)) / f"{subset}.json" if not _is_dataset(source) else None
        if raw is not None and raw.is_file():
            parts.append(_sugarcrepe_raw(raw, subset, images_dir))
        else:
            where = str(source).format(subset=subset) if isinstance(source, (str, os.PathLike)) else source
            parts.append(_sugarcrepe_table(load_table(where, split), subset, str(where)))
    return _concat_multiple_choice(parts)


def _is_dataset(obj) -> bool:
    return type(obj).__module__.startswith("datasets")


def _sugarcrepe_raw(path: Path, subset: str, images_dir) -> MultipleChoiceSet:
    if images_dir is None:
        raise ValueError(f"{path} is SugarCrepe's raw format: pass images_dir= (COCO val2017 images)")
    with open(path, encoding="utf-8") as f:
        data = json.load(f)
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object keyed by example id, got {type(data).__name__}")
    paths, candidates = [], []
    for key, ex in data.items():
        missing = [k for k in ("filename", "caption", "negative_caption") if k not in ex]
        if missing:
            raise KeyError(f"{path}, example {key!r}: missing field(s) {missing}")
        paths.append(os.path.join(os.fspath(images_dir), ex["filename"]))
        candidates.append([ex["caption"], ex["negative_caption"]])
    _check_files(paths, str(path), f"images_dir={images_dir} should be COCO's val2017 folder")
    return _dedup_images(paths, candidates, [0] * len(candidates), [subset] * len(candidates))


def _sugarcrepe_table(ds, subset: str, where: str) -> MultipleChoiceSet:
    import datasets

    _require_columns(ds, ["image", "tested_labels", "true_label"], where)
    feature = ds.features["true_label"]
    candidates, labels = [], []
    for row, (tested, true) in enumerate(zip(ds["tested_labels"], ds["true_label"])):
        tested = list(tested)
        name = feature.int2str(true) if isinstance(feature, datasets.ClassLabel) else true
        if isinstance(name, int):
            raise ValueError(f"{where}, row {row}: true_label is a bare integer without class names; "
                             "cannot tell which caption is the true one")
        if name not in tested:
            raise ValueError(f"{where}, row {row}: true_label {name!r} is not among tested_labels {tested}")
        candidates.append(tested)
        labels.append(tested.index(name))
    return MultipleChoiceSet(_ColumnImages(ds, "image"), list(range(len(ds))), candidates, labels,
                             [subset] * len(ds))


def _dedup_images(paths, candidates, labels, groups, boxes=None, categories=None) -> MultipleChoiceSet:
    """Examples sharing an image file (and crop box) share one encoded image."""
    slot: dict[Any, int] = {}
    unique_paths, unique_boxes, index = [], [], []
    for i, p in enumerate(paths):
        key = (p, boxes[i] if boxes is not None else None)
        if key not in slot:
            slot[key] = len(unique_paths)
            unique_paths.append(p)
            unique_boxes.append(key[1])
        index.append(slot[key])
    images = _FileImages(unique_paths, unique_boxes if boxes is not None else None)
    return MultipleChoiceSet(images, index, candidates, labels, groups, categories)


class _ConcatImages(Sequence):
    def __init__(self, parts: Sequence[Sequence]):
        self.parts = list(parts)
        self.offsets = []
        total = 0
        for p in self.parts:
            self.offsets.append(total)
            total += len(p)
        self.total = total

    def __len__(self):
        return self.total

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        if i < 0:
            i += self.total
        for part, off in zip(reversed(self.parts), reversed(self.offsets)):
            if i >= off:
                return part[i - off]
        raise IndexError(i)


def _concat_multiple_choice(parts: Sequence[MultipleChoiceSet]) -> MultipleChoiceSet:
    if len(parts) == 1:
        return parts[0]
    images = _ConcatImages([p.images for p in parts])
    image_index, candidates, labels, groups, categories = [], [], [], [], []
    any_categories = any(p.categories is not None for p in parts)
    for part, off in zip(parts, images.offsets):
        image_index += [i + off for i in part.image_index]
        candidates += part.candidates
        labels += part.labels
        groups += part.groups
        categories += part.categories if part.categories is not None else part.groups
    skipped: dict[str, int] = {}
    notes: dict[str, Any] = {}
    for part in parts:
        for key, value in part.skipped.items():
            skipped[key] = skipped.get(key, 0) + value
        notes.update(part.notes)
    return MultipleChoiceSet(images, image_index, candidates, labels, groups,
                             categories if any_categories else None, skipped=skipped, notes=notes)


# ---------------------------------------------------------------------------
# ARO
# ---------------------------------------------------------------------------


def load_aro(
    subsets: Sequence[str] | None = None,
    sources: dict[str, Any] | None = None,
    split: str = "test",
) -> MultipleChoiceSet:
    """ARO as one multiple-choice set; ``groups`` are the subset names.

    ``sources`` maps a subset to its source (default: the Hub copies in
    :data:`ARO_SUBSETS`). A VG subset's source may be the raw ARO directory
    holding ``visual_genome_*.json`` and ``images/``. ``subsets`` default: the
    subsets ``sources`` names (so one subset runs alone), else all four.
    ``categories`` are the relation (VG-Relation) or attribute pair
    (VG-Attribution) when known, so the per-relation macro average ARO reports is
    available.
    """
    sources = dict(sources or {})
    subsets = as_names(subsets)
    if subsets is None:
        subsets = [s for s in ARO_SUBSETS if s in sources] or list(ARO_SUBSETS)
        subsets += [s for s in sources if s not in ARO_SUBSETS]  # reported as unknown below
    unknown = [s for s in list(subsets) + list(sources) if s not in ARO_SUBSETS]
    if unknown:
        raise ValueError(f"unknown ARO subset(s) {unknown}; known: {list(ARO_SUBSETS)}")
    parts = []
    for subset in subsets:
        source = sources.get(subset, ARO_SUBSETS[subset])
        raw_name = _ARO_RAW_FILES.get(subset)
        if raw_name and not _is_dataset(source) and (Path(os.fspath(source)) / raw_name).is_file():
            parts.append(_aro_raw(Path(os.fspath(source)), raw_name, subset))
        else:
            parts.append(_aro_table(load_table(source, split), subset, str(source)))
    return _concat_multiple_choice(parts)


def _aro_category(ex: dict, subset: str) -> str:
    if subset == "VG-Relation" and ex.get("relation_name"):
        return str(ex["relation_name"])
    attrs = ex.get("attributes")
    if subset == "VG-Attribution" and isinstance(attrs, (list, tuple)) and len(attrs) >= 2:
        return f"{attrs[0]}_{attrs[1]}"
    return subset


def _aro_raw(root: Path, name: str, subset: str) -> MultipleChoiceSet:
    with open(root / name, encoding="utf-8") as f:
        items = json.load(f)
    paths, boxes, candidates, categories = [], [], [], []
    for i, ex in enumerate(items):
        missing = [k for k in ("image_path", "true_caption", "false_caption") if k not in ex]
        if missing:
            raise KeyError(f"{root / name}, item {i}: missing field(s) {missing}")
        paths.append(str(root / "images" / ex["image_path"]))
        box = tuple(ex.get(k) for k in ("bbox_x", "bbox_y", "bbox_w", "bbox_h"))
        boxes.append(box if all(v is not None for v in box) else None)
        candidates.append([ex["true_caption"], ex["false_caption"]])
        categories.append(_aro_category(ex, subset))
    _check_files(paths, str(root / name), f"expected the ARO images under {root / 'images'}")
    mc = _dedup_images(paths, candidates, [0] * len(items), [subset] * len(items), boxes, categories)
    cropped = sum(b is not None for b in boxes)
    mc.notes[f"{subset} images"] = (f"{cropped} of {len(boxes)} cropped to their bbox (ARO's protocol; raw layout), "
                                    f"{len(boxes) - cropped} without a box used whole")
    return mc


def _aro_table(ds, subset: str, where: str) -> MultipleChoiceSet:
    image_col = _first_present(ds, ["image", "images"])
    if image_col is None:
        raise KeyError(f"{where}: no 'image' or 'images' column; found {ds.column_names}")
    if subset.endswith("-Order"):
        hard = sorted(c for c in ds.column_names if c.startswith("hard_text_"))
        _require_columns(ds, ["correct_caption"], where)
        if not hard:
            raise KeyError(f"{where}: no hard_text_* columns; found {ds.column_names}")
        columns = ["correct_caption", *hard]
        candidates = [list(row) for row in zip(*(ds[c] for c in columns))]
        categories = None
    else:
        _require_columns(ds, ["true_caption", "false_caption"], where)
        candidates = [[t, f] for t, f in zip(ds["true_caption"], ds["false_caption"])]
        extra = [c for c in ("relation_name", "attributes") if c in ds.column_names]
        rows = ds.select_columns(extra).to_list() if extra else [{} for _ in range(len(ds))]
        categories = [_aro_category(r, subset) for r in rows]
        boxes = _aro_boxes(ds, where)
        if boxes is not None:
            images = _BoxCroppedImages(ds, image_col, boxes, where)
            notes = {f"{subset} images": images.describe()}
            return MultipleChoiceSet(images, list(range(len(ds))), candidates, [0] * len(ds), [subset] * len(ds),
                                     categories, notes=notes)
    return MultipleChoiceSet(_ColumnImages(ds, image_col), list(range(len(ds))), candidates, [0] * len(ds),
                             [subset] * len(ds), categories)


def _aro_boxes(ds, where: str) -> list[tuple[float, float, float, float]] | None:
    """The VG boxes of a Hub copy: a ``bbox`` struct ``{x, y, w, h}`` or flat ``bbox_x .. bbox_h`` columns."""
    if "bbox" in ds.column_names:
        boxes = []
        for row, box in enumerate(ds["bbox"]):
            if isinstance(box, Mapping) and all(box.get(k) is not None for k in "xywh"):
                boxes.append(tuple(float(box[k]) for k in "xywh"))
            elif isinstance(box, (list, tuple)) and len(box) == 4 and all(v is not None for v in box):
                boxes.append(tuple(float(v) for v in box))  # [x, y, w, h]
            else:
                raise ValueError(f"{where}, row {row}: bbox {box!r} is not {{x, y, w, h}}; fix the row or drop "
                                 "the bbox column to score uncropped images")
        return boxes
    flat = ["bbox_x", "bbox_y", "bbox_w", "bbox_h"]
    if all(c in ds.column_names for c in flat):
        return [tuple(float(v) for v in row) for row in zip(*(ds[c] for c in flat))]
    return None


class _BoxCroppedImages(Sequence):
    """An image column cropped to ARO's boxes, except rows whose image already has the box's size.

    ARO scores the region of the relation, not the whole scene. Some copies store the
    crop, others the full Visual Genome image with its box: each row's image header
    (not its pixels) is read once to tell which, so the results can say what was done.
    """

    def __init__(self, dataset, column: str, boxes: Sequence[tuple[float, float, float, float]], where: str):
        import io

        import PIL.Image

        self._images = _ColumnImages(dataset, column)
        self.boxes = list(boxes)
        self.crop: list[bool] = []
        for row, box in enumerate(self.boxes):
            value = self._images[row]
            if isinstance(value, PIL.Image.Image):
                size = value.size
            else:
                data = value.get("bytes") if isinstance(value, Mapping) else None
                with PIL.Image.open(io.BytesIO(data) if data else (value.get("path") if isinstance(value, Mapping)
                                                                    else value)) as im:
                    size = im.size
            x, y, w, h = box
            if abs(size[0] - w) <= 1 and abs(size[1] - h) <= 1:
                self.crop.append(False)  # already the box
            elif x >= -1 and y >= -1 and x + w <= size[0] + 1 and y + h <= size[1] + 1:
                self.crop.append(True)
            else:
                raise ValueError(f"{where}, row {row}: bbox {box} does not fit the {size[0]}x{size[1]} image nor "
                                 "match its size; is the bbox column from another copy?")

    def describe(self) -> str:
        cropped = sum(self.crop)
        return (f"{cropped} of {len(self.crop)} cropped to their bbox (ARO's protocol), "
                f"{len(self.crop) - cropped} already cropped (image size = bbox size)")

    def __len__(self):
        return len(self.boxes)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        value = self._images[i]
        if not self.crop[i]:
            return value
        from hf_hardneg.data.images import open_image

        x, y, w, h = self.boxes[i]
        image = value if hasattr(value, "crop") else open_image(value)
        return image.crop((x, y, x + w, y + h))


# ---------------------------------------------------------------------------
# Winoground
# ---------------------------------------------------------------------------


def load_winoground(source: Any = "facebook/winoground", group_by: str = "collapsed_tag",
                    split: str = "test") -> PairedSet:
    """Winoground's 400 examples as a :class:`PairedSet`; ``groups`` from ``group_by`` (tag kind).

    ``source``, in either published form:

    * the raw layout: a folder with ``examples.jsonl`` and the images (an ``images/``
      folder or ``images.zip``; ``data/`` subfolders are searched too);
    * a table with ``image_0``, ``image_1`` (images), ``caption_0``, ``caption_1``: a
      ``Dataset``, a ``save_to_disk`` folder, Parquet/JSON file(s) or a folder of them;
    * a Hub id: its table is loaded, or, where it is not a table, its raw files are downloaded.
    """
    if _is_dataset(source):
        return _winoground_table(load_table(source, split), group_by, "winoground")
    root = Path(os.fspath(source))
    if not root.exists():
        try:
            return _winoground_table(load_table(str(source), split), group_by, str(source))
        except Exception:  # noqa: BLE001 -- offline, gated or not a table: the raw download says which
            root = _download_winoground(str(source))
    examples = next((p for p in (root / "examples.jsonl", root / "data" / "examples.jsonl") if p.is_file()), None)
    if examples is None:
        neither = (f"{root}: neither Winoground's raw layout (examples.jsonl + images) nor a table with image_0, "
                   "image_1, caption_0, caption_1 columns")
        try:
            table = load_table(root, split)
        except Exception as err:  # noqa: BLE001 -- neither layout: one message naming both
            raise FileNotFoundError(f"{neither} ({type(err).__name__}: {err})") from err
        if not {"image_0", "image_1", "caption_0", "caption_1"} <= set(table.column_names):
            raise FileNotFoundError(f"{neither} (as a table it has the columns {table.column_names})")
        return _winoground_table(table, group_by, str(root))
    image_files = _winoground_images(examples.parent)
    paths: list[str] = []
    slot: dict[str, int] = {}
    image0, image1, cap0, cap1, groups = [], [], [], [], []
    for line in read_jsonl(examples):
        ex, where = line.value, f"{examples}, line {line.number}"
        if line.error is not None or not isinstance(ex, dict):
            raise ValueError(f"{where}: not a JSON object ({line.error or type(ex).__name__}); Winoground's "
                             "examples.jsonl holds one object per line")
        missing = [k for k in ("image_0", "image_1", "caption_0", "caption_1") if k not in ex]
        if missing:
            raise KeyError(f"{where}: missing field(s) {missing}")
        for key, target in (("image_0", image0), ("image_1", image1)):
            name = ex[key]
            if name not in image_files:
                raise FileNotFoundError(f"{where}: image {name!r} not found as {name}.png "
                                        f"under {examples.parent}")
            if name not in slot:
                slot[name] = len(paths)
                paths.append(image_files[name])
            target.append(slot[name])
        cap0.append(ex["caption_0"])
        cap1.append(ex["caption_1"])
        groups.append(str(ex.get(group_by, "all")))
    return PairedSet(_FileImages(paths), image0, image1, cap0, cap1, groups,
                     notes={"format": f"raw layout ({examples.name} + PNG images)"})


def _winoground_table(ds, group_by: str, where: str) -> PairedSet:
    """Winoground as a table (the Hub's columns): one row per example, both images in the row."""
    _require_columns(ds, ["image_0", "image_1", "caption_0", "caption_1"], where,
                     "Expected Winoground's table (image_0, image_1, caption_0, caption_1) or its raw layout.")
    groups = ds[group_by] if group_by in ds.column_names else ["all"] * len(ds)
    images = _ConcatImages([_ColumnImages(ds, "image_0"), _ColumnImages(ds, "image_1")])
    n = len(ds)
    return PairedSet(images, list(range(n)), list(range(n, 2 * n)), list(ds["caption_0"]), list(ds["caption_1"]),
                     [str(g) for g in groups], notes={"format": "table (image_0, image_1, caption_0, caption_1)"})


def _winoground_images(folder: Path) -> dict[str, str]:
    """Map image name (file stem) -> path, unzipping ``images.zip`` beside the jsonl once if needed."""
    found = {p.stem: str(p) for p in folder.rglob("*.png")}
    if found:
        return found
    archive = folder / "images.zip"
    if archive.is_file():
        target = folder / "images_extracted"
        if not target.exists():
            with zipfile.ZipFile(archive) as zf:
                zf.extractall(target)
        return {p.stem: str(p) for p in target.rglob("*.png")}
    raise FileNotFoundError(f"{folder}: no Winoground PNG images and no images.zip")


def _download_winoground(repo_id: str) -> Path:
    from huggingface_hub import hf_hub_download

    try:
        jsonl = hf_hub_download(repo_id, "data/examples.jsonl", repo_type="dataset")
        hf_hub_download(repo_id, "data/images.zip", repo_type="dataset")
    except Exception as err:  # gated repo, offline, wrong id: all need the same advice
        raise RuntimeError(
            f"cannot download Winoground from {repo_id!r} ({type(err).__name__}: {err}). The dataset is gated: "
            "accept its licence on the Hub and set HF_TOKEN, or pass a local folder with examples.jsonl and "
            "the images.") from err
    return Path(jsonl).parent


# ---------------------------------------------------------------------------
# InpaintCOCO
# ---------------------------------------------------------------------------


def load_inpaintcoco_pairs(source: Any = "phiyodr/InpaintCOCO", concept: str | None = None,
                           split: str = "test") -> PairedSet:
    """InpaintCOCO as a :class:`PairedSet` (0 = COCO original, 1 = inpainted), grouped by concept.

    ``source`` is anything :func:`hf_hardneg.data.load_inpaintcoco` accepts, or a
    ``Dataset`` in its schema.
    """
    import datasets

    if _is_dataset(source):
        ds = load_table(source, split)
        if concept is not None:
            ds = ds.filter(lambda c: _concept_name(ds, c) == concept, input_columns="concept")
    else:
        from hf_hardneg.data import load_inpaintcoco

        ds = load_inpaintcoco(source, concept=concept, split=split)
    _require_columns(ds, ["coco_image", "inpaint_image", "coco_caption", "inpaint_caption", "concept"], "InpaintCOCO")
    n = len(ds)
    images = _ConcatImages([_ColumnImages(ds, "coco_image"), _ColumnImages(ds, "inpaint_image")])
    feature = ds.features["concept"]
    groups = [feature.int2str(c) if isinstance(feature, datasets.ClassLabel) else str(c) for c in ds["concept"]]
    return PairedSet(images, list(range(n)), list(range(n, 2 * n)), list(ds["coco_caption"]),
                     list(ds["inpaint_caption"]), groups)


def _concept_name(ds, value) -> str:
    import datasets

    feature = ds.features["concept"]
    return feature.int2str(value) if isinstance(feature, datasets.ClassLabel) else str(value)


# ---------------------------------------------------------------------------
# Captioned image datasets (concept accuracy, retrieval)
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class CaptionedSpec:
    """Where a captioned image dataset lives and which columns hold image and caption(s).

    ``subset_column``/``subset``: rows to keep by a column's value (Flickr30k's
    ``split`` column of the Karpathy splits; ``subset="all"`` keeps every row);
    ``selection`` says, after loading, which rows were used.
    """

    source: str | None
    split: str
    image_column: str
    caption_column: str
    image_key_column: str | None = None
    note: str = ""
    subset_column: str | None = None
    subset: str | None = None
    selection: str = ""


#: The generalisation sets of the paper's Table 2, with their published column names.
CAPTIONED_DATASETS: dict[str, CaptionedSpec] = {
    # lmms-lab/flickr30k: 31,783 images, no split column; nlphuji/flickr30k has the Karpathy `split`
    # column (train/val/test), whose test split is the standard 1,000 images
    "flickr30k": CaptionedSpec("lmms-lab/flickr30k", "test", "image", "caption",
                               note="31,783 images, 5 captions each (list column)", subset_column="split",
                               subset="test"),
    "sbu": CaptionedSpec(None, "train", "image", "caption",
                         note="SBU Captions is published as image URLs only (vicenteor/sbu_captions: image_url, "
                              "user_id, caption). Download the images (e.g. with img2dataset) and pass the result "
                              "with an 'image' column as the source."),
    "fashion200k": CaptionedSpec("Marqo/fashion200k", "data", "image", "text"),
    "nasa_earth_instagram": CaptionedSpec("nkasmanoff/nasa_earth_instagram", "train", "image", "text"),
    "oldbookillustrations": CaptionedSpec("gigant/oldbookillustrations", "train", "1600px", "info_alt",
                                          note="captions: the site's alt text; images: the 1600px version"),
}


def load_captioned(name: str, source: Any = None, **overrides) -> tuple[Any, CaptionedSpec]:
    """Load one of :data:`CAPTIONED_DATASETS` (or any source with explicit columns).

    Returns ``(dataset, spec)``; ``overrides`` replace fields of the spec
    (``split``, ``image_column``, ``caption_column``, ``image_key_column``).
    """
    spec = CAPTIONED_DATASETS.get(name)
    if spec is None:
        if source is None:
            raise ValueError(f"unknown captioned dataset {name!r}; known: {sorted(CAPTIONED_DATASETS)} "
                             "(or pass source= with image_column= and caption_column=)")
        spec = CaptionedSpec(None, "train", "image", "caption")
    spec = replace(spec, **overrides)
    source = source if source is not None else spec.source
    if source is None:
        raise ValueError(f"{name}: no default source. {spec.note}")
    ds = load_table(source, spec.split)
    if spec.image_column not in ds.column_names:
        hint = spec.note or "pass image_column= to name the image column"
        if "image_url" in ds.column_names:
            hint = ("this table only has image URLs; download the images and pass a dataset with an image column. "
                    + spec.note)
        raise KeyError(f"{name} ({source}): image column {spec.image_column!r} not found; found {ds.column_names}. {hint}")
    if spec.caption_column not in ds.column_names:
        raise KeyError(f"{name} ({source}): caption column {spec.caption_column!r} not found; found "
                       f"{ds.column_names}. Pass caption_column= to name it.")
    ds, selection = _select_subset(ds, spec, f"{name} ({source})")
    return ds, replace(spec, selection=selection)


def _select_subset(ds, spec: CaptionedSpec, where: str):
    """Keep the rows of ``spec.subset`` by ``spec.subset_column``; say which rows were used."""
    n = len(ds)
    if spec.subset_column is None or spec.subset is None:
        return ds, f"all {n:,} rows"
    if spec.subset == "all":
        return ds, f"all {n:,} rows ({spec.subset_column!r} ignored: subset='all')"
    if spec.subset_column not in ds.column_names:
        logger.warning("%s: no %r column, so all %d rows are used, not the %r subset; use a copy with that "
                       "column (Flickr30k: nlphuji/flickr30k) for the standard split", where, spec.subset_column, n,
                       spec.subset)
        return ds, (f"all {n:,} rows: the source has no {spec.subset_column!r} column, so the {spec.subset!r} "
                    "subset could not be selected")
    values = ds[spec.subset_column]
    keep = [i for i, v in enumerate(values) if v == spec.subset]
    if not keep:
        found = sorted({str(v) for v in values})
        raise ValueError(f"{where}: no row has {spec.subset_column} == {spec.subset!r}; values found: {found}. "
                         "Pass subset= one of them, or subset='all'")
    return ds.select(keep), (f"{spec.subset_column} == {spec.subset!r}: {len(keep):,} of {n:,} rows "
                             f"({n - len(keep):,} of other subsets left out)")


def load_coco(coco_dir: str | os.PathLike, split: str = "val2017"):
    """COCO captions of ``split`` from an official layout: ``annotations/captions_<split>.json`` and the images
    in ``<split>/`` or ``images/<split>/``. One row per caption (see :func:`hf_hardneg.data.load_coco_captions`)."""
    from hf_hardneg.data import load_coco_captions

    root = Path(os.fspath(coco_dir))
    annotations = root / "annotations" / f"captions_{split}.json"
    if not annotations.is_file():
        raise FileNotFoundError(f"{annotations} not found: coco_dir should hold annotations/captions_{split}.json "
                                f"and the {split} images")
    images = next((p for p in (root / split, root / "images" / split) if p.is_dir()), None)
    if images is None:
        raise FileNotFoundError(f"no image folder {root / split} or {root / 'images' / split}")
    return load_coco_captions(annotations, images)


# ---------------------------------------------------------------------------
# Zero-shot classification
# ---------------------------------------------------------------------------

#: Default zero-shot set: CIFAR-10's test split (10 classes, 10,000 images).
DEFAULT_CLASSIFICATION = ("uoft-cs/cifar10", "test", "img", "label")


def load_classification(
    source: Any = DEFAULT_CLASSIFICATION[0],
    split: str = DEFAULT_CLASSIFICATION[1],
    image_column: str | None = None,
    label_column: str | None = None,
    class_names: Sequence[str] | None = None,
) -> ClassificationSet:
    """An image classification dataset with a ``ClassLabel`` column (or explicit ``class_names``)."""
    import datasets

    ds = load_table(source, split)
    image_column = image_column or _first_present(ds, ["image", "img"])
    label_column = label_column or _first_present(ds, ["label", "labels", "fine_label"])
    if image_column is None or label_column is None:
        raise KeyError(f"{source}: cannot find image/label columns in {ds.column_names}; "
                       "pass image_column= and label_column=")
    _require_columns(ds, [image_column, label_column], str(source))
    feature = ds.features[label_column]
    if class_names is None:
        if not isinstance(feature, datasets.ClassLabel):
            raise ValueError(f"{source}: column {label_column!r} is not a ClassLabel; pass class_names=")
        class_names = feature.names
    return ClassificationSet(_ColumnImages(ds, image_column), [int(y) for y in ds[label_column]], list(class_names))

