"""Sub-commands of the `hf-hardneg` CLI; each module defines ``register(subparsers)``.

Options several commands share are defined here once, so they read the same everywhere.
"""

from __future__ import annotations

import argparse
from typing import Sequence

__all__ = ["add_caption_file_argument", "add_concept_arguments", "captions_and_concepts", "concepts_from_args"]


def add_concept_arguments(parser: argparse.ArgumentParser, default: Sequence[str] | None = None) -> None:
    """``--concepts NAME|FILE ...`` (commas work too), and ``--concept-file FILE`` to define concepts by name.

    ``--concept NAME`` (repeatable) is accepted as a spelling of ``--concepts``. Names and files
    are resolved by :func:`hf_hardneg.concepts.resolve_concepts`, the resolver the trainer,
    train.py and the model card use as well.
    """
    fallback = f"default: {', '.join(default)}" if default else "required unless --concept-file is given"
    parser.add_argument(
        "--concepts", "--concept", nargs="+", action="extend", metavar="NAME_OR_FILE", dest="concepts",
        help="concepts: object, color, location, size, object_coco, a+b combinations, a name defined in "
             f"--concept-file, or a YAML/JSON concept file (all its concepts); {fallback}",
    )
    parser.add_argument(
        "--concept-file", metavar="FILE", action="append", dest="concept_files",
        help="YAML or JSON file of your own concepts (see hf_hardneg.concepts.load_concepts); its concepts can "
             "then be named in --concepts, and are all used when --concepts is not given",
    )
    parser.add_argument(
        "--case-insensitive", action="store_true",
        help="match every concept's keywords case-insensitively (the paper's concepts match case-sensitively "
             "by default, as the paper counted; a concept file may set case_sensitive per concept)",
    )
    parser.set_defaults(default_concepts=list(default) if default else None)


def concepts_from_args(args: argparse.Namespace) -> list:
    """The concepts that :func:`add_concept_arguments`' options name (errors name the unknown concept)."""
    from hf_hardneg.concepts import resolve_concepts

    files = args.concept_files or []
    case = False if getattr(args, "case_insensitive", False) else None
    if args.concepts:
        return resolve_concepts(args.concepts, definitions=files, case_sensitive=case)
    if files:
        return resolve_concepts(files, case_sensitive=case)
    if args.default_concepts:
        return resolve_concepts(args.default_concepts, case_sensitive=case)
    raise ValueError("give at least one --concept NAME (or --concepts object color ..., or --concept-file FILE)")


def add_caption_file_argument(parser: argparse.ArgumentParser) -> None:
    """``--captions FILE``: a COCO captions file, or a JSON list, .jsonl or .txt of captions."""
    parser.add_argument("--captions", required=True, metavar="FILE",
                        help="COCO captions_*.json (or a JSON list, .jsonl or .txt of captions)")


def captions_and_concepts(args: argparse.Namespace) -> tuple[list, list]:
    """``(concepts, caption records)`` of :func:`add_concept_arguments` and :func:`add_caption_file_argument`."""
    from hf_hardneg.data.coco import read_captions

    return concepts_from_args(args), read_captions(args.captions)
