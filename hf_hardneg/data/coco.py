"""COCO caption annotations as a ``datasets.Dataset`` (one row per caption), and caption files for the CLI.

COCO's ``captions_*.json`` keeps images, licences and captions in three tables joined by
ids; training wants one row per (image, caption) with the licence next to it, so that
whoever redistributes a subset can honour each image's Flickr licence.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from os import PathLike
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from hf_hardneg.data.jsonl import read_jsonl, read_utf8

if TYPE_CHECKING:
    import datasets

__all__ = [
    "load_coco_captions",
    "read_captions",
    "load_example_captions",
    "CaptionRecord",
    "COCO_CAPTION_FEATURES",
    "EXAMPLE_CAPTIONS",
]

#: A few dozen COCO-style captions written for this project (captions only, no images), in
#: COCO annotation format: for demos, docs and ``hf-hardneg stats --captions``.
EXAMPLE_CAPTIONS = Path(__file__).with_name("example_captions.json")

logger = logging.getLogger(__name__)

#: column order and types of :func:`load_coco_captions`
COCO_CAPTION_FEATURES = {
    "image": "image",
    "caption": "string",
    "image_id": "int64",
    "caption_id": "int64",
    "license": "int64",
    "license_name": "string",
    "license_url": "string",
    "file_name": "string",
    "coco_url": "string",
    "flickr_url": "string",
}


def _features() -> "datasets.Features":
    from datasets import Features, Image, Value

    return Features({k: Image() if v == "image" else Value(v) for k, v in COCO_CAPTION_FEATURES.items()})


def _read_json(path: Path) -> Any:
    if not path.is_file():
        raise FileNotFoundError(f"caption file not found: {path}")
    try:
        with path.open(encoding="utf-8") as f:
            return json.load(f)
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON (line {err.lineno}, column {err.colno}): {err.msg}") from None
    except UnicodeDecodeError as err:
        raise ValueError(f"{path}: not UTF-8 text ({err.reason} at byte {err.start})") from None


def _coco_tables(data: Any, path: Path) -> tuple[list[Mapping], list[Mapping], list[Mapping]]:
    if not isinstance(data, Mapping) or not isinstance(data.get("annotations"), list):
        raise ValueError(
            f"{path}: not a COCO caption file: expected a JSON object with an 'annotations' list "
            "(as in captions_train2017.json)"
        )
    images, licenses = data.get("images", []), data.get("licenses", [])
    if not isinstance(images, list) or not isinstance(licenses, list):
        raise ValueError(f"{path}: 'images' and 'licenses' must be lists")
    if not data["annotations"]:
        raise ValueError(f"{path}: the 'annotations' list is empty, so there are no captions to train or evaluate "
                         "on; pass a COCO captions file such as captions_train2017.json")
    return data["annotations"], images, licenses


def _field(entry: Any, key: str, kind: type, path: Path, where: str) -> Any:
    if not isinstance(entry, Mapping):
        raise ValueError(f"{path}: {where} is a {type(entry).__name__}, expected a JSON object")
    if key not in entry:
        raise ValueError(f"{path}: {where} has no {key!r} field")
    value = entry[key]
    if kind is int and (isinstance(value, bool) or not isinstance(value, int)):
        raise ValueError(f"{path}: {where} field {key!r} must be an integer, got {value!r}")
    if kind is str and not isinstance(value, str):
        raise ValueError(f"{path}: {where} field {key!r} must be a string, got {value!r}")
    return value


def _invalid_caption(caption: Any) -> str | None:
    """Why ``caption`` cannot be used, or None when it can."""
    if caption is None:
        return "missing (null)"
    if not isinstance(caption, str):
        return f"a {type(caption).__name__}, not a string"
    if not caption.strip():
        return "empty or whitespace only"
    return None


def load_coco_captions(
    annotations_json: str | PathLike[str],
    images_dir: str | PathLike[str],
    *,
    on_invalid: Literal["raise", "skip"] = "raise",
    verify_files: bool = True,
    strip_captions: bool = True,
) -> "datasets.Dataset":
    """Load a COCO ``captions_*.json`` as a ``Dataset`` with one row per caption.

    Columns: ``image`` (``datasets.Image``, decoded lazily from ``images_dir/file_name``),
    ``caption``, ``image_id``, ``caption_id``, ``license`` with its ``license_name`` and
    ``license_url``, ``file_name``, ``coco_url``, ``flickr_url``. Rows follow the order of
    the file's ``annotations``.

    Args:
        on_invalid: a caption that is null, not a string or blank raises an error naming
            the file and annotation (``"raise"``), or is left out, counted and logged (``"skip"``).
        verify_files: check that every referenced image exists under ``images_dir``, so a
            wrong folder fails here rather than in the middle of training.
        strip_captions: remove leading/trailing whitespace (many COCO captions end in a space).

    >>> ds = load_coco_captions("coco/annotations/captions_val2017.json", "coco/val2017")  # doctest: +SKIP
    """
    from datasets import Dataset

    if on_invalid not in ("raise", "skip"):
        raise ValueError(f"on_invalid must be 'raise' or 'skip', got {on_invalid!r}")
    path = Path(annotations_json)
    images_dir = Path(images_dir)
    if not images_dir.is_dir():
        raise FileNotFoundError(f"images folder not found: {images_dir} (the folder holding the COCO .jpg files)")
    annotations, images, licenses = _coco_tables(_read_json(path), path)

    license_table: dict[int, Mapping] = {}
    for i, lic in enumerate(licenses):
        license_table[_field(lic, "id", int, path, f"licenses[{i}]")] = lic
    image_table: dict[int, Mapping] = {}
    for i, image in enumerate(images):
        image_id = _field(image, "id", int, path, f"images[{i}]")
        _field(image, "file_name", str, path, f"images[{i}]")
        image_table[image_id] = image

    columns: dict[str, list] = {name: [] for name in COCO_CAPTION_FEATURES}
    skipped: list[str] = []
    unknown_licenses: set[int] = set()
    for i, ann in enumerate(annotations):
        where = f"annotations[{i}]"
        caption_id = _field(ann, "id", int, path, where)
        image_id = _field(ann, "image_id", int, path, where)
        caption = _field(ann, "caption", object, path, where)
        problem = _invalid_caption(caption)
        if problem is not None:
            if on_invalid == "raise":
                raise ValueError(
                    f"{path}: {where} (caption id {caption_id}, image {image_id}): caption is {problem}; "
                    "fix the file, or pass on_invalid='skip' (train.py: --skip_invalid_captions) to leave such "
                    "captions out (skips are counted and reported)"
                )
            skipped.append(f"{where} (id {caption_id}): {problem}")
            continue
        image = image_table.get(image_id)
        if image is None:
            raise ValueError(f"{path}: {where} (caption id {caption_id}) refers to image {image_id}, "
                             "which is not in the file's 'images' list")
        license_id = image.get("license")
        lic = license_table.get(license_id, {})
        if license_id is not None and not lic:
            unknown_licenses.add(license_id)
        columns["image"].append(str(images_dir / image["file_name"]))
        columns["caption"].append(caption.strip() if strip_captions else caption)
        columns["image_id"].append(image_id)
        columns["caption_id"].append(caption_id)
        columns["license"].append(license_id)
        columns["license_name"].append(lic.get("name"))
        columns["license_url"].append(lic.get("url"))
        columns["file_name"].append(image["file_name"])
        columns["coco_url"].append(image.get("coco_url"))
        columns["flickr_url"].append(image.get("flickr_url"))

    if skipped:
        logger.warning("%s: skipped %d invalid caption(s): %s%s", path, len(skipped), "; ".join(skipped[:5]),
                       " ..." if len(skipped) > 5 else "")
    if unknown_licenses:
        logger.warning("%s: licence id(s) %s are not in the 'licenses' table; their name and url are left empty",
                       path, sorted(unknown_licenses))
    if verify_files:
        missing = sorted({p for p in columns["image"] if not Path(p).is_file()})
        if missing:
            raise FileNotFoundError(
                f"{len(missing)} image file(s) referenced by {path} are not in {images_dir}, e.g. {missing[:3]}; "
                "pass the folder that holds them (e.g. .../val2017), or verify_files=False to load anyway"
            )
    return Dataset.from_dict(columns, features=_features())


@dataclass(frozen=True)
class CaptionRecord:
    """One caption read by :func:`read_captions`; ``caption`` may be invalid (the caller counts it)."""

    caption: Any
    where: str  # "annotations[12] (id 345)" or "line 7": how to find it in the file
    image_id: int | None = None
    caption_id: int | None = None


def read_captions(path: str | PathLike[str]) -> list[CaptionRecord]:
    """Read captions from a COCO annotation JSON, a JSON list, JSON Lines or plain text.

    * ``.json``: a COCO file (``{"annotations": [{"caption": ...}, ...]}``) or a list of strings
      or of objects with a ``caption`` field;
    * ``.jsonl``: one object with a ``caption`` field (or a JSON string) per line;
    * anything else: one caption per line (blank lines are kept, so they are counted as invalid).

    Values are returned as found, so that the caller can report invalid ones by row; malformed
    files raise ``ValueError`` naming the file and line.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".json":
        data = _read_json(path)
        if isinstance(data, Mapping):
            annotations, _, _ = _coco_tables(data, path)
            records = []
            for i, ann in enumerate(annotations):
                where = f"annotations[{i}]"
                caption = _field(ann, "caption", object, path, where)
                caption_id = ann.get("id")
                records.append(CaptionRecord(caption, f"{where} (id {caption_id})", ann.get("image_id"), caption_id))
            return records
        if isinstance(data, list):
            return [
                CaptionRecord(item.get("caption") if isinstance(item, Mapping) else item, f"item {i}",
                              item.get("image_id") if isinstance(item, Mapping) else None,
                              item.get("id", item.get("caption_id")) if isinstance(item, Mapping) else None)
                for i, item in enumerate(data)
            ]
        raise ValueError(f"{path}: expected a COCO object or a list of captions, got {type(data).__name__}")
    if not path.is_file():
        raise FileNotFoundError(f"caption file not found: {path}")
    if suffix == ".jsonl":
        records = []
        for line in read_jsonl(path):
            item, where = line.value, f"line {line.number}"
            if line.error is not None:
                raise ValueError(f"{path}: {where} is not valid JSON (column {line.error.colno}): {line.error.msg}")
            if isinstance(item, Mapping):
                records.append(CaptionRecord(item.get("caption"), where, item.get("image_id"),
                                             item.get("id", item.get("caption_id"))))
            else:
                records.append(CaptionRecord(item, where))
        return records
    lines = read_utf8(path, encoding="utf-8").splitlines()
    return [CaptionRecord(line, f"line {n}") for n, line in enumerate(lines, start=1)]


def load_example_captions() -> list[str]:
    """The bundled example captions (:data:`EXAMPLE_CAPTIONS`) as a list of strings."""
    return [r.caption for r in read_captions(EXAMPLE_CAPTIONS)]
