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
never printed.
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import logging
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

logger = logging.getLogger(__name__)

__all__ = ["PushPlan", "plan_push", "push_checkpoint", "register", "run", "upload_plan"]

SAFE_WEIGHTS = "model.safetensors"
SAFE_WEIGHTS_INDEX = "model.safetensors.index.json"
# transformers' non-safetensors weight files: refused, with a conversion hint when they are all there is
OTHER_WEIGHTS = ("pytorch_model*.bin", "pytorch_model.bin.index.json", "tf_model*.h5", "flax_model*.msgpack")

# Trainer resume state: needed to continue training, not to use the model. Left out of the upload.
TRAINING_STATE = {
    "optimizer.pt": "optimizer state (resume only)",
    "optimizer.bin": "optimizer state (resume only)",
    "scheduler.pt": "learning-rate scheduler state (resume only)",
    "scaler.pt": "mixed-precision scaler state (resume only)",
    "rng_state*.pth": "random-number-generator state (resume only)",
    "training_args.bin": "pickled TrainingArguments (the card lists the hyperparameters)",
    "trainer_state.json": "Trainer progress and logs (resume only)",
    "pytorch_model_fsdp*.bin": "FSDP shard state (resume only)",
}
# Files that are never part of a model repo.
IGNORED = ("README.md", ".*", "*.tmp", "*.lock", "events.out.tfevents.*")
# Pickle-based formats: loading them can execute arbitrary code.
PICKLE_PATTERNS = ("*.bin", "*.pt", "*.pth", "*.pkl", "*.pickle", "*.ckpt", "*.joblib")


@dataclass
class PushPlan:
    """What would be committed from a checkpoint folder, and what is left out and why."""

    checkpoint: Path
    files: dict[str, Path] = field(default_factory=dict)  # path in repo -> local file
    skipped: dict[str, str] = field(default_factory=dict)  # local name -> reason

    def total_bytes(self) -> int:
        return sum(path.stat().st_size for path in self.files.values())


def _matches(name: str, patterns) -> bool:
    return any(fnmatch.fnmatchcase(name, pattern) for pattern in patterns)


def plan_push(
    checkpoint: str | Path,
    repo_id: str,
    *,
    results: str | Path | dict | None = None,
    license: str | None = None,
    processor_from: str | Path | None = None,
    staging_dir: str | Path | None = None,
) -> PushPlan:
    """Check ``checkpoint`` and decide what to upload; raise ``ValueError`` naming the problem and its fix.

    Nothing is sent anywhere. Processor files from ``processor_from`` and the rendered card are
    written into ``staging_dir`` (the checkpoint folder itself is never modified); without one, a
    new temporary folder is used and left for the caller, since the plan's files live there.
    """
    checkpoint = Path(checkpoint)
    if not checkpoint.is_dir():
        raise FileNotFoundError(f"checkpoint folder {checkpoint} does not exist (pass the folder save_pretrained wrote)")
    if not (checkpoint / "config.json").is_file():
        raise ValueError(
            f"{checkpoint} has no config.json, so it is not a saved model; pass a folder written by "
            "model.save_pretrained() or the Trainer (e.g. outputs/run/checkpoint-900)"
        )
    plan = PushPlan(checkpoint=checkpoint)
    refused: list[str] = []
    for path in sorted(checkpoint.iterdir()):
        name = path.name
        if path.is_dir():
            plan.skipped[name + "/"] = "sub-folder (only the model files at the top level are published)"
        elif _matches(name, IGNORED):
            if name != "README.md":
                plan.skipped[name] = "hidden or temporary file"
        elif _matches(name, TRAINING_STATE):
            plan.skipped[name] = next(r for p, r in TRAINING_STATE.items() if fnmatch.fnmatchcase(name, p))
        elif _matches(name, PICKLE_PATTERNS) or _matches(name, OTHER_WEIGHTS):
            refused.append(name)
        else:
            plan.files[name] = path

    weights = _check_weights(checkpoint, plan, refused)
    if refused:
        raise ValueError(
            f"{checkpoint} contains {refused}: pickle files (which can run code when loaded) or weights in another "
            f"format; hf-hardneg publishes safetensors only. The weights are already in {weights}: delete or move "
            f"{refused} out of the folder and push again."
        )

    staging = Path(staging_dir) if staging_dir is not None else Path(tempfile.mkdtemp(prefix="hf-hardneg-push-"))
    if processor_from is not None:
        for name, path in _save_processor(processor_from, staging / "processor").items():
            plan.files[name] = path
    _check_processor(checkpoint, plan, processor_from)

    record = _card_record(checkpoint, repo_id, results=results, license=license)
    if record is not None:
        from hf_hardneg.model_card import CARD_INPUTS_NAME, write_model_card

        readme = write_model_card(staging / "card", record)
        plan.files["README.md"] = readme
        plan.files[CARD_INPUTS_NAME] = readme.parent / CARD_INPUTS_NAME
    elif (checkpoint / "README.md").is_file():
        plan.files["README.md"] = checkpoint / "README.md"
    return plan


def _check_weights(checkpoint: Path, plan: PushPlan, refused: list[str]) -> str:
    """Make sure the safetensors weights are complete and readable; return their file name."""
    from safetensors import safe_open

    if SAFE_WEIGHTS_INDEX in plan.files:
        index_path = plan.files[SAFE_WEIGHTS_INDEX]
        try:
            shards = sorted(set(json.loads(index_path.read_text(encoding="utf-8"))["weight_map"].values()))
        except (json.JSONDecodeError, KeyError, AttributeError) as err:
            raise ValueError(f"{index_path} is not a valid safetensors index ({err}); re-save the model") from err
        missing = [s for s in shards if s not in plan.files]
        if missing:
            raise ValueError(f"{index_path} lists shard(s) {missing} that are not in {checkpoint}; copy them there")
        to_check = shards
    elif SAFE_WEIGHTS in plan.files:
        to_check = [SAFE_WEIGHTS]
    else:
        if any(_matches(name, OTHER_WEIGHTS) for name in refused):
            raise ValueError(
                f"{checkpoint} holds its weights only as {', '.join(refused)} (not safetensors); hf-hardneg publishes "
                "safetensors only. Convert once, in an environment you trust with that file: "
                f"model = AutoModel.from_pretrained('{checkpoint}'); model.save_pretrained('{checkpoint}') "
                "(writes model.safetensors), then delete the .bin files."
            )
        raise ValueError(
            f"{checkpoint} has no {SAFE_WEIGHTS} (or {SAFE_WEIGHTS_INDEX}); save the model with "
            "model.save_pretrained(folder) or trainer.save_model(folder) first"
        )
    for shard in to_check:
        try:
            with safe_open(str(plan.files[shard]), framework="pt") as handle:
                if not list(handle.keys()):
                    raise ValueError(f"{plan.files[shard]} holds no tensors; re-save the model")
        except ValueError:
            raise
        except Exception as err:  # safetensors raises its own error type for truncated/corrupt files
            raise ValueError(f"{plan.files[shard]} is not a readable safetensors file ({err}); re-save the model") from err
    return ", ".join(to_check)


def _save_processor(source: str | Path, target: Path) -> dict[str, Path]:
    """Load the tokenizer and image processor at ``source`` and save them into ``target``.

    Saved separately (``tokenizer*.json`` + ``preprocessor_config.json``) rather than as one
    processor: that layout loads with ``CLIPProcessor``/``Auto*`` on transformers 4.x and 5.x alike.
    """
    from transformers import AutoImageProcessor, AutoTokenizer

    target.mkdir(parents=True, exist_ok=True)
    try:
        AutoTokenizer.from_pretrained(source).save_pretrained(target)
        AutoImageProcessor.from_pretrained(source).save_pretrained(target)
    except (OSError, ValueError, KeyError) as err:
        raise ValueError(f"--processor-from {source}: cannot load a tokenizer and an image processor there ({err})") from err
    return {p.name: p for p in sorted(target.iterdir()) if p.is_file()}


def _check_processor(checkpoint: Path, plan: PushPlan, processor_from) -> None:
    """The repo must load a tokenizer and an image processor, or users cannot run the model."""
    from transformers import AutoImageProcessor, AutoTokenizer

    with tempfile.TemporaryDirectory(prefix="hf-hardneg-check-") as tmp:
        # load from exactly the files that will be uploaded
        for name, path in plan.files.items():
            if not name.endswith(".safetensors"):
                (Path(tmp) / name).symlink_to(path.resolve())
        problems = []
        for kind, loader in (("tokenizer", AutoTokenizer), ("image processor", AutoImageProcessor)):
            try:
                loader.from_pretrained(tmp)
            except Exception as err:  # transformers raises OSError/ValueError/KeyError depending on what is missing
                problems.append(f"{kind} ({type(err).__name__}: {str(err).splitlines()[0][:200]})")
    if problems:
        hint = (
            f"the files from --processor-from {processor_from} did not fix it"
            if processor_from
            else "save them beside the weights (tokenizer.save_pretrained(folder), image_processor.save_pretrained(folder); "
            "HardNegCLIPTrainer does so in every checkpoint) or pass --processor-from BASE_MODEL_OR_FOLDER"
        )
        raise ValueError(f"{checkpoint} cannot load its {' and '.join(problems)}; {hint}")


def _card_record(checkpoint: Path, repo_id: str, *, results=None, license=None):
    """The record of the card to upload: the one the trainer saved, or one built from the folder's files,
    updated with the repo id (usage snippet, model-index name), ``results`` and ``license``.

    Returns ``None`` when the folder has a README.md that hf_hardneg did not write: that card is the
    user's and is uploaded unchanged.
    """
    from hf_hardneg.model_card import load_model_card_inputs

    record = load_model_card_inputs(checkpoint)
    if record is None and (checkpoint / "README.md").is_file():
        if results is not None or license is not None:
            raise ValueError(
                f"{checkpoint / 'README.md'} was not written by hf_hardneg (no hardneg_card.json beside it), so "
                "--results/--license cannot be merged into it; edit it yourself or delete it to generate a card"
            )
        return None
    if record is None:
        logger.warning("%s has no model card record; building a card from config.json and trainer_state.json", checkpoint)
        record = _record_from_folder(checkpoint)
    eval_results = _load_results(results) if results is not None else None
    return record.replace(model_id=repo_id, model_name=repo_id.split("/")[-1], eval_results=eval_results, license=license)


def _record_from_folder(checkpoint: Path):
    """What a folder without a card record tells: the architecture, and progress and logged
    evaluations from the Trainer's ``trainer_state.json``."""
    from hf_hardneg.model_card import ModelCardInputs, logged_eval_results, processor_class_for

    config = json.loads((checkpoint / "config.json").read_text(encoding="utf-8"))
    architectures = config.get("architectures") or []
    architecture = architectures[0] if architectures else None
    record = ModelCardInputs(architecture=architecture, processor_class=processor_class_for(architecture))
    state_file = checkpoint / "trainer_state.json"
    if state_file.is_file():
        state = json.loads(state_file.read_text(encoding="utf-8"))
        step = state.get("global_step")
        record = record.replace(global_step=step, max_steps=state.get("max_steps"), epoch=state.get("epoch"),
                                eval_results=logged_eval_results(state.get("log_history"), step))
    return record


def _load_results(results: str | Path | dict) -> dict:
    """A results dict, or the results.json (or its folder) that ``hf-hardneg evaluate`` wrote."""
    if isinstance(results, dict):
        return results
    from hf_hardneg.evaluation.report import load_results

    return load_results(results)


def push_checkpoint(
    checkpoint: str | Path,
    repo_id: str,
    *,
    private: bool = False,
    results: str | Path | dict | None = None,
    license: str | None = None,
    processor_from: str | Path | None = None,
    revision: str | None = None,
    create_pr: bool = False,
    commit_message: str | None = None,
    api=None,
):
    """Publish ``checkpoint`` to the Hub model repo ``repo_id`` in one commit; return the ``CommitInfo``.

    The repo is created if needed (``private`` applies to a new repo; pushing to an existing public
    repo with ``private=True`` is refused rather than silently published). Authentication comes from
    ``HF_TOKEN`` or the cached ``hf auth login`` token.
    """
    with tempfile.TemporaryDirectory(prefix="hf-hardneg-push-") as staging:
        plan = plan_push(
            checkpoint, repo_id, results=results, license=license, processor_from=processor_from, staging_dir=staging
        )
        return upload_plan(
            plan, repo_id, private=private, revision=revision, create_pr=create_pr, commit_message=commit_message, api=api
        )


def upload_plan(
    plan: PushPlan,
    repo_id: str,
    *,
    private: bool = False,
    revision: str | None = None,
    create_pr: bool = False,
    commit_message: str | None = None,
    api=None,
):
    """Create the repo if needed and commit ``plan.files`` to it (see :func:`push_checkpoint`)."""
    from huggingface_hub import CommitOperationAdd, HfApi, get_token

    api = api or HfApi()
    if api.token is None and get_token() is None:
        raise PermissionError("not logged in to the Hugging Face Hub: run `hf auth login` or set HF_TOKEN")
    # private=None lets a new repo follow the account's or organisation's default visibility
    repo_url = api.create_repo(repo_id, private=True if private else None, exist_ok=True, repo_type="model")
    repo_id = getattr(repo_url, "repo_id", None) or repo_id
    if private and not getattr(api.repo_info(repo_id, repo_type="model"), "private", False):
        raise PermissionError(
            f"{repo_id} already exists and is public; --private only applies to new repos. Make it private "
            "on the Hub first, or push without --private"
        )
    if revision is not None and not create_pr:
        api.create_branch(repo_id, branch=revision, repo_type="model", exist_ok=True)
    operations = [
        CommitOperationAdd(path_in_repo=name, path_or_fileobj=str(path)) for name, path in sorted(plan.files.items())
    ]
    return api.create_commit(
        repo_id,
        operations=operations,
        commit_message=commit_message or f"Upload {plan.checkpoint.name} with hf-hardneg push",
        repo_type="model",
        revision=revision,
        create_pr=create_pr,
    )


# ---------------------------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------------------------


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "push",
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
    parser.set_defaults(func=run)


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"


def run(args: argparse.Namespace) -> int:
    try:
        with tempfile.TemporaryDirectory(prefix="hf-hardneg-push-") as staging:
            plan = plan_push(
                args.checkpoint,
                args.repo_id,
                results=args.results,
                license=args.license,
                processor_from=args.processor_from,
                staging_dir=staging,
            )
            _print_plan(plan, args.repo_id)
            if args.dry_run:
                print("dry run: nothing was uploaded")
                return 0
            commit = upload_plan(
                plan,
                args.repo_id,
                private=args.private,
                revision=args.revision,
                create_pr=args.create_pr,
                commit_message=args.commit_message,
            )
    except (FileNotFoundError, ValueError, PermissionError) as err:
        print(f"hf-hardneg push: error: {err}", file=sys.stderr)
        return 2
    except OSError as err:  # huggingface_hub's HTTP errors, offline mode, network failures
        print(f"hf-hardneg push: upload failed: {type(err).__name__}: {err}", file=sys.stderr)
        return 1
    url = getattr(commit, "pr_url", None) or getattr(commit, "commit_url", None)
    print(f"pushed {args.checkpoint} to {args.repo_id}" + (f": {url}" if url else ""))
    return 0


def _print_plan(plan: PushPlan, repo_id: str) -> None:
    print(f"{plan.checkpoint} -> {repo_id}: {len(plan.files)} file(s), {_size(plan.total_bytes())}")
    for name, path in sorted(plan.files.items()):
        print(f"  + {name} ({_size(path.stat().st_size)})")
    for name, reason in sorted(plan.skipped.items()):
        print(f"  - {name}: {reason}")
