"""Build the publishable InpaintCOCO dataset (Parquet shards + dataset card) and push it to the Hub.

``datasets`` stopped running loading scripts in 4.0, so a dataset that other projects
can open with ``load_dataset("user/inpaintcoco", "color")`` has to be plain data files
plus a README whose YAML declares the configs. This module writes exactly that:

    OUTPUT/
      README.md                         dataset card; YAML declares configs all/object/color/size
      data/<concept>/test-0000i-of-0000n.parquet   images embedded as bytes (datasets.Image)
      build_report.json                 what was written and what was skipped, and why (not pushed)

The raw export is read and checked by :mod:`hf_hardneg.data.inpaintcoco_export`. Both
``python dataset_scripts/inpaintcoco/build.py`` and ``hf-hardneg build-inpaintcoco`` run
:func:`main` / :func:`run` from here, so they cannot drift apart.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import shutil
import sys
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from hf_hardneg.data.inpaintcoco import (
    INPAINT_DETAILS_FEATURE,
    INPAINTCOCO_CONCEPTS,
    INPAINTCOCO_FEATURES,
    INPAINTCOCO_QUALITIES,
    INPAINTCOCO_SPLIT,
    NO_DERIVS_LICENSE_IDS,
)
from hf_hardneg.data.inpaintcoco_export import (
    PROVENANCE_COLUMNS,
    SKIP_REASONS,
    CocoIndex,
    InpaintCOCOBuildError,
    RowProblem,
    Sample,
    check_rows,
    find_table,
    format_problems,
    is_no_derivs,
    read_table,
)

__all__ = [
    "REPORT_FILE_NAME",
    "BuildReport",
    "InpaintCOCOBuildError",
    "add_build_arguments",
    "build_inpaintcoco",
    "main",
    "push_inpaintcoco",
    "render_card",
    "run",
]

logger = logging.getLogger(__name__)

REPORT_FILE_NAME = "build_report.json"
CARD_TEMPLATE = "inpaintcoco_card.md.j2"
DEFAULT_MAX_SHARD_SIZE = "500MB"
# What a finished build contains; --overwrite refuses to delete a folder holding anything else.
_BUILD_ENTRIES = {"README.md", "data", REPORT_FILE_NAME, ".gitattributes"}
_CITATION = """\
@inproceedings{roesch-etal-2024-enhancing,
  title     = {Enhancing Conceptual Understanding in Multimodal Contrastive Learning through Hard Negative Samples},
  author    = {R{\\"o}sch, Philipp J. and Oswald, Norbert and Geierhos, Michaela and Libovick{\\'y}, Jind{\\v{r}}ich},
  booktitle = {Proceedings of the 3rd Workshop on Advances in Language and Vision Research (ALVR)},
  pages     = {102--115},
  year      = {2024},
  address   = {Bangkok, Thailand},
  publisher = {Association for Computational Linguistics},
  url       = {https://aclanthology.org/2024.alvr-1.9},
}"""


@dataclass
class BuildReport:
    """What a build wrote and what it rejected; printed as a summary and saved as JSON beside the data."""

    source: str
    output: str
    table: str
    rows_read: int = 0
    written_by_concept: dict[str, int] = field(default_factory=dict)
    written_by_quality: dict[str, int] = field(default_factory=dict)
    written_by_license: dict[int, int] = field(default_factory=dict)
    written_by_supercategory: dict[str, int] = field(default_factory=dict)
    skipped: list[RowProblem] = field(default_factory=list)
    ignored_columns: list[str] = field(default_factory=list)
    without_supercategory: int = 0
    caption_not_from_coco: list[str] = field(default_factory=list)
    instances_used: bool = False
    shards: list[str] = field(default_factory=list)

    @property
    def written(self) -> int:
        return sum(self.written_by_concept.values())

    @property
    def skipped_by_reason(self) -> dict[str, int]:
        return dict(Counter(p.reason for p in self.skipped).most_common())

    @property
    def skipped_by_concept(self) -> dict[str, int]:
        return dict(Counter(p.concept or "<unknown>" for p in self.skipped).most_common())

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "output": self.output,
            "table": self.table,
            "rows_read": self.rows_read,
            "written": {
                "total": self.written,
                "by_concept": self.written_by_concept,
                "by_quality": self.written_by_quality,
                "by_license_id": {str(k): v for k, v in sorted(self.written_by_license.items())},
                "by_supercategory": self.written_by_supercategory,
                "without_supercategory": self.without_supercategory,
                "shards": self.shards,
            },
            "skipped": {
                "total": len(self.skipped),
                "by_reason": self.skipped_by_reason,
                "by_concept": self.skipped_by_concept,
                "rows": [p.to_dict() for p in self.skipped],
            },
            "notes": {
                "ignored_columns": self.ignored_columns,
                "instances_used": self.instances_used,
                "coco_caption_not_among_coco_captions": self.caption_not_from_coco,
            },
            "reasons": SKIP_REASONS,
        }

    def summary(self) -> str:
        """Counts by concept and by reason, the lines the CLI prints after a build."""

        def counts(mapping: dict[str, int]) -> str:
            return ", ".join(f"{k} {v}" for k, v in mapping.items()) or "none"

        lines = [
            f"InpaintCOCO: wrote {self.written} of {self.rows_read} rows to {self.output} "
            f"({len(self.shards)} Parquet shard(s))",
            f"  written by concept: {counts(self.written_by_concept)}",
            f"  written by quality: {counts(self.written_by_quality)}",
            f"  skipped: {len(self.skipped)}",
        ]
        if self.skipped:
            lines.append(f"  skipped by reason: {counts(self.skipped_by_reason)}")
            lines.append(f"  skipped by concept: {counts(self.skipped_by_concept)}")
        if not self.instances_used:
            lines.append("  note: no COCO instances file, so every supercategory is null (pass --instances)")
        elif self.without_supercategory:
            lines.append(
                f"  note: {self.without_supercategory} sample(s) changed something that is not a COCO "
                "category (or the mask prompt is ambiguous): supercategory is null"
            )
        if self.caption_not_from_coco:
            lines.append(
                f"  note: {len(self.caption_not_from_coco)} coco_caption(s) are not verbatim COCO captions "
                f"of their image (kept; listed in {REPORT_FILE_NAME})"
            )
        if self.ignored_columns:
            lines.append(f"  note: ignored extra column(s): {', '.join(self.ignored_columns)}")
        return "\n".join(lines)


# -- helpers ------------------------------------------------------------------------------
def _parse_size(size: int | str) -> int:
    """'500MB' / '2GiB' / 1000 -> bytes."""
    if isinstance(size, int):
        if size <= 0:
            raise ValueError(f"shard size must be positive, got {size}")
        return size
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(i?)b?\s*", str(size).lower())
    if not match:
        raise ValueError(f"cannot read shard size {size!r}; write it like 500MB, 2GB or 1000000")
    number, unit, binary = match.groups()
    base = 1024 if binary else 1000
    value = int(float(number) * base ** "_kmgt".index(unit or "_"))
    if value <= 0:
        raise ValueError(f"shard size must be positive, got {size!r}")
    return value


def _plan_shards(samples: list[Sample], max_bytes: int) -> list[list[Sample]]:
    """Greedy split in table order so that each shard's image bytes stay under ``max_bytes``."""
    shards: list[list[Sample]] = []
    current: list[Sample] = []
    current_bytes = 0
    for sample in samples:
        size = sum(p.stat().st_size for p in (sample.coco_image_path, sample.inpaint_image_path, sample.mask_image_path)
                   if p is not None)
        if current and current_bytes + size > max_bytes:
            shards.append(current)
            current, current_bytes = [], 0
        current.append(sample)
        current_bytes += size
    if current:
        shards.append(current)
    return shards


def _row(sample: Sample) -> dict[str, Any]:
    """The published row. Images keep their original bytes (no re-encoding) and only a bare
    file name as ``path``, so no local directory leaks into the Parquet files."""
    stem = re.sub(r"[^\w.-]", "_", sample.sample_id)
    provenance = {name: sample.provenance.get(name) for name in PROVENANCE_COLUMNS if name != "mask_file_name"}
    details = {name: provenance.get(name) for name in INPAINT_DETAILS_FEATURE}
    details.update(mask_prompt=sample.mask_prompt, inpaint_prompt=sample.inpaint_prompt, quality=sample.quality)
    return {
        # the columns of the published dataset (phiyodr/InpaintCOCO)
        "concept": sample.concept,
        "coco_caption": sample.coco_caption,
        "coco_image": {"bytes": sample.coco_image_path.read_bytes(), "path": sample.coco_image_path.name},
        "inpaint_caption": sample.inpaint_caption,
        "inpaint_image": {"bytes": sample.inpaint_image_path.read_bytes(),
                          "path": stem + sample.inpaint_image_path.suffix.lower()},
        "mask": None if sample.mask_image_path is None else {
            "bytes": sample.mask_image_path.read_bytes(), "path": stem + "_mask" + sample.mask_image_path.suffix.lower(),
        },
        "worker": provenance.get("annotator"),
        "coco_details": dict(sample.coco_details),
        "inpaint_details": details,
        # our flat columns
        "sample_id": sample.sample_id,
        "coco_image_id": sample.coco_image_id,
        "quality": sample.quality,
        "supercategory": sample.supercategory,
        "license_id": sample.license_id,
        "license_name": sample.license_name,
        "license_url": sample.license_url,
        "flickr_url": sample.flickr_url,
        "coco_url": sample.coco_url,
        "mask_prompt": sample.mask_prompt,
        "inpaint_prompt": sample.inpaint_prompt,
        **provenance,
    }


def _write_shards(samples: list[Sample], output: Path, max_bytes: int) -> dict[str, dict[str, int]]:
    """Write data/<concept>/test-*.parquet; returns per-concept example and byte counts for the card."""
    import datasets

    stats: dict[str, dict[str, int]] = {}
    # a progress bar per shard would drown the build summary; the user's setting is restored after
    bars_were_on = not datasets.are_progress_bars_disabled()
    datasets.disable_progress_bars()
    try:
        for concept in INPAINTCOCO_CONCEPTS:
            group = [s for s in samples if s.concept == concept]
            if not group:
                continue  # no config for it: an empty split cannot be loaded by `datasets`
            shards = _plan_shards(group, max_bytes)
            folder = output / "data" / concept
            folder.mkdir(parents=True, exist_ok=True)
            num_bytes = download = 0
            for i, shard in enumerate(shards):
                table = datasets.Dataset.from_list([_row(s) for s in shard], features=INPAINTCOCO_FEATURES)
                path = folder / f"{INPAINTCOCO_SPLIT}-{i:05d}-of-{len(shards):05d}.parquet"
                table.to_parquet(path)
                num_bytes += table.data.nbytes
                download += path.stat().st_size
                logger.info("wrote %s (%d samples)", path.name, len(shard))
            stats[concept] = {"num_examples": len(group), "num_bytes": num_bytes, "download_size": download}
    finally:
        if bars_were_on:
            datasets.enable_progress_bars()
    return stats


def _size_category(n: int) -> str:
    for limit, label in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K")):
        if n < limit:
            return label
    return "100K<n<1M"


def render_card(
    samples: list[Sample],
    stats: dict[str, dict[str, int]],
    coco: CocoIndex,
    repo_id: str | None = None,
    template_path: Path | None = None,
) -> str:
    """The dataset card (README.md): YAML metadata that `datasets` and the Hub read, then the prose.

    The YAML's ``configs`` make ``load_dataset(path, "color")`` work without any script;
    ``dataset_info`` repeats the features so the Hub viewer shows typed columns.
    """
    import jinja2
    from datasets.info import DatasetInfo, DatasetInfosDict
    from datasets.splits import SplitDict, SplitInfo
    from datasets.utils.metadata import MetadataConfigs
    from huggingface_hub import DatasetCard, DatasetCardData

    concepts = [c for c in INPAINTCOCO_CONCEPTS if c in stats]
    card_data = DatasetCardData(
        pretty_name="InpaintCOCO",
        language=["en"],
        license="other",
        license_name="coco-flickr-licences",
        license_link="https://cocodataset.org/#termsofuse",
        task_categories=["image-to-text", "text-to-image", "zero-shot-image-classification"],
        tags=["coco", "inpainting", "hard-negatives", "fine-grained", "vision-language", "benchmark"],
        size_categories=[_size_category(len(samples))],
    )
    pattern = f"{INPAINTCOCO_SPLIT}-*.parquet"
    configs = {"all": {"data_files": [{"split": INPAINTCOCO_SPLIT, "path": f"data/*/{pattern}"}], "default": True}}
    configs.update({c: {"data_files": [{"split": INPAINTCOCO_SPLIT, "path": f"data/{c}/{pattern}"}]} for c in concepts})
    MetadataConfigs(configs).to_dataset_card_data(card_data)

    def info(keys: list[str]) -> DatasetInfo:
        n = sum(stats[k]["num_examples"] for k in keys)
        size = sum(stats[k]["num_bytes"] for k in keys)
        splits = SplitDict({INPAINTCOCO_SPLIT: SplitInfo(name=INPAINTCOCO_SPLIT, num_examples=n, num_bytes=size)})
        download = sum(stats[k]["download_size"] for k in keys)
        return DatasetInfo(features=INPAINTCOCO_FEATURES, splits=splits, download_size=download, dataset_size=size)

    DatasetInfosDict({"all": info(concepts), **{c: info([c]) for c in concepts}}).to_dataset_card_data(card_data)

    by_license = Counter(s.license_id for s in samples)
    licenses = [
        {
            "id": lid,
            "name": rec.get("name", ""),
            "url": rec.get("url", ""),
            "allowed": not is_no_derivs(rec),
            "count": by_license.get(lid, 0),
        }
        for lid, rec in sorted(coco.licenses.items())
    ]
    table = {
        c: {q: sum(1 for s in samples if s.concept == c and s.quality == q) for q in INPAINTCOCO_QUALITIES}
        for c in concepts
    }
    source = template_path or Path(__file__).with_name(CARD_TEMPLATE)
    # StrictUndefined: a misspelt variable in a custom template is an error, not a blank in the card
    env = jinja2.Environment(undefined=jinja2.StrictUndefined, keep_trailing_newline=True, autoescape=False)
    try:
        template = env.from_string(source.read_text(encoding="utf-8"))
    except (OSError, jinja2.TemplateError) as err:
        raise InpaintCOCOBuildError(f"card template {source} cannot be read: {err}") from None
    variables = dict(
        card_data=card_data.to_yaml(),
        repo_id=repo_id or "<user>/inpaintcoco",
        total=len(samples),
        concepts=concepts,
        counts=table,
        qualities=INPAINTCOCO_QUALITIES,
        licenses=licenses,
        no_derivs_ids=sorted(NO_DERIVS_LICENSE_IDS),
        supercategories=dict(Counter(s.supercategory or "(none)" for s in samples).most_common()),
        features=list(INPAINTCOCO_FEATURES),
        citation=_CITATION,
    )
    try:
        content = template.render(**variables)
        DatasetCard(content)  # parses the YAML header: a broken template fails here, not on the Hub
    except (jinja2.TemplateError, ValueError) as err:
        raise InpaintCOCOBuildError(
            f"card template {source} does not render a valid card ({type(err).__name__}: {err}); it can use "
            f"{', '.join(sorted(variables))} and must start with '---\\n{{{{ card_data }}}}\\n---'"
        ) from None
    return content


def _prepare_output(output: Path, overwrite: bool) -> None:
    if output.exists() and not output.is_dir():
        raise InpaintCOCOBuildError(f"--output {output} is a file; give a folder")
    if output.is_dir() and any(output.iterdir()):
        if not overwrite:
            raise InpaintCOCOBuildError(f"--output {output} is not empty; pass --overwrite to replace an earlier build")
        foreign = sorted(p.name for p in output.iterdir() if p.name not in _BUILD_ENTRIES)
        if foreign:
            raise InpaintCOCOBuildError(
                f"--output {output} holds {foreign}, which an InpaintCOCO build does not write; "
                "refusing to delete it with --overwrite. Choose an empty folder."
            )


def resolve_coco_paths(
    source: Path,
    coco_dir: Path | None,
    coco_captions: Path | None,
    coco_images: Path | None,
    instances: Path | None,
) -> tuple[Path, Path, Path | None]:
    """Explicit paths win; otherwise look in ``coco_dir`` (default SOURCE/coco) in the COCO download layout."""
    base = coco_dir or source / "coco"
    captions = coco_captions or base / "annotations" / "captions_val2017.json"
    if not captions.is_file():
        raise InpaintCOCOBuildError(
            f"COCO captions file not found at {captions}; pass --coco-captions PATH/captions_val2017.json "
            "or --coco-dir DIR holding annotations/captions_val2017.json"
        )
    if coco_images is None:
        candidates = [base / "val2017", base / "images" / "val2017"]
        coco_images = next((p for p in candidates if p.is_dir()), candidates[0])
    if instances is None:
        default = base / "annotations" / "instances_val2017.json"
        instances = default if default.is_file() else None
    elif not instances.is_file():
        raise InpaintCOCOBuildError(f"--instances {instances} not found")
    return captions, coco_images, instances


# -- public entry points --------------------------------------------------------------------
def build_inpaintcoco(
    source: str | os.PathLike,
    output: str | os.PathLike,
    *,
    table: str | os.PathLike | None = None,
    coco_dir: str | os.PathLike | None = None,
    coco_captions: str | os.PathLike | None = None,
    coco_images: str | os.PathLike | None = None,
    instances: str | os.PathLike | None = None,
    skip_invalid: bool = False,
    overwrite: bool = False,
    max_shard_size: int | str = DEFAULT_MAX_SHARD_SIZE,
    repo_id: str | None = None,
    card_template: str | os.PathLike | None = None,
) -> BuildReport:
    """Check a raw export and write the dataset folder (shards, card, report).

    Every row is checked before anything is written. Without ``skip_invalid`` any bad row
    raises :class:`InpaintCOCOBuildError` listing the rows and fixes, and nothing is
    written; with it, bad rows are left out and counted in the report. The folder is
    assembled in a temporary sibling and moved into place at the end, so an interrupted
    build never leaves a half-written dataset behind.

    Args:
        source: the raw export folder (see :mod:`hf_hardneg.data.inpaintcoco_export`).
        output: the dataset folder to create.
        table: the annotation table, if not SOURCE/annotations.{csv,jsonl}.
        coco_dir: COCO 2017 folder (``annotations/``, ``val2017/``); default SOURCE/coco.
        coco_captions, coco_images, instances: override single COCO paths.
        skip_invalid: leave bad rows out (counted) instead of failing.
        overwrite: replace an earlier build in ``output``.
        max_shard_size: upper bound of image bytes per Parquet shard ("500MB").
        repo_id: the Hub id the card's usage snippet should show.
        card_template: a Jinja template replacing the packaged card template.

    Returns:
        The :class:`BuildReport` (also written to OUTPUT/build_report.json).
    """
    source, output = Path(source), Path(output)
    if not source.is_dir():
        raise InpaintCOCOBuildError(f"--source {source} is not a folder")
    try:
        max_bytes = _parse_size(max_shard_size)
    except ValueError as err:
        raise InpaintCOCOBuildError(f"--max-shard-size: {err}") from None
    _prepare_output(output, overwrite)
    table_path = find_table(source, Path(table) if table else None)
    captions, images_dir, instances_path = resolve_coco_paths(
        source,
        Path(coco_dir) if coco_dir else None,
        Path(coco_captions) if coco_captions else None,
        Path(coco_images) if coco_images else None,
        Path(instances) if instances else None,
    )
    coco = CocoIndex.load(captions, images_dir, instances_path)
    rows, extra = read_table(table_path)
    if not rows:
        raise InpaintCOCOBuildError(f"{table_path} has no data rows")
    samples, problems = check_rows(rows, coco, source)
    if problems and not skip_invalid:
        raise InpaintCOCOBuildError(
            f"{len(problems)} of {len(rows)} row(s) in {table_path} are invalid; nothing was written. "
            "Fix them, or pass --skip-invalid to leave them out (counted in the report):\n"
            + format_problems(problems)
        )
    if not samples:
        raise InpaintCOCOBuildError(
            f"none of the {len(rows)} row(s) in {table_path} is valid; nothing to build:\n" + format_problems(problems)
        )

    report = BuildReport(
        source=str(source),
        output=str(output),
        table=str(table_path),
        rows_read=len(rows),
        written_by_concept={c: n for c in INPAINTCOCO_CONCEPTS if (n := sum(s.concept == c for s in samples))},
        written_by_quality={q: n for q in INPAINTCOCO_QUALITIES if (n := sum(s.quality == q for s in samples))},
        written_by_license=dict(sorted(Counter(s.license_id for s in samples).items())),
        written_by_supercategory=dict(Counter(s.supercategory for s in samples if s.supercategory).most_common()),
        skipped=problems,
        ignored_columns=extra,
        without_supercategory=sum(s.supercategory is None for s in samples),
        caption_not_from_coco=[s.where for s in samples if not s.coco_caption_verbatim],
        instances_used=coco.has_instances,
    )

    output.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{output.name}.building-", dir=output.parent))
    try:
        stats = _write_shards(samples, staging, max_bytes)
        report.shards = sorted(str(p.relative_to(staging)) for p in (staging / "data").rglob("*.parquet"))
        card = render_card(samples, stats, coco, repo_id, Path(card_template) if card_template else None)
        (staging / "README.md").write_text(card, encoding="utf-8")
        (staging / REPORT_FILE_NAME).write_text(json.dumps(report.to_dict(), indent=2) + "\n", encoding="utf-8")
        if output.exists():
            shutil.rmtree(output)  # _prepare_output checked it only holds an earlier build
        staging.rename(output)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return report


def push_inpaintcoco(
    output: str | os.PathLike,
    repo_id: str,
    *,
    private: bool = False,
    commit_message: str = "Upload InpaintCOCO",
) -> str:
    """Upload a build folder to a Hub dataset repo through :func:`hf_hardneg.hub.upload`; returns the repo URL.

    Only README.md and data/ are uploaded: the build report holds local paths. Remote files
    under data/ that this build did not write are deleted in the same commit, so shards of an
    earlier, larger build cannot leak into ``load_dataset``.
    """
    from hf_hardneg.hub import require_token, upload

    output = Path(output)
    if not (output / "README.md").is_file() or not (output / "data").is_dir():
        raise InpaintCOCOBuildError(f"{output} is not an InpaintCOCO build (README.md and data/ expected)")
    try:
        require_token("--push-to-hub")
    except PermissionError as err:
        raise InpaintCOCOBuildError(str(err)) from None
    repo_url = upload(repo_id, repo_type="dataset", folder=output, allow_patterns=["README.md", "data/**"],
                      delete_patterns=["data/**"], private=private, commit_message=commit_message)
    return str(repo_url)


# -- command line ----------------------------------------------------------------------------
def _shard_size_option(value: str) -> str:
    """argparse type: a size such as 500MB, checked when the options are read (bad options exit with 2)."""
    try:
        _parse_size(value)
    except (InpaintCOCOBuildError, ValueError) as err:
        raise argparse.ArgumentTypeError(str(err)) from None
    return value


def _repo_id_option(value: str) -> str:
    from hf_hardneg.hub import check_repo_id

    try:
        return check_repo_id(value, "--push-to-hub")
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def add_build_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The options shared by build.py and `hf-hardneg build-inpaintcoco`."""
    add = parser.add_argument
    add("--source", required=True, type=Path, help="raw export folder (annotation table + inpainted images)")
    add("--output", required=True, type=Path, help="dataset folder to write (must be empty or absent)")
    add("--table", type=Path, help="annotation table if not SOURCE/annotations.csv or SOURCE/annotations.jsonl")
    add("--coco-dir", type=Path, help="COCO 2017 folder with annotations/ and val2017/ (default: SOURCE/coco)")
    add("--coco-captions", type=Path, help="captions_val2017.json (licences, Flickr and COCO URLs)")
    add("--coco-images", type=Path, help="folder of the original val2017 JPEGs")
    add("--instances", type=Path, help="instances_val2017.json, for the changed object's super-category")
    add("--skip-invalid", action="store_true", help="leave invalid rows out (counted in the report) instead of failing")
    add("--overwrite", action="store_true", help="replace an earlier build in --output")
    add("--max-shard-size", default=DEFAULT_MAX_SHARD_SIZE, type=_shard_size_option,
        help="image bytes per Parquet shard (default %(default)s)")
    add("--card-template", type=Path, help="Jinja template to use instead of the packaged dataset card")
    add("--push-to-hub", metavar="USER/NAME", type=_repo_id_option, help="also upload the build to this Hub dataset repo")
    add("--private", action="store_true", help="create the Hub repo as private (with --push-to-hub)")
    return parser


def run(args: argparse.Namespace) -> int:
    """Build (and optionally push); prints the summary. Exit code 0 on success, 1 on bad input."""
    if args.private and not args.push_to_hub:
        print("error: --private only applies together with --push-to-hub", file=sys.stderr)
        return 2
    from hf_hardneg.hub import HubError, require_token

    try:
        if args.push_to_hub:
            try:
                require_token("--push-to-hub")  # fail before a long build, not after it
            except PermissionError as err:
                raise InpaintCOCOBuildError(str(err)) from None
        report = build_inpaintcoco(
            args.source,
            args.output,
            table=args.table,
            coco_dir=args.coco_dir,
            coco_captions=args.coco_captions,
            coco_images=args.coco_images,
            instances=args.instances,
            skip_invalid=args.skip_invalid,
            overwrite=args.overwrite,
            max_shard_size=args.max_shard_size,
            repo_id=args.push_to_hub,
            card_template=args.card_template,
        )
        print(report.summary())
        print(f"  report: {Path(args.output) / REPORT_FILE_NAME}")
        if args.push_to_hub:
            url = push_inpaintcoco(args.output, args.push_to_hub, private=args.private)
            print(f"pushed to {url}")
    except InpaintCOCOBuildError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    except HubError as err:
        print(f"error: upload failed: {err}", file=sys.stderr)
        return 1
    return 0


def main(argv: Sequence[str] | None = None, prog: str | None = None) -> int:
    from hf_hardneg.cli import CommandLineParser

    parser = CommandLineParser(prog=prog, description=__doc__.split("\n\n")[0])
    add_build_arguments(parser)
    return run(parser.parse_args(argv))
