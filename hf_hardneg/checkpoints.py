"""Checkpoints that count only once complete, and the choice of which one to resume.

A job killed while a checkpoint is written (preemption, OOM killer, a full disk)
leaves a folder that looks like a checkpoint: weights and perhaps a 0-byte
``optimizer.pt``, but no ``trainer_state.json``. The Trainer's own "newest
checkpoint" rule then picks that folder and the resumed job dies on a missing or
truncated file. So:

* after every process has written its part, the trainer writes
  :data:`COMPLETE_MARKER` into the folder: the names and sizes of its files;
* :func:`checkpoint_problem` says why a folder cannot be resumed (no marker and
  no valid trainer state, a file missing or of another size than recorded, a
  trainer state that is not valid JSON), naming the file;
* :func:`newest_complete_checkpoint` picks the newest folder without a problem
  and reports the ones it passed over, so ``--resume_from_checkpoint last``
  survives a killed save and says what it skipped.

Folders written by a plain ``Trainer`` (no marker) are accepted when their
trainer state parses and none of their files is empty.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

__all__ = [
    "COMPLETE_MARKER",
    "checkpoint_problem",
    "list_checkpoints",
    "mark_complete",
    "newest_complete_checkpoint",
    "remove_incomplete",
]

#: written last into a checkpoint folder, once every file of the save is on disk
COMPLETE_MARKER = "checkpoint_complete.json"
TRAINER_STATE = "trainer_state.json"
_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")
_WEIGHTS = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "adapter_model.safetensors")
# rewritten after the save by the model-card callbacks (atomically, see hf_hardneg.model_card): not part of
# what a resume needs, so their sizes are not recorded
_REWRITTEN_LATER = frozenset({"README.md", "hardneg_card.json"})


def list_checkpoints(output_dir: str | os.PathLike) -> list[Path]:
    """``checkpoint-<step>`` folders of ``output_dir``, oldest step first."""
    root = Path(output_dir)
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), path) for path in root.iterdir()
             if path.is_dir() and (m := _CHECKPOINT.match(path.name))]
    return [path for _, path in sorted(found)]


def mark_complete(folder: str | os.PathLike) -> Path:
    """Record the files of a finished save (name -> size), atomically: the marker exists whole or not at all."""
    folder = Path(folder)
    files = {str(path.relative_to(folder)): path.stat().st_size for path in sorted(folder.rglob("*"))
             if path.is_file() and path.name != COMPLETE_MARKER and not path.name.startswith(".")
             and str(path.relative_to(folder)) not in _REWRITTEN_LATER}
    marker = folder / COMPLETE_MARKER
    partial = folder / f".{COMPLETE_MARKER}.partial"
    partial.write_text(json.dumps({"files": files}, indent=1, sort_keys=True))
    os.replace(partial, marker)
    return marker


def checkpoint_problem(folder: str | os.PathLike) -> str | None:
    """Why ``folder`` cannot be resumed from, naming the file; ``None`` when it can."""
    folder = Path(folder)
    if not folder.is_dir():
        return f"{folder} is not a folder"
    marker = folder / COMPLETE_MARKER
    if marker.is_file():
        try:
            files = json.loads(marker.read_text())["files"]
        except (ValueError, KeyError, TypeError) as err:
            return f"{marker.name} is not valid ({err})"
        for name, size in files.items():
            path = folder / name
            if not path.is_file():
                return f"{name} is missing (the save recorded it)"
            if path.stat().st_size != size:
                return f"{name} has {path.stat().st_size} bytes, the save wrote {size}"
    else:  # a plain Trainer's folder, or a save that did not finish
        empty = sorted(p.name for p in folder.iterdir() if p.is_file() and p.stat().st_size == 0)
        if empty:
            return f"{', '.join(empty)} {'is' if len(empty) == 1 else 'are'} empty and {COMPLETE_MARKER} is " \
                   "missing: the save was interrupted"
        if not any((folder / name).is_file() for name in _WEIGHTS):
            return "it holds no model weights: the save was interrupted"
    state = folder / TRAINER_STATE
    if not state.is_file():
        return f"{TRAINER_STATE} is missing: the save was interrupted"
    try:
        json.loads(state.read_text())
    except ValueError as err:
        return f"{TRAINER_STATE} is not valid JSON ({err}): the save was interrupted"
    return None


def newest_complete_checkpoint(output_dir: str | os.PathLike) -> tuple[Path | None, list[tuple[Path, str]]]:
    """``(newest resumable checkpoint or None, [(newer folder passed over, why), ...])``."""
    skipped = []
    for folder in reversed(list_checkpoints(output_dir)):
        problem = checkpoint_problem(folder)
        if problem is None:
            return folder, skipped
        skipped.append((folder, problem))
    return None, skipped


def remove_incomplete(folder: str | os.PathLike) -> bool:
    """Delete ``folder`` if it is a checkpoint that cannot be resumed (before a save reuses its name)."""
    folder = Path(folder)
    if folder.is_dir() and checkpoint_problem(folder) is not None:
        shutil.rmtree(folder)
        return True
    return False
