"""Loaders for the newer compositional suites, each in the format its authors published.

Every loader returns one of the sets of :mod:`hf_hardneg.evaluation.tasks`, so scoring,
results files and the text-only control come for free. The published formats (field
names as published; this module reads them, it copies no code of those projects):

* **SugarCrepe++** (Dumpala et al., 2024; 5 subsets ``replace_att replace_obj
  replace_rel swap_att swap_obj``). Raw: ``<subset>.json`` = a JSON list of ``{id,
  filename, caption, caption2, negative_caption}`` over COCO val2017 images (``caption``
  and ``caption2`` are both true, ``negative_caption`` is not). A table copy (e.g. a
  Hub dataset) with the same three caption columns and an ``image`` column (or
  ``filename`` + ``images_dir``) is read too. Scored as a :class:`TripletSet`:
  image-to-text (ITT) and text-only (TOT) accuracy.
* **MMVP-VLM** (Tong et al., 2024, "Eyes Wide Shut?"): ``Questions.csv`` with a header
  and three columns (question id, visual pattern, statement), rows in consecutive pairs;
  the images at ``<image folder>/<pattern>/<question id>.jpg`` (the folder is named
  ``MLLM_VLM Images`` or ``MMVP_VLM_Images`` in the published copies). Each statement is
  prefixed with ``"a photo of "`` as the published evaluation does. A pair counts when
  each statement picks its own image: the :class:`PairedSet` ``image_score``.
* **VALSE** (Parcalabescu et al., 2022): one JSON object per piece (``existence.json``,
  ``counting-hard.json``, ...) keyed by example id, each ``{dataset, image_file,
  caption, foil, mturk: {caption, foil, other}, linguistic_phenomena, ...}``; images from
  the original datasets (``images_dir``). Only the validated examples are kept by default
  (at least 2 of 3 annotators chose the caption and not the foil, ``mturk.caption >= 2``,
  as the authors ask); the others are counted under ``skipped``.
* **What'sUp** (Kamath et al., 2023): ``controlled_images_dataset.json`` (Controlled-A)
  and ``controlled_clevr_dataset.json`` (Controlled-B), lists of ``{image_path,
  caption_options}`` with the true caption first; ``coco_qa_{one,two}_obj.json`` and
  ``vg_qa_{one,two}_obj.json``, lists of ``[image_id, true caption, false caption]``
  with images ``val2017/<12-digit id>.jpg`` and ``vg_images/<id>.jpg``.
* **ColorSwap** (Burapacheep et al., 2024; Hub ``stanfordnlp/colorswap``, gated): a table
  with ``id``, ``image_1``, ``image_2``, ``caption_1``, ``caption_2`` (caption k belongs
  to image k), scored Winoground-style.
"""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

from .adapters import (
    _ColumnImages,
    _ConcatImages,
    _FileImages,
    _check_files,
    _concat_multiple_choice,
    _dedup_images,
    _is_dataset,
    _require_columns,
    as_names,
    load_table,
)
from .tasks import MultipleChoiceSet, PairedSet, TripletSet

__all__ = [
    "MMVP_PROMPT_PREFIX",
    "SUGARCREPE_PP_SUBSETS",
    "WHATSUP_SUBSETS",
    "load_colorswap",
    "load_mmvp_vlm",
    "load_sugarcrepe_pp",
    "load_valse",
    "load_whatsup",
]

SUGARCREPE_PP_SUBSETS = ("replace_att", "replace_obj", "replace_rel", "swap_att", "swap_obj")

#: What'sUp subsets -> (annotation file, image folder inside the root)
WHATSUP_SUBSETS: dict[str, tuple[str, str]] = {
    "Controlled-A": ("controlled_images_dataset.json", "controlled_images"),
    "Controlled-B": ("controlled_clevr_dataset.json", "controlled_clevr"),
    "COCO-QA-one": ("coco_qa_one_obj.json", "val2017"),
    "COCO-QA-two": ("coco_qa_two_obj.json", "val2017"),
    "VG-QA-one": ("vg_qa_one_obj.json", "vg_images"),
    "VG-QA-two": ("vg_qa_two_obj.json", "vg_images"),
}

#: The published MMVP-VLM evaluation scores "a photo of <statement>".
MMVP_PROMPT_PREFIX = "a photo of "
_MMVP_IMAGE_FOLDERS = ("MLLM_VLM Images", "MMVP_VLM_Images", "images")


def _read_json(path: Path, what: str) -> Any:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not valid JSON (line {err.lineno}): {err.msg}; re-download the {what} file") from None


# ---------------------------------------------------------------------------
# SugarCrepe++
# ---------------------------------------------------------------------------


def load_sugarcrepe_pp(
    source: Any,
    subsets: Sequence[str] | None = None,
    images_dir: str | os.PathLike | None = None,
    split: str = "train",
) -> TripletSet:
    """SugarCrepe++ as one :class:`TripletSet`; ``groups`` are the subset names.

    ``source``: a folder of the raw ``<subset>.json`` files (then ``images_dir`` is COCO's
    val2017 folder), a table (``Dataset``, data file, saved or Parquet folder, Hub id) for
    one subset, or a path / Hub id with ``{subset}`` in it, formatted per subset.
    ``subsets`` default: the raw files present in the folder, else all five.
    """
    subsets = as_names(subsets)
    unknown = [s for s in (subsets or ()) if s not in SUGARCREPE_PP_SUBSETS]
    if unknown:
        raise ValueError(f"unknown SugarCrepe++ subset(s) {unknown}; known: {list(SUGARCREPE_PP_SUBSETS)}")
    folder = None if _is_dataset(source) else Path(os.fspath(source))
    present = [s for s in SUGARCREPE_PP_SUBSETS if folder is not None and (folder / f"{s}.json").is_file()]
    if not present and (folder is None or "{subset}" not in str(source)):
        # one table (a Dataset, a data file, a saved or Parquet folder, a Hub id) holds one subset
        if subsets is not None and len(subsets) > 1:
            raise ValueError(f"{source}: one table holds one SugarCrepe++ subset; pass subsets=[name] with it, or "
                             "a path with {subset} in it")
        name = subsets[0] if subsets else "all"
        return _sugarcrepe_pp_table(load_table(source, split), name, str(source), images_dir)
    chosen = list(subsets or present or SUGARCREPE_PP_SUBSETS)
    parts = []
    for subset in chosen:
        raw = folder / f"{subset}.json"
        if raw.is_file():
            parts.append(_sugarcrepe_pp_raw(raw, subset, images_dir))
        elif "{subset}" in str(source):
            where = str(source).format(subset=subset)
            parts.append(_sugarcrepe_pp_table(load_table(where, split), subset, where, images_dir))
        else:
            raise FileNotFoundError(f"{raw} not found: SugarCrepe++'s raw folder holds "
                                    f"{', '.join(s + '.json' for s in SUGARCREPE_PP_SUBSETS)}")
    return _concat_triplets(parts)


def _sugarcrepe_pp_raw(path: Path, subset: str, images_dir) -> TripletSet:
    if images_dir is None:
        raise ValueError(f"{path} is SugarCrepe++'s raw format: pass images_dir= (COCO val2017 images; CLI: "
                         "--coco-dir or --source sugarcrepe_pp:images_dir=PATH)")
    items = _read_json(path, "SugarCrepe++")
    if isinstance(items, Mapping):  # tolerate the SugarCrepe-style {"0": {...}} form
        items = list(items.values())
    if not isinstance(items, list):
        raise ValueError(f"{path}: expected a JSON list of examples, got {type(items).__name__}")
    paths, p1, p2, neg = [], [], [], []
    for i, ex in enumerate(items):
        missing = [k for k in ("filename", "caption", "caption2", "negative_caption") if k not in ex]
        if missing:
            raise KeyError(f"{path}, example {i} (id {ex.get('id')!r}): missing field(s) {missing}")
        paths.append(os.path.join(os.fspath(images_dir), ex["filename"]))
        p1.append(ex["caption"])
        p2.append(ex["caption2"])
        neg.append(ex["negative_caption"])
    _check_files(paths, str(path), f"images_dir={images_dir} should be COCO's val2017 folder")
    slot: dict[str, int] = {}
    unique: list[str] = []
    index = []
    for p in paths:
        if p not in slot:
            slot[p] = len(unique)
            unique.append(p)
        index.append(slot[p])
    return TripletSet(_FileImages(unique), index, p1, p2, neg, [subset] * len(paths),
                      notes={"format": "raw JSON lists (<subset>.json) over COCO val2017"})


def _sugarcrepe_pp_table(ds, subset: str, where: str, images_dir) -> TripletSet:
    _require_columns(ds, ["caption", "caption2", "negative_caption"], where,
                     "Expected SugarCrepe++'s columns caption, caption2, negative_caption.")
    if "image" in ds.column_names:
        images = _ColumnImages(ds, "image")
    elif "filename" in ds.column_names and images_dir is not None:
        paths = [os.path.join(os.fspath(images_dir), f) for f in ds["filename"]]
        _check_files(paths, where, f"images_dir={images_dir} should be COCO's val2017 folder")
        images = _FileImages(paths)
    else:
        raise KeyError(f"{where}: no 'image' column, and no 'filename' column with images_dir=; found {ds.column_names}")
    n = len(ds)
    return TripletSet(images, list(range(n)), list(ds["caption"]), list(ds["caption2"]), list(ds["negative_caption"]),
                      [subset] * n, notes={"format": "table (caption, caption2, negative_caption)"})


def _concat_triplets(parts: Sequence[TripletSet]) -> TripletSet:
    if len(parts) == 1:
        return parts[0]
    images = _ConcatImages([p.images for p in parts])
    out = TripletSet(images, [], [], [], [], [])
    for part, off in zip(parts, images.offsets):
        out.image_index += [i + off for i in part.image_index]
        out.positive1 += part.positive1
        out.positive2 += part.positive2
        out.negative += part.negative
        out.groups += part.groups
        out.notes.update(part.notes)
    return out


# ---------------------------------------------------------------------------
# MMVP-VLM
# ---------------------------------------------------------------------------


def load_mmvp_vlm(source: Any = "MMVP/MMVP_VLM", prompt_prefix: str = MMVP_PROMPT_PREFIX) -> PairedSet:
    """MMVP-VLM's 135 pairs as a :class:`PairedSet`, grouped by visual pattern.

    ``source``: the benchmark folder (``Questions.csv`` + image folder) or its Hub id
    (downloaded). The published score is the pair accuracy, ``image_score`` here.
    """
    root = Path(os.fspath(source))
    if not root.exists():
        root = _download_snapshot(str(source), "MMVP-VLM")
    questions = next((p for p in (root / "Questions.csv", *root.glob("*/Questions.csv")) if p.is_file()), None)
    if questions is None:
        raise FileNotFoundError(f"{root}: no Questions.csv (expected MMVP-VLM's folder: Questions.csv and "
                                f"one of {list(_MMVP_IMAGE_FOLDERS)})")
    base = questions.parent
    image_root = next((base / f for f in _MMVP_IMAGE_FOLDERS if (base / f).is_dir()), None)
    if image_root is None:
        raise FileNotFoundError(f"{base}: no image folder; expected one of {list(_MMVP_IMAGE_FOLDERS)}")
    with open(questions, newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    body = [(i + 2, r) for i, r in enumerate(rows[1:]) if any(cell.strip() for cell in r)]
    for line, r in body:
        if len(r) != 3:
            raise ValueError(f"{questions}, line {line}: expected 3 columns (question id, pattern, statement), got {r}")
    if len(body) % 2:
        raise ValueError(f"{questions}: {len(body)} statements; MMVP-VLM's rows come in pairs")
    paths, captions, groups = [], [], []
    for (line_a, a), (line_b, b) in zip(body[0::2], body[1::2]):
        if a[1] != b[1]:
            raise ValueError(f"{questions}, lines {line_a}-{line_b}: a pair must share its visual pattern, got "
                             f"{a[1]!r} and {b[1]!r}")
        for line, (qid, pattern, statement) in ((line_a, a), (line_b, b)):
            path = image_root / pattern / f"{int(qid)}.jpg"
            if not path.is_file():
                raise FileNotFoundError(f"{questions}, line {line}: image {path} not found")
            paths.append(str(path))
            captions.append(prompt_prefix + statement)
        groups.append(a[1])
    n = len(groups)
    return PairedSet(_FileImages(paths), list(range(0, 2 * n, 2)), list(range(1, 2 * n, 2)), captions[0::2],
                     captions[1::2], groups,
                     notes={"format": "Questions.csv + images/<pattern>/<id>.jpg",
                            "prompt": f"statements prefixed with {prompt_prefix!r}",
                            "published_score": "image_score (each statement picks its own image)"})


def _download_snapshot(repo_id: str, what: str) -> Path:
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(repo_id, repo_type="dataset"))
    except Exception as err:  # offline, gated, wrong id: all need the same advice
        raise RuntimeError(f"cannot download {what} from {repo_id!r} ({type(err).__name__}: {err}); pass a local "
                           "folder in the published layout") from err


# ---------------------------------------------------------------------------
# VALSE
# ---------------------------------------------------------------------------


def load_valse(
    source: Any,
    images_dir: str | os.PathLike | Mapping[str, str | os.PathLike] | None = None,
    pieces: Sequence[str] | None = None,
    valid_only: bool = True,
) -> MultipleChoiceSet:
    """VALSE as one :class:`MultipleChoiceSet` (caption vs. foil); ``groups`` are the pieces (file stems).

    ``source``: a folder of the piece JSON files (or one file). ``images_dir``: one folder
    holding the images by ``image_file`` (also searched as ``<images_dir>/<dataset>/``),
    or a mapping from the ``dataset`` field (``"SWiG"``, ``"visual7w"``, ...) to a folder.
    ``valid_only`` keeps the validated examples (``mturk.caption >= 2``).
    """
    if isinstance(valid_only, str):  # --source valse:valid_only=false
        if valid_only.strip().lower() not in ("true", "false"):
            raise ValueError(f"valid_only must be true or false, got {valid_only!r}")
        valid_only = valid_only.strip().lower() == "true"
    root = Path(os.fspath(source))
    pieces = as_names(pieces)
    files = [root] if root.is_file() else sorted(root.glob("*.json")) + sorted(root.glob("data/*.json"))
    if pieces is not None:
        files = [f for f in files if f.stem in pieces]
        missing = sorted(set(pieces) - {f.stem for f in files})
        if missing:
            raise FileNotFoundError(f"{root}: no VALSE piece file(s) {missing}")
    if not files:
        raise FileNotFoundError(f"{root}: no VALSE piece JSON files (existence.json, counting-hard.json, ...)")
    if images_dir is None:
        raise ValueError("VALSE's images come from the original datasets: pass images_dir= (a folder or "
                         "{dataset: folder}; CLI: --source valse:images_dir=PATH)")
    parts = [_valse_piece(f, images_dir, valid_only) for f in files]
    mc = _concat_multiple_choice(parts)
    mc.notes["validated_only"] = valid_only
    return mc


def _valse_image(ex: Mapping[str, Any], images_dir) -> str:
    name = str(ex["image_file"])
    if isinstance(images_dir, Mapping):
        folder = images_dir.get(str(ex.get("dataset")))
        if folder is None:
            raise KeyError(f"no images_dir for dataset {ex.get('dataset')!r}; given: {sorted(images_dir)}")
        return os.path.join(os.fspath(folder), name)
    direct = os.path.join(os.fspath(images_dir), name)
    if not os.path.exists(direct) and ex.get("dataset"):
        nested = os.path.join(os.fspath(images_dir), str(ex["dataset"]), name)
        if os.path.exists(nested):
            return nested
    return direct


def _valse_piece(path: Path, images_dir, valid_only: bool) -> MultipleChoiceSet:
    data = _read_json(path, "VALSE")
    if not isinstance(data, Mapping):
        raise ValueError(f"{path}: expected a JSON object keyed by example id, got {type(data).__name__}")
    piece = path.stem
    paths, candidates, categories = [], [], []
    skipped = {f"{piece}: not validated (mturk caption votes < 2)": 0, f"{piece}: no mturk votes": 0}
    for key, ex in data.items():
        missing = [k for k in ("image_file", "caption", "foil") if k not in ex]
        if missing:
            raise KeyError(f"{path}, example {key!r}: missing field(s) {missing}")
        if valid_only:
            votes = (ex.get("mturk") or {}).get("caption")
            if votes is None:
                skipped[f"{piece}: no mturk votes"] += 1
                continue
            if votes < 2:
                skipped[f"{piece}: not validated (mturk caption votes < 2)"] += 1
                continue
        paths.append(_valse_image(ex, images_dir))
        candidates.append([ex["caption"], ex["foil"]])
        categories.append(str(ex.get("linguistic_phenomena") or piece))
    _check_files(paths, str(path), f"images_dir={images_dir} should hold the images named by image_file")
    mc = _dedup_images(paths, candidates, [0] * len(paths), [piece] * len(paths), categories=categories)
    mc.skipped = {k: v for k, v in skipped.items() if v}
    return mc


# ---------------------------------------------------------------------------
# What'sUp
# ---------------------------------------------------------------------------


def load_whatsup(
    source: str | os.PathLike,
    subsets: Sequence[str] | None = None,
    coco_images_dir: str | os.PathLike | None = None,
) -> MultipleChoiceSet:
    """What'sUp as one :class:`MultipleChoiceSet`; ``groups`` are the subsets of :data:`WHATSUP_SUBSETS`.

    ``source``: the folder holding the published JSON files and image folders.
    ``subsets`` default: those whose JSON file is there (one alone runs alone).
    ``coco_images_dir``: COCO val2017 images for COCO-QA, if not ``<source>/val2017``.
    """
    root = Path(os.fspath(source))
    subsets = as_names(subsets)
    unknown = [s for s in (subsets or ()) if s not in WHATSUP_SUBSETS]
    if unknown:
        raise ValueError(f"unknown What'sUp subset(s) {unknown}; known: {list(WHATSUP_SUBSETS)}")
    present = [s for s, (f, _) in WHATSUP_SUBSETS.items() if (root / f).is_file()]
    chosen = list(subsets or present)
    if not chosen:
        raise FileNotFoundError(f"{root}: none of What'sUp's files "
                                f"({', '.join(f for f, _ in WHATSUP_SUBSETS.values())})")
    parts = []
    for subset in chosen:
        file_name, folder = WHATSUP_SUBSETS[subset]
        path = root / file_name
        if not path.is_file():
            raise FileNotFoundError(f"{path} not found (What'sUp subset {subset})")
        items = _read_json(path, "What'sUp")
        if not isinstance(items, list):
            raise ValueError(f"{path}: expected a JSON list, got {type(items).__name__}")
        if subset.startswith("Controlled"):
            paths, candidates = [], []
            for i, ex in enumerate(items):
                if not isinstance(ex, Mapping) or "image_path" not in ex or "caption_options" not in ex:
                    raise KeyError(f"{path}, item {i}: expected {{image_path, caption_options}}, got {ex!r:.120}")
                paths.append(_controlled_image(root, folder, ex["image_path"]))
                candidates.append(list(ex["caption_options"]))
        else:
            image_dir = Path(coco_images_dir) if subset.startswith("COCO") and coco_images_dir else root / folder
            paths, candidates = [], []
            for i, ex in enumerate(items):
                if not isinstance(ex, (list, tuple)) or len(ex) != 3:
                    raise ValueError(f"{path}, item {i}: expected [image_id, true caption, false caption], got {ex!r:.120}")
                name = f"{int(ex[0]):012d}.jpg" if subset.startswith("COCO") else f"{ex[0]}.jpg"
                paths.append(str(image_dir / name))
                candidates.append([ex[1], ex[2]])
        _check_files(paths, str(path), f"expected the {subset} images under {root / folder}")
        parts.append(_dedup_images(paths, candidates, [0] * len(paths), [subset] * len(paths)))
    mc = _concat_multiple_choice(parts)
    mc.notes["format"] = "What'sUp JSON files (true caption first)"
    return mc


def _controlled_image(root: Path, folder: str, image_path: str) -> str:
    """The published paths start with the authors' data folder ("data/controlled_images/x.jpeg")."""
    for candidate in (root / image_path, root / folder / Path(image_path).name, Path(image_path)):
        if candidate.is_file():
            return str(candidate)
    return str(root / folder / Path(image_path).name)  # reported as missing by _check_files


# ---------------------------------------------------------------------------
# ColorSwap
# ---------------------------------------------------------------------------


def load_colorswap(source: Any = "stanfordnlp/colorswap", split: str = "test") -> PairedSet:
    """ColorSwap's examples as a :class:`PairedSet` (image/caption 1 -> index 0, 2 -> index 1)."""
    ds = load_table(source, split)
    _require_columns(ds, ["image_1", "image_2", "caption_1", "caption_2"], str(source),
                     "Expected ColorSwap's columns (id, image_1, image_2, caption_1, caption_2).")
    n = len(ds)
    images = _ConcatImages([_ColumnImages(ds, "image_1"), _ColumnImages(ds, "image_2")])
    return PairedSet(images, list(range(n)), list(range(n, 2 * n)), list(ds["caption_1"]), list(ds["caption_2"]),
                     ["all"] * n, notes={"format": "table (image_1, image_2, caption_1, caption_2)"})
