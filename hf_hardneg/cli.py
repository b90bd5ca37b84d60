"""`hf-hardneg` command line: one sub-command per module in `hf_hardneg.commands`.

Each command module defines ``register(subparsers)`` (adds its parser and sets
``func``), so the CLI imports only what the chosen command needs.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# sub-command name -> module under hf_hardneg.commands
COMMANDS = {
    "stats": "stats",
    "negatives": "negatives",
    "evaluate": "evaluate",
    "compare": "compare",
    "build-inpaintcoco": "build_inpaintcoco",
    "push": "push",
}


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hf-hardneg",
        description="Hard-negative captions for contrastive vision-language models.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, module in COMMANDS.items():
        if only is not None and name != only:
            # still list the command in --help without importing it
            subparsers.add_parser(name, help=f"(see hf-hardneg {name} --help)")
            continue
        try:
            mod = importlib.import_module(f"hf_hardneg.commands.{module}")
        except ModuleNotFoundError as err:
            if err.name != f"hf_hardneg.commands.{module}":
                raise
            continue
        mod.register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    chosen = next((a for a in argv if a in COMMANDS), None)
    parser = build_parser(only=chosen)
    args = parser.parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
