"""Reading JSON Lines files the one way: every non-blank line with its number, bad lines reported, not raised.

Plan files, annotation exports, caption files and benchmark examples are all JSONL. Each caller decides
whether a bad line stops the run or is counted, but all of them name the line the same way, and none
of them stops on a byte-order mark (``utf-8-sig``) or answers a non-UTF-8 file with a raw traceback.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from os import PathLike
from pathlib import Path
from typing import Any, Iterator

__all__ = ["JsonLine", "read_jsonl", "read_utf8"]


@dataclass(frozen=True)
class JsonLine:
    """One non-blank line: its 1-based ``number``, and its ``value`` or, when it is not JSON, the ``error``."""

    number: int
    value: Any = None
    error: json.JSONDecodeError | None = None


def read_utf8(path: str | PathLike[str], encoding: str = "utf-8-sig") -> str:
    """The text of ``path``; a file that is not UTF-8 raises ``ValueError`` naming it and the byte."""
    try:
        return Path(path).read_text(encoding=encoding)
    except UnicodeDecodeError as err:
        raise ValueError(f"{path}: not UTF-8 text ({err.reason} at byte {err.start})") from None


def read_jsonl(path: str | PathLike[str]) -> Iterator[JsonLine]:
    """The non-blank lines of ``path`` in order; raises ``ValueError`` naming the file if it is not UTF-8."""
    for number, line in enumerate(read_utf8(path).splitlines(), start=1):
        if not line.strip():
            continue
        try:
            yield JsonLine(number, json.loads(line))
        except json.JSONDecodeError as err:
            yield JsonLine(number, error=err)
