"""Sub-commands of the `hf-hardneg` CLI; each module defines ``register(subparsers)``.

Options several commands share are defined here once, so they read the same everywhere.
"""

from __future__ import annotations

import argparse
import math
import sys
from typing import Any, Callable, Sequence

__all__ = [
    "add_caption_file_argument",
    "add_command",
    "add_concept_arguments",
    "add_evaluation_arguments",
    "captions_and_concepts",
    "concepts_from_args",
    "evaluation_options",
    "finite_float",
    "non_negative_float",
    "parse_sources",
    "positive_int",
]


def add_command(
    subparsers: argparse._SubParsersAction,
    name: str,
    run: Callable[[argparse.Namespace], int],
    *,
    help: str,
    description: str | None = None,
    epilog: str | None = None,
) -> argparse.ArgumentParser:
    """Register ``hf-hardneg NAME``, which calls ``run(args)``; returns its parser for the options.

    The description is by default the first paragraph of ``run``'s module docstring. One with
    line breaks (usage lines) is printed as written; a one-paragraph one is wrapped to the terminal.
    """
    if description is None:
        description = (sys.modules[run.__module__].__doc__ or "").split("\n\n")[0]
    formatter = argparse.RawDescriptionHelpFormatter if "\n" in description else argparse.HelpFormatter
    parser = subparsers.add_parser(name, help=help, description=description, epilog=epilog,
                                   formatter_class=formatter)
    parser.set_defaults(func=run)
    return parser


# -- checked numbers: argparse answers a bad value with one line naming the option ---------------
def positive_int(value: str) -> int:
    number = int(value)
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return number


def non_negative_float(value: str) -> float:
    number = float(value)
    if not number >= 0:  # also refuses nan
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return number


def finite_float(value: str) -> float:
    number = float(value)
    if not math.isfinite(number):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {value}")
    return number


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
    """``(concepts, caption records)`` of :func:`add_concept_arguments` and :func:`add_caption_file_argument`.

    Bad input raises ``ValueError`` (a concept file with a wrong type too), which the CLI prints as one line.
    """
    from hf_hardneg.data.coco import read_captions

    try:
        concepts = concepts_from_args(args)
    except TypeError as err:
        raise ValueError(str(err)) from None
    return concepts, read_captions(args.captions)


def add_evaluation_arguments(parser: argparse.ArgumentParser, default_tasks: str) -> None:
    """What to evaluate on and how much: the options ``evaluate`` and ``interpolate --evaluate`` share.

    ``--tasks``, ``--coco-dir``/``--coco-split``, the concept options, ``--source``, ``--max-examples``,
    ``--batch-size``, ``--device`` and ``--no-progress``; :func:`evaluation_options` reads them back.
    """
    from hf_hardneg.evaluation import DEFAULT_CONCEPTS, TASK_NAMES

    add = parser.add_argument
    add("--tasks", default=default_tasks,
        help=f"comma-separated task names, of {', '.join(TASK_NAMES)} (default: %(default)s)")
    add("--coco-dir", default=None,
        help="COCO in its official layout (annotations/captions_<split>.json + images) for the concept and "
             "retrieval tasks")
    add("--coco-split", default="val2017", help="COCO split (default: %(default)s)")
    add_concept_arguments(parser, default=DEFAULT_CONCEPTS)
    add("--source", action="append", default=[], metavar="TASK=PATH_OR_ID",
        help="data source of a task instead of its Hub default, e.g. sugarcrepe=/data/sugar_crepe, "
             "winoground=/data/winoground or zeroshot=FOLDER; TASK:KEY=VALUE sets one option of the task's "
             "reader (zeroshot:templates=imagenet); 'coco=PATH' replaces --coco-dir; repeatable")
    add("--max-examples", type=positive_int, default=None,
        help="cap per task (seeded random subset) for a quick look; do not report such numbers")
    add("--batch-size", type=positive_int, default=64, help="images or captions per forward (default: %(default)s)")
    add("--device", default="auto", help="cuda, cpu, cuda:1 ... (default: %(default)s)")
    add("--no-progress", action="store_true", help="hide progress bars")


def evaluation_options(args: argparse.Namespace) -> dict[str, Any]:
    """Keyword arguments of :func:`hf_hardneg.evaluation.evaluate_model` from :func:`add_evaluation_arguments`."""
    return dict(tasks=args.tasks, coco_dir=args.coco_dir, coco_split=args.coco_split,
                concepts=concepts_from_args(args), sources=parse_sources(args.source),
                max_examples=args.max_examples, batch_size=args.batch_size, device=args.device,
                progress=not args.no_progress)


def parse_sources(items: list[str]) -> dict[str, Any]:
    """``["sugarcrepe=/data/x", ...]`` -> ``{"sugarcrepe": "/data/x"}``.

    ``TASK:KEY=VALUE`` sets one keyword of the task's adapter: ARO subsets
    (``aro:COCO-Order=PATH``: only the subsets named run), ``flickr30k:subset=all``,
    ``sugarcrepe:images_dir=PATH``. With ``TASK=PATH`` as well, the path is its ``source``.
    """
    sources: dict = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key or not value:
            raise SystemExit(f"--source {item!r}: expected TASK=PATH_OR_ID or TASK:KEY=VALUE")
        task, _, subset = key.partition(":")
        existing = sources.get(task)
        if subset:
            entry = {"source": existing} if isinstance(existing, str) else dict(existing or {})
            entry[subset] = value
            sources[task] = entry
        elif isinstance(existing, dict):
            existing["source"] = value
        else:
            sources[task] = value
    return sources
