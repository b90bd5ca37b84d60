"""Batch mode: inpaint a plan of edits unattended, for prompts and captions made another way (a script, an LLM).

A plan is a JSONL file, one edit per line::

    {"coco_image_id": 377575, "concept": "color", "mask_prompt": "fire hydrant",
     "inpaint_prompt": "completely yellow fire hydrant", "inpaint_caption": "A dog is tied to a yellow fire hydrant."}

Required: ``coco_image_id``, ``concept``, ``mask_prompt``, ``inpaint_prompt``, ``inpaint_caption``.
Optional: ``coco_caption`` (default: the photograph's COCO caption closest to the new one),
``sample_id``, ``quality`` (default ``--quality``), ``mask_threshold``, ``mask_dilate_x``,
``mask_dilate_y``, ``seed``, ``guidance_scale``, ``num_inference_steps``, ``coco_category``
(the changed object) and ``new_category`` (its replacement, for ``object``).

Every row is checked against the InpaintCOCO rules before a model is loaded; a bad row stops
the run with one error naming every bad line (or, with ``skip_invalid``, is counted and left
out). Each row draws one candidate, which is saved as it is: nobody chose among candidates,
so the ``annotator`` column says ``batch:<plan file>``. Rows whose sample is already in the
export are skipped, so rerunning a plan after a crash continues where it stopped. A row's
sample id is its ``sample_id``, else ``<concept>-<12-digit image id>-<plan file stem>-<n>``
(n counts the plan's earlier rows of that concept and image), which no web-app sample has;
give ``sample_id`` when rows may be reordered or the plan renamed between runs.
"""

from __future__ import annotations

import difflib
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from PIL import Image

from hf_hardneg.data.jsonl import read_jsonl
from hf_hardneg.inpaint.catalog import CocoCatalog
from hf_hardneg.inpaint.export import EditRequest, ExportFolder, SavedEdit
from hf_hardneg.inpaint.models import ClipSegMasker, Inpainter
from hf_hardneg.inpaint.rules import (
    RuleViolation,
    check_coco_caption,
    check_concept,
    check_licence,
    check_new_caption,
    check_object_change,
    check_quality,
    read_number,
)

__all__ = ["PLAN_COLUMNS", "PlanDefaults", "PlanEdit", "PlanReport", "check_plan", "read_plan", "run_plan"]

REQUIRED_PLAN_COLUMNS = ("coco_image_id", "concept", "mask_prompt", "inpaint_prompt", "inpaint_caption")
OPTIONAL_PLAN_COLUMNS = (
    "coco_caption", "sample_id", "quality", "mask_threshold", "mask_dilate_x", "mask_dilate_y", "seed",
    "guidance_scale", "num_inference_steps", "coco_category", "new_category",
)
PLAN_COLUMNS = (*REQUIRED_PLAN_COLUMNS, *OPTIONAL_PLAN_COLUMNS)
_MAX_LISTED = 20


@dataclass(frozen=True)
class PlanDefaults:
    """Settings for rows that do not give their own."""

    quality: str = "okay"
    mask_threshold: float = 0.4
    guidance_scale: float = 7.5
    num_inference_steps: int = 50
    seed: int = 0  # a row without a seed uses seed + its row number (1-based, blank lines not counted)
    resolution: int = 512
    negative_prompt: str | None = None


@dataclass(frozen=True)
class PlanEdit(EditRequest):
    """A checked plan row, ready to run: the edit, where the plan holds it and the seed it draws with."""

    where: str
    seed: int


@dataclass
class PlanReport:
    """What a run did; ``skipped`` maps a reason to the plan lines left out for it."""

    plan: str
    rows: int = 0
    written: list[str] = field(default_factory=list)
    skipped: dict[str, list[str]] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    def skip(self, reason: str, where: str, message: str | None = None) -> None:
        self.skipped.setdefault(reason, []).append(where)
        if message:
            self.problems.append(f"{where}: {message} [{reason}]")

    def summary(self, export: ExportFolder) -> str:
        lines = [f"{self.plan}: {self.rows} row(s); wrote {len(self.written)} sample(s) to {export.root}"]
        for reason, where in sorted(self.skipped.items()):
            lines.append(f"  skipped ({reason}): {len(where)}")
        lines.extend(f"  {p}" for p in self.problems[:_MAX_LISTED])
        if len(self.problems) > _MAX_LISTED:
            lines.append(f"  ... and {len(self.problems) - _MAX_LISTED} more")
        lines.append(f"next: {export.build_command()}")
        return "\n".join(lines)


def read_plan(path: Path) -> list[tuple[str, dict[str, Any] | str]]:
    """(where, row) per non-blank line; a line that is not a JSON object gives (where, error text)."""
    path = Path(path)
    if path.suffix.lower() != ".jsonl":
        raise ValueError(f"{path}: a plan is a .jsonl file with one JSON object per line")
    if not path.is_file():
        raise FileNotFoundError(f"plan not found: {path}")
    out: list[tuple[str, dict[str, Any] | str]] = []
    for line in read_jsonl(path):
        where = f"{path.name} line {line.number}"
        if line.error is not None:
            out.append((where, f"is not valid JSON ({line.error})"))
        else:
            out.append((where, line.value if isinstance(line.value, dict) else "is not a JSON object"))
    return out


def _closest_caption(captions: Iterable[str], new: str) -> str:
    """The COCO caption the new one was most likely written from (highest character overlap)."""
    return max(captions, key=lambda c: difflib.SequenceMatcher(None, c.lower(), new.lower()).ratio())


def _check_row(
    catalog: CocoCatalog, row: dict[str, Any], where: str, number: int, defaults: PlanDefaults, sample_id: str
) -> PlanEdit:
    unknown = sorted(set(row) - set(PLAN_COLUMNS))
    if unknown:
        raise RuleViolation("unknown_column", f"unknown column(s) {unknown}; a plan row has {', '.join(PLAN_COLUMNS)}")
    missing = [c for c in REQUIRED_PLAN_COLUMNS if not str(row.get(c) or "").strip()]
    if missing:
        raise RuleViolation("missing_column", f"{', '.join(missing)} missing or empty; every row needs "
                                              f"{', '.join(REQUIRED_PLAN_COLUMNS)}")
    concept = check_concept(str(row["concept"]))
    image_id = read_number(row, "coco_image_id", int, None)
    if image_id not in catalog:
        raise RuleViolation("unknown_coco_id", f"coco_image_id {row['coco_image_id']!r} is not a COCO 2017 val image "
                                               "of the captions file")
    photo = catalog.photo(image_id)
    check_licence(photo)
    if not photo.path.is_file():
        raise RuleViolation("missing_image", f"photograph {photo.file_name} not found in {photo.path.parent}")
    new = str(row["inpaint_caption"]).strip()
    original = str(row.get("coco_caption") or "").strip()
    if not original and photo.captions:
        original = _closest_caption(photo.captions, new)
    original, new = check_new_caption(check_coco_caption(photo, original) if original else "", new)
    quality = check_quality(str(row.get("quality") or defaults.quality))
    mask_prompt, inpaint_prompt = str(row["mask_prompt"]).strip(), str(row["inpaint_prompt"]).strip()
    change = check_object_change(catalog, photo, concept, mask_prompt, inpaint_prompt,
                                 row.get("coco_category") or None, row.get("new_category") or None)
    threshold = read_number(row, "mask_threshold", float, defaults.mask_threshold)
    dilate_x, dilate_y = read_number(row, "mask_dilate_x", int, 0), read_number(row, "mask_dilate_y", int, 0)
    steps = read_number(row, "num_inference_steps", int, defaults.num_inference_steps)
    if not 0.0 <= threshold <= 1.0 or dilate_x < 0 or dilate_y < 0 or steps < 1:
        raise RuleViolation("unreadable_row", "mask_threshold must lie in [0, 1], mask_dilate_x/y be >= 0 pixels "
                                              "and num_inference_steps >= 1")
    return PlanEdit(
        where=where, sample_id=sample_id, coco_image_id=image_id, concept=concept, coco_caption=original,
        inpaint_caption=new, quality=quality, mask_prompt=mask_prompt, inpaint_prompt=inpaint_prompt,
        coco_category=change.category, mask_threshold=threshold, mask_dilate_x=dilate_x, mask_dilate_y=dilate_y,
        seed=read_number(row, "seed", int, defaults.seed + number),
        guidance_scale=read_number(row, "guidance_scale", float, defaults.guidance_scale), num_inference_steps=steps,
    )


def check_plan(
    catalog: CocoCatalog, plan: Path, defaults: PlanDefaults = PlanDefaults()
) -> tuple[list[PlanEdit], list[tuple[str, str, str]]]:
    """Check every row; returns the runnable edits and (where, reason, message) per bad row."""
    edits: list[PlanEdit] = []
    problems: list[tuple[str, str, str]] = []
    per_image: Counter[tuple[str, int]] = Counter()
    seen: dict[str, str] = {}
    for number, (where, row) in enumerate(read_plan(plan), start=1):
        if isinstance(row, str):
            problems.append((where, "unreadable_row", row))
            continue
        try:
            image_key = (str(row.get("concept", "")).strip().lower(), int(row.get("coco_image_id") or 0))
        except (TypeError, ValueError):
            image_key = ("", 0)
        sample_id = str(row.get("sample_id") or "").strip()
        if not sample_id:
            sample_id = f"{image_key[0]}-{image_key[1]:012d}-{Path(plan).stem}-{per_image[image_key]}"
            per_image[image_key] += 1
        try:
            if sample_id in seen:
                raise RuleViolation("duplicate_sample", f"sample_id {sample_id} is also {seen[sample_id]}")
            edits.append(_check_row(catalog, row, where, number, defaults, sample_id))
            seen[sample_id] = where
        except RuleViolation as err:
            problems.append((where, err.reason, str(err)))
    return edits, problems


def run_plan(
    catalog: CocoCatalog,
    export: ExportFolder,
    plan: Path,
    masker: ClipSegMasker | None = None,
    inpainter: Inpainter | None = None,
    *,
    defaults: PlanDefaults = PlanDefaults(),
    skip_invalid: bool = False,
    load_models: Any = None,
    progress: bool = True,
) -> PlanReport:
    """Check the plan, then mask, inpaint and save each row not yet in the export.

    ``load_models`` (a callable returning ``(masker, inpainter)``) is called only when some
    row is left to run, so checking a plan or resuming a finished one loads nothing.
    """
    from tqdm.auto import tqdm

    plan = Path(plan)
    edits, problems = check_plan(catalog, plan, defaults)
    report = PlanReport(plan=str(plan), rows=len(edits) + len(problems))
    if problems and not skip_invalid:
        listed = "\n".join(f"  - {where}: {message} [{reason}]" for where, reason, message in problems[:_MAX_LISTED])
        more = f"\n  ... and {len(problems) - _MAX_LISTED} more" if len(problems) > _MAX_LISTED else ""
        raise ValueError(
            f"{len(problems)} of {report.rows} plan row(s) are invalid; nothing was run. Fix them, or pass "
            f"--skip-invalid to leave them out:\n{listed}{more}"
        )
    for where, reason, message in problems:
        report.skip(reason, where, message)
    todo = []
    for edit in edits:
        if export.has_sample(edit.sample_id):
            report.skip("already_in_export", edit.where)
        else:
            todo.append(edit)
    if not todo:
        return report
    if masker is None or inpainter is None:
        if load_models is None:
            raise ValueError("run_plan needs the masker and inpainter, or load_models to make them")
        masker, inpainter = load_models()
    annotator = f"batch:{plan.name}"
    for edit in tqdm(todo, desc=f"inpainting {plan.name}", unit="edit", disable=not progress):
        started = time.monotonic()
        photo = catalog.photo(edit.coco_image_id)
        with Image.open(photo.path) as handle:
            image = handle.convert("RGB")
        mask = masker.mask(image, edit.mask_prompt, edit.mask_threshold, edit.mask_dilate_x, edit.mask_dilate_y)
        if mask.coverage == 0:
            message = (f"the mask of {edit.mask_prompt!r} at threshold {edit.mask_threshold} is empty; lower "
                       "mask_threshold or change the prompt")
            if not skip_invalid:
                raise ValueError(f"{edit.where}: {message}. The rows before it are saved; rerun to continue.")
            report.skip("empty_mask", edit.where, message)
            continue
        (candidate,) = inpainter.candidates(
            image, mask, edit.inpaint_prompt, [edit.seed], guidance_scale=edit.guidance_scale,
            num_inference_steps=edit.num_inference_steps, negative_prompt=defaults.negative_prompt,
            resolution=defaults.resolution,
        )
        saved = SavedEdit(
            **edit.request_fields(), mask_model=masker.model_id, inpaint_model=inpainter.model_id,
            inpaint_seed=candidate.seed, annotator=annotator, annotation_seconds=time.monotonic() - started,
        )
        export.add(saved, candidate.image, mask.image)
        report.written.append(edit.sample_id)
    return report
