"""``hf-hardneg push``: publish a checkpoint folder to the Hugging Face Hub with its model card.

Usage::

    hf-hardneg push --checkpoint outputs/run/checkpoint-900 --repo-id USER/clip-hardneg-color [--private]

What is uploaded, in one commit:

* the weights, **only as safetensors**. Pickle files (``pytorch_model.bin``, ``*.pt``...) can run
  arbitrary code when loaded, so a folder whose weights are pickled is refused, as is any other
  pickle file in it; the Trainer's resume state (optimizer, scheduler, RNG, ``training_args.bin``)
  is left out because nobody needs it to use the model;
* ``config.json`` and the tokenizer and image-processor files beside the weights, so that
  ``CLIPModel.from_pretrained`` / ``CLIPProcessor.from_pretrained`` (or the ``Auto*`` classes) load
  the repo. ``--processor-from`` adds them when the checkpoint lacks them;
* ``README.md``, the model card, re-rendered for the repo id (and with ``--results`` from
  ``hf-hardneg evaluate``) from the record the trainer saved beside it.

The token is never taken on the command line (it would land in shell history and process
lists): ``huggingface_hub`` reads it from ``HF_TOKEN`` or from ``hf auth login``, and it is
never printed. The work is done by :mod:`hf_hardneg.hub`; this module is the command line.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from hf_hardneg.commands import add_command

__all__ = ["register", "run"]


def register(subparsers) -> None:
    parser = add_command(
        subparsers,
        "push",
        run,
        help="Publish a checkpoint (safetensors weights, processor, model card) to the Hub.",
        description="Publish a checkpoint folder to the Hugging Face Hub in one commit: safetensors weights, "
        "config, tokenizer, image processor and the model card (re-rendered for the repo). Pickle files are "
        "refused; the Trainer's resume state is left out.",
        epilog="Authentication: HF_TOKEN or `hf auth login` (never a command-line token; it is never printed). "
        "Exit status: 0 pushed (or planned, with --dry-run), 1 the Hub or network failed, 2 refused (the message "
        "says why and how to fix it).",
    )
    parser.add_argument("--checkpoint", required=True, type=Path, help="checkpoint folder (save_pretrained output)")
    parser.add_argument("--repo-id", required=True, help="Hub model repo, USER/NAME or ORG/NAME")
    parser.add_argument("--private", action="store_true", help="create the repo private (refused if it exists and is public)")
    parser.add_argument("--results", type=Path, default=None, help="results.json of hf-hardneg evaluate to show in the card")
    parser.add_argument("--license", default=None, help="license id for the card metadata, e.g. mit or apache-2.0")
    parser.add_argument(
        "--processor-from", default=None, help="folder or Hub id to copy the tokenizer/image processor from"
    )
    parser.add_argument("--revision", default=None, help="branch to commit to, created if missing (default: main)")
    parser.add_argument("--create-pr", action="store_true", help="open a pull request instead of committing to the branch")
    parser.add_argument("--commit-message", default=None)
    parser.add_argument("--dry-run", action="store_true", help="check the folder and list what would be uploaded; send nothing")


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"


def run(args: argparse.Namespace) -> int:
    from hf_hardneg.hub import HubError, push_checkpoint

    try:
        commit = push_checkpoint(
            args.checkpoint, args.repo_id, private=args.private, results=args.results, license=args.license,
            processor_from=args.processor_from, revision=args.revision, create_pr=args.create_pr,
            commit_message=args.commit_message, dry_run=args.dry_run,
            on_plan=lambda plan: _print_plan(plan, args.repo_id))
    except (FileNotFoundError, ValueError, PermissionError) as err:
        print(f"hf-hardneg push: error: {err}", file=sys.stderr)
        return 2
    except HubError as err:  # network, offline mode, the Hub refusing: one line, never the token
        print(f"hf-hardneg push: upload failed: {err}", file=sys.stderr)
        return 1
    if args.dry_run:
        print("dry run: nothing was uploaded")
        return 0
    url = getattr(commit, "pr_url", None) or getattr(commit, "commit_url", None)
    print(f"pushed {args.checkpoint} to {args.repo_id}" + (f": {url}" if url else ""))
    return 0


def _print_plan(plan: PushPlan, repo_id: str) -> None:
    print(f"{plan.checkpoint} -> {repo_id}: {len(plan.files)} file(s), {_size(plan.total_bytes())}")
    for name, path in sorted(plan.files.items()):
        print(f"  + {name} ({_size(path.stat().st_size)})")
    for name, reason in sorted(plan.skipped.items()):
        print(f"  - {name}: {reason}")
