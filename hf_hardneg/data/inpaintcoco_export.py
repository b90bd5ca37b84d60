"""Read and check a raw InpaintCOCO annotation export before anything is published.

The annotation tool of the paper (appendix A) leaves behind a folder of inpainted
images and one table row per accepted edit. Publishing that data has two risks this
module guards against: a broken row silently shrinking or corrupting the benchmark,
and a photograph whose Flickr licence forbids derivative works (COCO licence ids 3
and 6) being republished as an edited copy. Every row is therefore either turned into
a :class:`Sample` or rejected with a named :data:`SKIP_REASONS` entry and a message
that names the row and the fix; the builder decides whether rejections are fatal
(default) or counted skips (``--skip-invalid``).

Raw export format (also documented in ``dataset_scripts/inpaintcoco/README.md``)::

    SOURCE/
      annotations.csv | annotations.jsonl   one row per sample (columns below)
      <inpainted images>                    anywhere below SOURCE; rows name them relative to SOURCE
      coco/annotations/captions_val2017.json   COCO licences, Flickr/COCO URLs, captions
      coco/annotations/instances_val2017.json  optional: categories -> super-categories
      coco/val2017/*.jpg                        the original photographs (or coco/images/val2017)

Required columns: ``coco_image_id, concept, coco_caption, inpaint_caption,
inpaint_file_name, quality, mask_prompt, inpaint_prompt``. Optional: ``sample_id``
(default ``<concept>-<12-digit image id>-<n>``), ``coco_annotation_id`` or
``coco_category`` (the changed object; otherwise it is read off the masking prompt), and
the provenance columns of :data:`PROVENANCE_COLUMNS` (mask file, mask and inpainting
settings, seed, annotator, duration), which are carried into the published rows.
"""

from __future__ import annotations

import csv
import json
import re
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

import PIL.Image

from hf_hardneg.data.inpaintcoco import INPAINTCOCO_CONCEPTS, INPAINTCOCO_QUALITIES, NO_DERIVS_LICENSE_IDS
from hf_hardneg.data.jsonl import read_jsonl

__all__ = [
    "OPTIONAL_COLUMNS",
    "PROVENANCE_COLUMNS",
    "REQUIRED_COLUMNS",
    "SKIP_REASONS",
    "CocoIndex",
    "InpaintCOCOBuildError",
    "RawRow",
    "RowProblem",
    "Sample",
    "check_rows",
    "find_table",
    "format_problems",
    "is_no_derivs",
    "parse_number",
    "read_table",
    "same_caption",
]

REQUIRED_COLUMNS: tuple[str, ...] = (
    "coco_image_id",
    "concept",
    "coco_caption",
    "inpaint_caption",
    "inpaint_file_name",
    "quality",
    "mask_prompt",
    "inpaint_prompt",
)
# How an edit was made (the annotation tool writes all of them): column -> type of its value.
# Each is optional; a blank value is null in the published row. ``mask_file_name`` names the
# mask image relative to the export folder, like ``inpaint_file_name``.
PROVENANCE_COLUMNS: dict[str, type] = {
    "mask_file_name": Path,
    "mask_threshold": float,
    "mask_dilate_x": int,
    "mask_dilate_y": int,
    "mask_model": str,
    "inpaint_model": str,
    "inpaint_seed": int,
    "guidance_scale": float,
    "num_inference_steps": int,
    "annotator": str,
    "annotation_seconds": float,
}
OPTIONAL_COLUMNS: tuple[str, ...] = ("sample_id", "coco_annotation_id", "coco_category", *PROVENANCE_COLUMNS)

# Why a row can be rejected; stable identifiers used in the printed summary and the JSON report.
SKIP_REASONS: dict[str, str] = {
    "unreadable_row": "the row cannot be parsed (bad JSON, wrong number of CSV fields, non-integer id or number)",
    "unknown_concept": "concept is not object, color or size",
    "unknown_coco_id": "coco_image_id is not an image of captions_val2017.json",
    "noderivs_license": "the photograph's licence forbids derivatives (COCO licence 3 or 6)",
    "empty_caption": "coco_caption or inpaint_caption is empty",
    "unchanged_caption": "inpaint_caption equals coco_caption",
    "invalid_quality": "quality is not 'very good' or 'okay'",
    "unknown_object": "coco_annotation_id / coco_category does not name an object of that image",
    "missing_image": "the inpainted image, its mask or the original image file does not exist",
    "corrupt_image": "an image file cannot be decoded",
    "duplicate_sample": "same sample_id, inpainted file, or (image, captions) as an earlier row",
}

# Names annotators use for COCO categories (the paper's Table 3 spells some differently
# from COCO) -> COCO category name. Used only to read the changed object off a mask prompt.
_CATEGORY_ALIASES: dict[str, str] = {
    "motorbike": "motorcycle",
    "aeroplane": "airplane",
    "plane": "airplane",
    "sofa": "couch",
    "tv monitor": "tv",
    "television": "tv",
    "cellphone": "cell phone",
    "mobile phone": "cell phone",
    "hair dryer": "hair drier",
    "doughnut": "donut",
    "ball": "sports ball",
    "racket": "tennis racket",
    "table": "dining table",
    "plant": "potted plant",
    "man": "person",
    "men": "person",
    "woman": "person",
    "women": "person",
    "people": "person",
    "boy": "person",
    "girl": "person",
    "child": "person",
    "kid": "person",
}

_MAX_LISTED_PROBLEMS = 20


class InpaintCOCOBuildError(ValueError):
    """The export cannot be built as it is; the message says which file or rows, and how to fix them."""


@dataclass(frozen=True)
class RawRow:
    """One row of the annotation table, as read: ``where`` names it in every message."""

    index: int  # 0-based position among the table's data rows
    where: str  # e.g. "annotations.csv line 14"
    values: Mapping[str, Any]
    parse_error: str | None = None


@dataclass(frozen=True)
class RowProblem:
    """Why one row was rejected."""

    where: str
    sample_id: str | None
    concept: str | None
    reason: str  # a key of SKIP_REASONS
    message: str

    def describe(self) -> str:
        return f"{self.where}: {self.message}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "row": self.where,
            "sample_id": self.sample_id,
            "concept": self.concept,
            "reason": self.reason,
            "message": self.message,
        }


@dataclass(frozen=True)
class Sample:
    """A checked row, ready to be written: every field of the published schema plus the two image files."""

    sample_id: str
    coco_image_id: int
    concept: str
    coco_image_path: Path
    inpaint_image_path: Path
    coco_caption: str
    inpaint_caption: str
    quality: str
    supercategory: str | None
    license_id: int
    license_name: str
    license_url: str
    flickr_url: str
    coco_url: str
    mask_prompt: str
    inpaint_prompt: str
    where: str = ""
    coco_caption_verbatim: bool = True  # False: not one of COCO's captions of that image (kept, but noted)
    mask_image_path: Path | None = None
    provenance: Mapping[str, Any] = field(default_factory=dict)  # PROVENANCE_COLUMNS but the mask file; None = blank
    coco_details: Mapping[str, Any] = field(default_factory=dict)  # the published ``coco_details`` struct


def is_no_derivs(license_record: Mapping[str, Any]) -> bool:
    """True for a licence that forbids derivative works (ids 3 and 6, or a NoDerivs name / ``-nd`` URL)."""
    if int(license_record.get("id", -1)) in NO_DERIVS_LICENSE_IDS:
        return True
    name = str(license_record.get("name", "")).lower().replace(" ", "").replace("-", "")
    url = str(license_record.get("url", "")).lower()
    return "noderiv" in name or "-nd/" in url or "-nd-" in url


def _normalise_text(text: str) -> str:
    """Caption identity ignores case, spacing and a final full stop ("A cat." == "a  cat")."""
    return " ".join(text.casefold().split()).rstrip(".").strip()


def same_caption(first: str, second: str) -> bool:
    """True when two captions are the same for the builder (case, spacing and a final full stop ignored)."""
    return _normalise_text(first) == _normalise_text(second)


def _read_json(path: Path, what: str) -> Any:
    try:
        with path.open(encoding="utf-8") as handle:
            return json.load(handle)
    except FileNotFoundError:
        raise InpaintCOCOBuildError(f"{what} not found: {path}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise InpaintCOCOBuildError(f"{what} {path} is not valid JSON ({err}); re-download it from COCO.") from None


@dataclass
class CocoIndex:
    """What the builder needs from COCO 2017 val: images, licences, captions and (optionally) instances."""

    images: dict[int, dict[str, Any]]
    licenses: dict[int, dict[str, Any]]
    captions: dict[int, set[str]]
    images_dir: Path
    raw_captions: dict[int, list[str]] = field(default_factory=dict)  # as written, in file order
    categories: dict[int, dict[str, Any]] = field(default_factory=dict)
    annotations: dict[int, tuple[int, int]] = field(default_factory=dict)  # instance id -> (image id, category id)
    image_categories: dict[int, set[int]] = field(default_factory=dict)
    has_instances: bool = False

    @classmethod
    def load(cls, captions_json: Path, images_dir: Path, instances_json: Path | None = None) -> "CocoIndex":
        data = _read_json(captions_json, "COCO captions file")
        if not isinstance(data, dict) or not {"images", "licenses"} <= data.keys():
            raise InpaintCOCOBuildError(
                f"{captions_json} lacks COCO's 'images'/'licenses' tables; pass captions_val2017.json "
                "from the official COCO 2017 annotations (--coco-captions)."
            )
        if not images_dir.is_dir():
            raise InpaintCOCOBuildError(
                f"COCO images folder not found: {images_dir}; pass the folder holding the val2017 JPEGs "
                "with --coco-images."
            )
        captions: dict[int, set[str]] = defaultdict(set)
        raw: dict[int, list[str]] = defaultdict(list)
        for ann in data.get("annotations", []):
            captions[int(ann["image_id"])].add(_normalise_text(str(ann.get("caption", ""))))
            raw[int(ann["image_id"])].append(str(ann.get("caption", "")))
        index = cls(
            images={int(img["id"]): img for img in data["images"]},
            licenses={int(lic["id"]): lic for lic in data["licenses"]},
            captions=dict(captions),
            images_dir=images_dir,
            raw_captions=dict(raw),
        )
        if instances_json is not None:
            inst = _read_json(instances_json, "COCO instances file")
            if not isinstance(inst, dict) or "categories" not in inst:
                raise InpaintCOCOBuildError(
                    f"{instances_json} has no 'categories' table; pass instances_val2017.json (--instances)."
                )
            index.categories = {int(cat["id"]): cat for cat in inst["categories"]}
            for ann in inst.get("annotations", []):
                image_id, category_id = int(ann["image_id"]), int(ann["category_id"])
                index.annotations[int(ann["id"])] = (image_id, category_id)
                index.image_categories.setdefault(image_id, set()).add(category_id)
            index.has_instances = True
        return index

    # -- changed object -> super-category -------------------------------------------------
    def category_by_name(self, name: str) -> dict[str, Any] | None:
        """A COCO category by name or common alias ("sofa" -> couch), case-insensitive."""
        wanted = _CATEGORY_ALIASES.get(name.strip().lower(), name.strip().lower())
        return next((c for c in self.categories.values() if c["name"].lower() == wanted), None)

    def infer_supercategory(self, image_id: int, mask_prompt: str) -> str | None:
        """The super-category named by a masking prompt ("red fire hydrant" -> "outdoor"), or None.

        Category names (and common aliases, with plural endings) are matched as whole words;
        a match inside a longer one is dropped ("dog" inside "hot dog"); when the names
        point to several super-categories, those of objects annotated in the image win.
        None when nothing or nothing unambiguous matches: a guess would mislabel the sample.
        """
        found = self.categories_named(mask_prompt)
        present = found & self.image_categories.get(image_id, set())
        supers = {self.categories[cid]["supercategory"] for cid in (present or found)}
        return supers.pop() if len(supers) == 1 else None

    def categories_named(self, text: str) -> set[int]:
        """Ids of the COCO categories a text names (whole words, common aliases and plural endings;
        a name inside a longer matched one is dropped: "hot dog" names no dog)."""
        text = " ".join(text.lower().split())
        spans: list[tuple[int, int, int]] = []  # (start, end, category id)
        names = {c["name"].lower(): cid for cid, c in self.categories.items()}
        for alias, target in _CATEGORY_ALIASES.items():
            if target in names:
                names.setdefault(alias, names[target])
        for name, cid in names.items():
            for match in re.finditer(rf"\b{re.escape(name)}(?:e?s)?\b", text):
                spans.append((match.start(), match.end(), cid))
        kept = [
            s for s in spans if not any(o[0] <= s[0] and s[1] <= o[1] and (o[1] - o[0]) > (s[1] - s[0]) for o in spans)
        ]
        return {cid for _, _, cid in kept}


def find_table(source: Path, table: Path | None = None) -> Path:
    """The annotation table: ``table`` if given, else the single annotations.csv/.jsonl in ``source``."""
    if table is not None:
        if not table.is_file():
            raise InpaintCOCOBuildError(f"annotation table not found: {table}")
        return table
    found = [source / name for name in ("annotations.csv", "annotations.jsonl") if (source / name).is_file()]
    if not found:
        raise InpaintCOCOBuildError(
            f"no annotation table in {source}: expected annotations.csv or annotations.jsonl "
            "(or pass --table FILE). See dataset_scripts/inpaintcoco/README.md for the format."
        )
    if len(found) > 1:
        raise InpaintCOCOBuildError(
            f"{source} holds both annotations.csv and annotations.jsonl; keep one or choose with --table."
        )
    return found[0]


def _check_columns(columns: Iterable[str], table: Path) -> list[str]:
    columns = list(columns)
    missing = [c for c in REQUIRED_COLUMNS if c not in columns]
    if missing:
        raise InpaintCOCOBuildError(
            f"{table} lacks the required column(s) {missing}; it has {columns}. Required: "
            f"{', '.join(REQUIRED_COLUMNS)}; optional: {', '.join(OPTIONAL_COLUMNS)}."
        )
    return [c for c in columns if c not in REQUIRED_COLUMNS and c not in OPTIONAL_COLUMNS]


def read_table(table: Path) -> tuple[list[RawRow], list[str]]:
    """Read a CSV (header row) or JSONL table; returns the rows and the ignored extra column names.

    Rows that cannot be parsed are returned with ``parse_error`` set instead of aborting,
    so a single bad line is reported like any other bad row.
    """
    rows: list[RawRow] = []
    suffix = table.suffix.lower()
    if suffix == ".csv":
        with table.open(encoding="utf-8-sig", newline="") as handle:
            reader = csv.DictReader(handle, restkey="\0extra")
            extra = _check_columns(reader.fieldnames or [], table)
            line = reader.line_num
            for values in reader:
                where = f"{table.name} line {line + 1}"
                line = reader.line_num
                error = None
                if "\0extra" in values or any(v is None for v in values.values()):
                    error = f"has {len(reader.fieldnames)} header columns but a different number of fields"
                clean = {k: (v.strip() if isinstance(v, str) else v) for k, v in values.items() if k != "\0extra"}
                rows.append(RawRow(len(rows), where, clean, error))
    elif suffix == ".jsonl":
        columns: set[str] = set()
        for line in read_jsonl(table):
            where = f"{table.name} line {line.number}"
            if line.error is not None or not isinstance(line.value, dict):
                why = line.error or "a JSON object per line is expected"
                rows.append(RawRow(len(rows), where, {}, f"is not a JSON object ({why})"))
                continue
            columns.update(line.value)
            rows.append(RawRow(len(rows), where, line.value))
        extra = _check_columns(sorted(columns) if rows else REQUIRED_COLUMNS, table)
    else:
        raise InpaintCOCOBuildError(f"{table}: the annotation table must be .csv or .jsonl (one JSON object per line)")
    return rows, extra


def _text(values: Mapping[str, Any], key: str) -> str:
    value = values.get(key)
    return "" if value is None else str(value).strip()


def _optional_int(values: Mapping[str, Any], key: str) -> int | None:
    """An integer column that may be blank; raises ValueError for non-integers like "12a" or 3.5."""
    value = values.get(key)
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
        raise ValueError(f"{key}={value!r} is not an integer")
    try:
        return int(value) if not isinstance(value, str) else int(value.strip())
    except ValueError:
        raise ValueError(f"{key}={value!r} is not an integer") from None


def parse_number(value: Any, column: str, kind: type) -> int | float | None:
    """A finite int or float from a table cell, CSV text or JSON; None when blank.

    Refuses what a silent conversion would get wrong: booleans, "2.5" or 2.5 for an int, NaN
    and infinities; the ValueError names the column and the value.
    """
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    what = "a whole number" if kind is int else "a number"
    try:
        if isinstance(value, bool) or (kind is int and isinstance(value, float) and not value.is_integer()):
            raise ValueError
        number = kind(value.strip() if isinstance(value, str) else value)
        if number != number or number in (float("inf"), float("-inf")):
            raise ValueError
    except (TypeError, ValueError):
        raise ValueError(f"{column}={value!r} is not {what}") from None
    return number


def _normalise_quality(raw: str) -> str | None:
    text = " ".join(raw.lower().replace("_", " ").replace("-", " ").split())
    text = {"ok": "okay", "verygood": "very good"}.get(text, text)
    return text if text in INPAINTCOCO_QUALITIES else None


def _image_problem(path: Path) -> str | None:
    """None when Pillow decodes the whole file; otherwise why not (truncated, not an image, ...)."""
    try:
        with PIL.Image.open(path) as image:
            image.load()
    except (OSError, SyntaxError, ValueError, PIL.Image.DecompressionBombError) as err:
        return f"{type(err).__name__}: {err}"
    return None


class _Rejected(Exception):
    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason, self.message = reason, message


def _check_row(
    row: RawRow,
    coco: CocoIndex,
    source: Path,
    default_id: str,
) -> Sample:
    """Turn one raw row into a Sample or raise _Rejected naming the reason and the fix."""
    v = row.values
    if row.parse_error:
        raise _Rejected("unreadable_row", f"{row.parse_error}; fix the line in the table")
    try:
        image_id = _optional_int(v, "coco_image_id")
        annotation_id = _optional_int(v, "coco_annotation_id")
    except ValueError as err:
        raise _Rejected("unreadable_row", f"{err}; COCO ids are integers like 397133") from None
    concept = _text(v, "concept").lower()
    if concept not in INPAINTCOCO_CONCEPTS:
        raise _Rejected(
            "unknown_concept",
            f"concept {_text(v, 'concept')!r} is not one of {', '.join(INPAINTCOCO_CONCEPTS)}",
        )
    if image_id is None or image_id not in coco.images:
        raise _Rejected(
            "unknown_coco_id",
            f"coco_image_id {v.get('coco_image_id')!r} is not an image of the COCO captions file; "
            "InpaintCOCO uses COCO 2017 val ids (check the id or pass the matching --coco-captions)",
        )
    record = coco.images[image_id]
    license_id = int(record["license"])
    license_record = coco.licenses.get(license_id, {"id": license_id, "name": "", "url": ""})
    if is_no_derivs(license_record):
        raise _Rejected(
            "noderivs_license",
            f"COCO image {image_id} is under licence {license_id} ({license_record.get('name', '?')}), "
            "which forbids derivative works: it may not be inpainted or published; remove the row",
        )
    coco_caption, inpaint_caption = _text(v, "coco_caption"), _text(v, "inpaint_caption")
    if not coco_caption or not inpaint_caption:
        empty = "coco_caption" if not coco_caption else "inpaint_caption"
        raise _Rejected("empty_caption", f"{empty} is empty; fill in the caption")
    if same_caption(coco_caption, inpaint_caption):
        raise _Rejected(
            "unchanged_caption",
            f"inpaint_caption equals coco_caption ({coco_caption!r}); the new caption must describe the edit",
        )
    quality = _normalise_quality(_text(v, "quality"))
    if quality is None:
        raise _Rejected(
            "invalid_quality",
            f"quality {_text(v, 'quality')!r} is not one of {', '.join(repr(q) for q in INPAINTCOCO_QUALITIES)}",
        )
    mask_prompt = _text(v, "mask_prompt")
    supercategory = _resolve_object(v, annotation_id, image_id, mask_prompt, coco)

    provenance = _provenance(v)
    name = _text(v, "inpaint_file_name")
    if not name:
        raise _Rejected("missing_image", "inpaint_file_name is empty; name the inpainted image file")
    inpaint_path = _export_file(source, "inpaint_file_name", name, "inpainted image")
    mask_name = _text(v, "mask_file_name")
    mask_path = _export_file(source, "mask_file_name", mask_name, "mask image") if mask_name else None
    coco_path = coco.images_dir / str(record["file_name"])
    if not coco_path.is_file():
        raise _Rejected(
            "missing_image",
            f"original COCO image {record['file_name']} not found in {coco.images_dir} (--coco-images)",
        )
    sample_id = _text(v, "sample_id") or default_id
    return Sample(
        sample_id=sample_id,
        coco_image_id=image_id,
        concept=concept,
        coco_image_path=coco_path,
        inpaint_image_path=inpaint_path,
        coco_caption=coco_caption,
        inpaint_caption=inpaint_caption,
        quality=quality,
        supercategory=supercategory,
        license_id=license_id,
        license_name=str(license_record.get("name", "")),
        license_url=str(license_record.get("url", "")),
        flickr_url=str(record.get("flickr_url", "")),
        coco_url=str(record.get("coco_url", "")),
        mask_prompt=mask_prompt,
        inpaint_prompt=_text(v, "inpaint_prompt"),
        where=row.where,
        coco_caption_verbatim=_normalise_text(coco_caption) in coco.captions.get(image_id, set()),
        mask_image_path=mask_path,
        provenance=provenance,
        coco_details=_coco_details(record, license_record, coco.raw_captions.get(image_id, [])),
    )


def _coco_details(record: Mapping[str, Any], license_record: Mapping[str, Any], captions: list[str]) -> dict[str, Any]:
    """The published ``coco_details`` struct of a photograph, from COCO's own image record."""
    from hf_hardneg.data.inpaintcoco import COCO_TEXT_LICENSE

    def number(key: str) -> int | None:
        value = record.get(key)
        return None if value in (None, "") else int(value)

    return {
        "captions": list(captions),
        "coco_url": str(record.get("coco_url", "")),
        "date_captured": None if record.get("date_captured") is None else str(record["date_captured"]),
        "flickr_url": str(record.get("flickr_url", "")),
        "height": number("height"),
        "id": int(record["id"]),
        "image_license": str(license_record.get("name", "")),
        "text_license": COCO_TEXT_LICENSE,
        "width": number("width"),
    }


def _export_file(source: Path, column: str, name: str, what: str) -> Path:
    """A file the row names relative to the export folder; rejected when it leaves the folder or is absent."""
    relative = Path(name)
    if relative.is_absolute() or ".." in relative.parts:
        raise _Rejected("missing_image", f"{column} {name!r} must be a path relative to the export folder {source}")
    path = source / relative
    if not path.is_file():
        raise _Rejected("missing_image", f"{what} {name!r} not found in {source}")
    return path


def _provenance(values: Mapping[str, Any]) -> dict[str, Any]:
    """The provenance columns but the mask file, typed; blanks are None. Bad numbers reject the row."""
    out: dict[str, Any] = {}
    for column, kind in PROVENANCE_COLUMNS.items():
        if kind is Path:
            continue
        raw = values.get(column)
        if kind is str:
            out[column] = None if raw is None or not str(raw).strip() else str(raw).strip()
            continue
        try:
            out[column] = parse_number(raw, column, kind)
        except ValueError as err:
            raise _Rejected("unreadable_row", f"{err}; fix the value or leave it blank") from None
    negative = [c for c in ("mask_dilate_x", "mask_dilate_y", "annotation_seconds") if (out[c] or 0) < 0]
    if negative:
        raise _Rejected("unreadable_row", f"{negative[0]}={out[negative[0]]} is negative; it counts pixels or seconds")
    return out


def _resolve_object(
    values: Mapping[str, Any], annotation_id: int | None, image_id: int, mask_prompt: str, coco: CocoIndex
) -> str | None:
    """Super-category of the changed object: explicit instance id > explicit category > mask prompt."""
    category_text = _text(values, "coco_category")
    if (annotation_id is not None or category_text) and not coco.has_instances:
        raise InpaintCOCOBuildError(
            "the table names changed objects (coco_annotation_id / coco_category) but no COCO instances "
            "file was found; pass instances_val2017.json with --instances"
        )
    if annotation_id is not None:
        owner = coco.annotations.get(annotation_id)
        if owner is None or owner[0] != image_id:
            where = "does not exist" if owner is None else f"belongs to image {owner[0]}"
            raise _Rejected(
                "unknown_object",
                f"coco_annotation_id {annotation_id} {where}, not to image {image_id}; use an instance id "
                "of this image from instances_val2017.json",
            )
        return str(coco.categories[owner[1]]["supercategory"])
    if category_text:
        category = (
            coco.categories.get(int(category_text))
            if category_text.isdigit()
            else coco.category_by_name(category_text)
        )
        if category is None:
            raise _Rejected(
                "unknown_object",
                f"coco_category {category_text!r} is not one of COCO's 80 categories (name or id)",
            )
        return str(category["supercategory"])
    if not coco.has_instances:
        return None
    return coco.infer_supercategory(image_id, mask_prompt)


def check_rows(rows: list[RawRow], coco: CocoIndex, source: Path) -> tuple[list[Sample], list[RowProblem]]:
    """Check every row; returns the valid samples (table order) and one problem per rejected row.

    Cheap checks run first and duplicates are judged among rows that passed them, so a
    broken first copy does not turn a good second copy into a "duplicate". Images are
    decoded last (each file once, however many rows use it).
    """
    per_image: dict[tuple[str, str], int] = defaultdict(int)
    candidates: list[tuple[RawRow, Sample]] = []
    problems: dict[int, RowProblem] = {}
    for row in rows:
        concept_raw = _text(row.values, "concept").lower() or None
        key = (concept_raw or "", _text(row.values, "coco_image_id"))
        number = per_image[key]
        per_image[key] += 1
        try:
            image_id = int(key[1])
        except ValueError:
            image_id = None
        default_id = (
            f"{concept_raw or 'unknown'}-{image_id:012d}-{number}" if image_id is not None else f"row-{row.index}"
        )
        try:
            candidates.append((row, _check_row(row, coco, source, default_id)))
        except _Rejected as rejected:
            sample_id = _text(row.values, "sample_id") or default_id
            problems[row.index] = RowProblem(row.where, sample_id, concept_raw, rejected.reason, rejected.message)

    seen: dict[tuple, str] = {}
    unique: list[tuple[RawRow, Sample]] = []
    for row, sample in candidates:
        keys = [
            ("sample_id", sample.sample_id),
            ("inpainted file", str(sample.inpaint_image_path.resolve())),
            ("image and captions", (sample.coco_image_id, _normalise_text(sample.coco_caption),
                                    _normalise_text(sample.inpaint_caption))),
        ]
        clash = next(((k[0], seen[k]) for k in keys if k in seen), None)
        if clash is not None:
            label, first = clash
            problems[row.index] = RowProblem(
                row.where, sample.sample_id, sample.concept, "duplicate_sample",
                f"same {label} as {first}; remove one of the two rows",
            )
            continue
        for k in keys:
            seen[k] = row.where
        unique.append((row, sample))

    verdict: dict[Path, str | None] = {}
    samples: list[Sample] = []
    for row, sample in unique:
        files = [(sample.inpaint_image_path, "inpainted image"), (sample.coco_image_path, "COCO image")]
        if sample.mask_image_path is not None:
            files.append((sample.mask_image_path, "mask image"))
        for path, what in files:
            if path not in verdict:
                verdict[path] = _image_problem(path)
            if verdict[path] is not None:
                problems[row.index] = RowProblem(
                    row.where, sample.sample_id, sample.concept, "corrupt_image",
                    f"{what} {path.name} cannot be decoded ({verdict[path]}); re-export or replace the file",
                )
                break
        else:
            samples.append(sample)
    ordered = [problems[i] for i in sorted(problems)]
    return samples, ordered


def format_problems(problems: list[RowProblem], limit: int = _MAX_LISTED_PROBLEMS) -> str:
    """The first ``limit`` problems, one per line, and how many more there are."""
    lines = [f"  - {p.describe()} [{p.reason}]" for p in problems[:limit]]
    if len(problems) > limit:
        lines.append(f"  ... and {len(problems) - limit} more (all are listed by --skip-invalid's report)")
    return "\n".join(lines)
