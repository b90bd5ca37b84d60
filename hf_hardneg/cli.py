"""`hf-hardneg` command line: one sub-command per module in `hf_hardneg.commands`.

Each command module defines ``register(subparsers)`` (adds its parser and sets
``func``), so the CLI imports only what the chosen command needs.
"""

from __future__ import annotations

import argparse
import importlib
import os
import re
import sys

# sub-command name -> module under hf_hardneg.commands
COMMANDS = {
    "stats": "stats",
    "negatives": "negatives",
    "evaluate": "evaluate",
    "compare": "compare",
    "build-inpaintcoco": "build_inpaintcoco",
    "push": "push",
    "interpolate": "interpolate",
    "annotate": "annotate",
    "inpaint": "inpaint",
}


def redact_arguments(arguments: list[str]) -> str:
    """The option names among ``arguments``, without any value: a mistyped flag may sit next to a secret."""
    names = [arg.split("=", 1)[0] for arg in arguments if arg.startswith("-")]
    hidden = len(arguments) - len(names)
    shown = " ".join(names) if names else "(no option names)"
    return shown + (f" (and {hidden} value(s), not shown)" if hidden or any("=" in a for a in arguments) else "")


class CommandLineParser(argparse.ArgumentParser):
    """``argparse.ArgumentParser`` that never echoes the values of arguments it does not know.

    argparse's "unrecognized arguments: --token hf_..." would print a token given to an option
    that does not exist; this parser names the options only. Sub-command parsers inherit it.
    """

    def parse_args(self, args=None, namespace=None):
        parsed, extras = self.parse_known_args(args, namespace)
        if extras:
            hint = ("; the Hub token is read from HF_TOKEN or `hf auth login`, never from the command line"
                    if any(a.split("=", 1)[0] in {"--token", "--hf-token", "--hub-token"} for a in extras) else "")
            self.error(f"unrecognized arguments: {redact_arguments(extras)}{hint}")
        return parsed


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    parser = CommandLineParser(
        prog="hf-hardneg",
        description="Hard-negative captions for contrastive vision-language models.",
        epilog=f"Errors are printed as one line naming the file, row or flag and the fix (exit status 2 for bad "
               f"input, 1 for network or disk failures); set {TRACEBACK_ENV}=1 to see the traceback instead.",
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


#: set to 1 to get the full traceback of an error instead of its one-line message
TRACEBACK_ENV = "HF_HARDNEG_TRACEBACK"

# errors whose message already says what was wrong with the user's input and how to fix it
_INPUT_ERRORS = (ValueError, FileNotFoundError, NotADirectoryError, IsADirectoryError, PermissionError)


def report_error(prog: str, err: BaseException) -> int:
    """Print ``err`` as one ``PROG: error: MESSAGE`` line on stderr and return the exit status.

    The library's errors name the file, row or flag and the fix; a traceback
    through ``datasets`` or ``transformers`` internals only buries that line.
    Status 2: bad input (a ``ValueError`` or a missing/unreadable path); 1: any other
    ``OSError`` (network, Hub, disk). With ``HF_HARDNEG_TRACEBACK=1`` the error is
    re-raised instead, for bug reports.
    """
    if os.environ.get(TRACEBACK_ENV, "").strip().lower() in {"1", "true", "yes"}:
        raise err
    if os.environ.get("RANK", "0") in {"", "0"}:  # under torchrun / accelerate every process fails alike: say it once
        print(f"{prog}: error: {error_message(err)}", file=sys.stderr)
    return 2 if isinstance(err, _INPUT_ERRORS) else 1


# torch re-raises a DataLoader worker's exception with the worker's whole traceback in its message
_WORKER_TRACEBACK = re.compile(r"^Caught (?P<name>\w+) (?P<where>in DataLoader worker process \d+)\.\s*\n"
                               r"Original Traceback \(most recent call last\):", re.S)


def error_message(err: BaseException) -> str:
    """The message of ``err`` without a DataLoader worker's traceback (the worker is named instead)."""
    message = str(err) or type(err).__name__
    found = _WORKER_TRACEBACK.match(message)
    if found:
        # the traceback ends with "<module path>.<Name>: <the original message>"
        tail = re.split(rf"^(?:[\w.]+\.)?{found.group('name')}: ", message, flags=re.M)
        if len(tail) > 1:
            message = f"{tail[-1].strip()} ({found.group('where')})"
    return message


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    chosen = next((a for a in argv if a in COMMANDS), None)
    parser = build_parser(only=chosen)
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (ValueError, OSError) as err:
        return report_error(f"hf-hardneg {args.command}", err)


if __name__ == "__main__":
    sys.exit(main())
