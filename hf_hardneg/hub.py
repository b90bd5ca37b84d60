"""Everything that talks to the Hugging Face Hub: checks, authentication, uploads, network errors.

One upload path serves ``hf-hardneg push`` (a checkpoint as a model repo) and the
InpaintCOCO builder (a dataset repo), so both check the same things the same way:

* the repo id and the licence are validated before anything is built or sent;
* the token comes from ``HF_TOKEN`` or the ``hf auth login`` cache, resolved by
  ``huggingface_hub`` itself: this module never holds it in a variable, so it
  cannot be logged or printed, and no command takes it as an argument;
* a network failure, offline mode or an HTTP error from the Hub becomes one
  :class:`HubError` line naming what failed and what to check, instead of a
  traceback through the HTTP client.

Publishing a checkpoint (:func:`plan_push`, :func:`push_checkpoint`) lives here
too: weights as safetensors only, the Trainer's resume state left out, the model
card re-rendered for the repo.
"""

from __future__ import annotations

import contextlib
import difflib
import fnmatch
import json
import logging
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

logger = logging.getLogger(__name__)

__all__ = [
    "HUB_LICENSES",
    "HubError",
    "PushPlan",
    "check_license",
    "check_repo_id",
    "hub_errors",
    "plan_push",
    "push_checkpoint",
    "require_token",
    "upload",
]

#: Licence identifiers the Hub accepts in a card's ``license:`` field (its documented list; anything
#: else is ``other`` with ``license_name`` and ``license_link``).
HUB_LICENSES = frozenset("""
apache-2.0 mit openrail bigscience-openrail-m creativeml-openrail-m bigscience-bloom-rail-1.0 bigcode-openrail-m
afl-3.0 artistic-2.0 bsl-1.0 bsd bsd-2-clause bsd-3-clause bsd-3-clause-clear c-uda cc cc0-1.0 cc-by-2.0
cc-by-2.5 cc-by-3.0 cc-by-4.0 cc-by-sa-3.0 cc-by-sa-4.0 cc-by-nc-2.0 cc-by-nc-3.0 cc-by-nc-4.0 cc-by-nd-4.0
cc-by-nc-nd-3.0 cc-by-nc-nd-4.0 cc-by-nc-sa-2.0 cc-by-nc-sa-3.0 cc-by-nc-sa-4.0 cdla-sharing-1.0
cdla-permissive-1.0 cdla-permissive-2.0 wtfpl ecl-2.0 epl-1.0 epl-2.0 etalab-2.0 eupl-1.1 eupl-1.2 agpl-3.0 gfdl
gpl gpl-2.0 gpl-3.0 lgpl lgpl-2.1 lgpl-3.0 isc h-research intel-research lppl-1.3c ms-pl apple-ascl apple-amlr
mpl-2.0 odc-by odbl openrail++ osl-3.0 postgresql ofl-1.1 ncsa unlicense zlib pddl lgpl-lr deepfloyd-if-license
fair-noncommercial-research-license llama2 llama3 llama3.1 llama3.2 llama3.3 llama4 gemma unknown other
""".split())


class HubError(OSError):
    """The Hub could not be reached or refused a request; the message says what to check."""


def check_repo_id(repo_id: str, flag: str = "--repo-id") -> str:
    """``repo_id`` if it is a valid ``NAME`` or ``NAMESPACE/NAME``; else a ``ValueError`` saying what is allowed."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(repo_id)
    except HFValidationError as err:
        raise ValueError(f"{flag} {repo_id!r} is not a Hub repo id: {str(err).split(':')[0]}; use USER/NAME, "
                         "e.g. my-user/clip-hn1-color") from None
    return repo_id


def check_license(license: str | None, flag: str = "--license") -> str | None:
    """``license`` if the Hub knows it (or ``None``); else a ``ValueError`` with the nearest identifiers."""
    if license is None or license in HUB_LICENSES:
        return license
    near = difflib.get_close_matches(license.lower(), sorted(HUB_LICENSES), n=3, cutoff=0.5)
    hint = f" (did you mean {', '.join(near)}?)" if near else ""
    raise ValueError(f"{flag} {license!r} is not a licence identifier the Hub knows{hint}; use one of the ids at "
                     "https://huggingface.co/docs/hub/repositories-licenses, such as apache-2.0, mit or cc-by-4.0")


def require_token(what: str = "uploading") -> None:
    """Fail early, before any long build, when no token is configured. The token itself is never read here."""
    import huggingface_hub

    if huggingface_hub.get_token() is None:
        raise PermissionError(f"{what} needs a Hugging Face token: run `hf auth login` or set HF_TOKEN "
                              "(a token with write access)")


def _is_network_error(err: BaseException) -> bool:
    """Connection failures of whichever HTTP client huggingface_hub uses (httpx, requests), or offline mode."""
    from huggingface_hub.errors import OfflineModeIsEnabled

    names = {cls.__name__ for cls in type(err).__mro__}
    return isinstance(err, (OfflineModeIsEnabled, ConnectionError, TimeoutError)) or bool(
        names & {"TransportError", "RequestError", "ConnectionError", "ConnectError", "TimeoutException"})


@contextlib.contextmanager
def hub_errors(action: str) -> Iterator[None]:
    """Turn network and Hub HTTP errors raised while doing ``action`` into one-line :class:`HubError`\\ s."""
    from huggingface_hub.errors import HfHubHTTPError

    try:
        yield
    except HubError:
        raise
    except HfHubHTTPError as err:
        first = (str(err).strip().splitlines() or [""])[0]
        raise HubError(f"{type(err).__name__}: {first} -- the Hub refused a request while {action}; check the "
                       "repo id and that your token has write access to it") from None
    except Exception as err:
        if not _is_network_error(err):
            raise
        first = (str(err).strip().splitlines() or [""])[0]
        raise HubError(f"{type(err).__name__}: {first} -- could not reach the Hugging Face Hub while {action}; "
                       "check the network connection, HF_ENDPOINT, and that HF_HUB_OFFLINE is not set") from None


def upload(
    repo_id: str,
    *,
    repo_type: str = "model",
    files: dict[str, Path] | None = None,
    folder: str | Path | None = None,
    allow_patterns: list[str] | None = None,
    delete_patterns: list[str] | None = None,
    private: bool = False,
    revision: str | None = None,
    create_pr: bool = False,
    commit_message: str = "Upload with hf-hardneg",
    api=None,
):
    """Create ``repo_id`` if needed and commit, in one commit, either ``files`` (path in repo -> local file)
    or ``folder`` (filtered by ``allow_patterns``; remote files matching ``delete_patterns`` that the folder
    does not have are deleted). Returns what ``huggingface_hub`` returns for the commit.

    ``private`` applies to a new repo; pushing with ``private=True`` to an existing public repo is
    refused rather than silently published. Without ``private`` a new repo follows the account's or
    organisation's default visibility.
    """
    from huggingface_hub import CommitOperationAdd, HfApi

    if (files is None) == (folder is None):
        raise ValueError("pass exactly one of files= or folder=")
    check_repo_id(repo_id)
    require_token()
    api = api or HfApi()
    action = f"uploading to {repo_type} repo {repo_id}"
    with hub_errors(action):
        repo_url = api.create_repo(repo_id, repo_type=repo_type, private=True if private else None, exist_ok=True)
        repo_id = getattr(repo_url, "repo_id", None) or repo_id
        if private and not getattr(api.repo_info(repo_id, repo_type=repo_type), "private", False):
            raise PermissionError(
                f"{repo_id} already exists and is public; --private only applies to new repos. Make it private "
                "on the Hub first, or push without --private")
        if revision is not None and not create_pr:
            api.create_branch(repo_id, branch=revision, repo_type=repo_type, exist_ok=True)
        if folder is not None:
            api.upload_folder(repo_id=repo_id, repo_type=repo_type, folder_path=folder, allow_patterns=allow_patterns,
                              delete_patterns=delete_patterns, commit_message=commit_message, revision=revision,
                              create_pr=create_pr)
            return repo_url
        operations = [CommitOperationAdd(path_in_repo=name, path_or_fileobj=str(path))
                      for name, path in sorted(files.items())]
        return api.create_commit(repo_id, operations=operations, commit_message=commit_message,
                                 repo_type=repo_type, revision=revision, create_pr=create_pr)


# -- publishing a checkpoint --------------------------------------------------------------------------------

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
    "checkpoint_complete.json": "record of a finished checkpoint save (resume only)",
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
    check_repo_id(repo_id)
    check_license(license)
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
    dry_run: bool = False,
    on_plan: Callable[[PushPlan], None] | None = None,
    api=None,
):
    """Publish ``checkpoint`` to the Hub model repo ``repo_id`` in one commit; return the commit info.

    ``on_plan`` sees the plan (what goes, what is left out and why) before anything is sent;
    ``dry_run`` stops there and returns ``None``. See :func:`upload` for ``private``.
    """
    check_repo_id(repo_id)
    if not dry_run:
        require_token(f"pushing to {repo_id}")
    with tempfile.TemporaryDirectory(prefix="hf-hardneg-push-") as staging:
        plan = plan_push(checkpoint, repo_id, results=results, license=license, processor_from=processor_from,
                         staging_dir=staging)
        if on_plan is not None:
            on_plan(plan)
        if dry_run:
            return None
        return upload(repo_id, repo_type="model", files=plan.files, private=private, revision=revision,
                      create_pr=create_pr, api=api,
                      commit_message=commit_message or f"Upload {plan.checkpoint.name} with hf-hardneg push")
