"""Write annotations in the raw export format that ``hf-hardneg build-inpaintcoco`` reads.

Layout (see ``dataset_scripts/inpaintcoco/README.md``)::

    EXPORT/
      annotations.jsonl            one JSON object per saved sample
      inpainted/<sample_id>.png    the chosen candidate, at the photograph's size
      masks/<sample_id>.png        the mask that was repainted (white)
      coco -> COCO_DIR             link to the COCO 2017 folder, the builder's default --coco-dir

so that ``hf-hardneg build-inpaintcoco --source EXPORT --output OUT`` (and ``--push-to-hub``)
turns it into the Hub dataset with no further step. Every file is written atomically and the
table is rewritten whole after each sample (it holds thousands of rows at most), so a crash
leaves either the old table or the new one. A lock file keeps a second process from writing
the same folder, which would silently drop one of the two processes' rows.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from PIL import Image

from hf_hardneg.data.inpaintcoco_export import OPTIONAL_COLUMNS, REQUIRED_COLUMNS
from hf_hardneg.data.jsonl import read_jsonl
from hf_hardneg.inpaint.files import atomic_write_bytes, atomic_write_png

__all__ = ["TABLE_NAME", "EditRequest", "ExportFolder", "SavedEdit"]

TABLE_NAME = "annotations.jsonl"
LOCK_NAME = ".hf-hardneg-inpaint.lock"
COLUMNS: tuple[str, ...] = (*REQUIRED_COLUMNS, *OPTIONAL_COLUMNS)


@dataclass(frozen=True)
class EditRequest:
    """What an edit asks for: the photograph and concept, both captions, the prompts and the mask settings.

    A checked plan row is one (:class:`hf_hardneg.inpaint.batch.PlanEdit`); a saved sample
    (:class:`SavedEdit`) adds what running it produced.
    """

    sample_id: str
    coco_image_id: int
    concept: str
    coco_caption: str
    inpaint_caption: str
    quality: str
    mask_prompt: str
    inpaint_prompt: str
    coco_category: str | None
    mask_threshold: float
    mask_dilate_x: int
    mask_dilate_y: int
    guidance_scale: float
    num_inference_steps: int

    def request_fields(self) -> dict[str, Any]:
        """This edit's :class:`EditRequest` fields by name (a subclass's own fields left out)."""
        return {f.name: getattr(self, f.name) for f in fields(EditRequest)}


@dataclass(frozen=True)
class SavedEdit(EditRequest):
    """Everything one sample of the export records (the table row is :meth:`row`)."""

    mask_model: str
    inpaint_model: str
    inpaint_seed: int
    annotator: str
    annotation_seconds: float

    def row(self) -> dict[str, Any]:
        values = {
            **vars(self),
            "inpaint_file_name": f"inpainted/{self.sample_id}.png",
            "mask_file_name": f"masks/{self.sample_id}.png",
            "coco_category": self.coco_category or "",
            "annotation_seconds": round(self.annotation_seconds, 3),
        }
        return {column: values[column] for column in COLUMNS if column in values}


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


class ExportFolder:
    """An export folder being filled: its rows so far, and :meth:`add` to save one more sample."""

    def __init__(self, root: str | os.PathLike, coco_dir: str | os.PathLike | None = None):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        if (self.root / "annotations.csv").exists():
            raise ValueError(
                f"{self.root} holds annotations.csv; the tool writes {TABLE_NAME} and the builder refuses a folder "
                "with both: use another export folder"
            )
        self.table = self.root / TABLE_NAME
        self._lock = self.root / LOCK_NAME
        self._take_lock()
        self.rows: list[dict[str, Any]] = self._read_rows()
        self.coco_linked = self._link_coco(Path(coco_dir)) if coco_dir is not None else (self.root / "coco").exists()

    # -- opening -----------------------------------------------------------------------------
    def _take_lock(self) -> None:
        try:
            other = int(self._lock.read_text().strip() or 0)
        except (FileNotFoundError, ValueError):
            other = 0
        if other and other != os.getpid() and _pid_alive(other):
            raise ValueError(
                f"{self.root} is being written by process {other}; stop it first, or use another export folder "
                f"(delete {self._lock} if that process is not an annotation tool)"
            )
        atomic_write_bytes(self._lock, f"{os.getpid()}\n".encode())

    def close(self) -> None:
        """Release the folder for other processes (a crashed process's lock is taken over automatically)."""
        try:
            if self._lock.read_text().strip() == str(os.getpid()):
                self._lock.unlink()
        except FileNotFoundError:
            pass

    def __enter__(self) -> "ExportFolder":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _read_rows(self) -> list[dict[str, Any]]:
        if not self.table.exists():
            return []
        rows = []
        for line in read_jsonl(self.table):
            row = line.value
            if line.error is not None or not isinstance(row, dict) or "sample_id" not in row:
                why = line.error or "a JSON object with a sample_id is expected"
                raise ValueError(
                    f"{self.table} line {line.number} cannot be read ({why}); fix or delete that line, then start again"
                )
            rows.append(row)
        return rows

    def _link_coco(self, coco_dir: Path) -> bool:
        """Link EXPORT/coco to the COCO folder, the builder's default; False when that is impossible."""
        link = self.root / "coco"
        if link.exists() or link.is_symlink():
            return link.exists()
        try:
            link.symlink_to(coco_dir.resolve(), target_is_directory=True)
        except OSError:
            return False
        return True

    # -- contents ----------------------------------------------------------------------------
    def done(self, concept: str) -> set[int]:
        """COCO ids that already have a sample of ``concept``."""
        return {int(r["coco_image_id"]) for r in self.rows if r.get("concept") == concept}

    def counts(self) -> dict[str, int]:
        """Samples per concept, as the progress line shows them."""
        return dict(Counter(str(row.get("concept", "?")) for row in self.rows))

    def has_sample(self, sample_id: str) -> bool:
        return any(r.get("sample_id") == sample_id for r in self.rows)

    def next_sample_id(self, concept: str, image_id: int) -> str:
        """``<concept>-<12-digit id>-<n>``, the builder's default id, with n the first free number."""
        n = 0
        while self.has_sample(f"{concept}-{image_id:012d}-{n}"):
            n += 1
        return f"{concept}-{image_id:012d}-{n}"

    def build_command(self, output: str = "OUT") -> str:
        """The command that turns this folder into the Hub dataset."""
        coco = "" if self.coco_linked else " --coco-dir COCO_DIR"
        return f"hf-hardneg build-inpaintcoco --source {self.root} --output {output}{coco}"

    # -- writing -----------------------------------------------------------------------------
    def add(self, edit: SavedEdit, image: Image.Image, mask: Image.Image) -> dict[str, Any]:
        """Save one sample: both images first, then the table (each atomically). Returns the row."""
        if self.has_sample(edit.sample_id):
            raise ValueError(f"sample {edit.sample_id} is already in {self.table}")
        row = edit.row()
        atomic_write_png(self.root / row["inpaint_file_name"], image.convert("RGB"))
        atomic_write_png(self.root / row["mask_file_name"], mask.convert("L"))
        lines = [json.dumps(r, ensure_ascii=False) + "\n" for r in (*self.rows, row)]
        atomic_write_bytes(self.table, "".join(lines).encode("utf-8"))
        self.rows.append(row)
        return row
