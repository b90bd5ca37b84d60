"""Model cards for checkpoints trained with hard negatives.

A checkpoint is only worth publishing if a reader can tell what it was trained on
and how it scores, so every checkpoint folder gets a ``README.md`` that the Hub
renders as its model card. The card is filled from one JSON-serialisable record,
:class:`ModelCardInputs`, which is saved beside it (``hardneg_card.json``). Keeping
the record means a card can be re-rendered later without the training process:
``hf-hardneg push`` re-renders it with the Hub repo id and with evaluation results
measured after training, and nothing has to be parsed back out of Markdown.

Three ways in:

* :func:`create_model_card` / :func:`write_model_card` from explicit values;
* :func:`inputs_from_trainer` from a live ``Trainer`` (arguments, model, data, state);
* :class:`ModelCardCallback`, a ``TrainerCallback`` that writes the card into each
  checkpoint folder as it is saved and into ``output_dir`` before every Hub push;
  :func:`write_trainer_model_card` is the body of ``Trainer.create_model_card``, which
  ``Trainer.push_to_hub`` calls before its final upload.

The Markdown body comes from the Jinja template shipped in
``hf_hardneg/templates/model_card.md.j2``; the YAML metadata (``base_model``,
``datasets``, ``license``, ``tags``, ``model-index`` with the evaluation results)
is built with :class:`huggingface_hub.ModelCardData`.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import math
import os
import platform
import re
import time
from collections import Counter
from dataclasses import dataclass, field
from enum import Enum
from importlib import resources
from pathlib import Path
from typing import Any, Mapping

from huggingface_hub import EvalResult, ModelCard, ModelCardData
from transformers import TrainerCallback

logger = logging.getLogger(__name__)

__all__ = [
    "CARD_INPUTS_NAME",
    "ModelCardCallback",
    "ModelCardInputs",
    "create_model_card",
    "dataset_summary",
    "describe_concepts",
    "describe_hardware",
    "eval_results_to_model_index",
    "find_model_card_callback",
    "inputs_from_trainer",
    "load_model_card_inputs",
    "logged_eval_results",
    "non_default_hyperparameters",
    "processor_class_for",
    "write_model_card",
    "write_trainer_model_card",
]

#: File beside README.md that holds the record a card was rendered from.
CARD_INPUTS_NAME = "hardneg_card.json"
TEMPLATE_NAME = "model_card.md.j2"
LIBRARY_NAME = "transformers"  # what loads the weights on the Hub (the widget and "Use this model")
DEFAULT_TAGS = ("hf_hardneg", "clip", "hard-negatives", "contrastive-learning", "vision-language")
INPAINTCOCO_REPO_ID = "phiyodr/InpaintCOCO"

# Arguments that describe where and how a run is logged or stored, not how the model is trained.
# They are left out of the hyperparameter table even when they differ from the defaults.
_BOOKKEEPING_ARGS = frozenset(
    {
        "output_dir", "logging_dir", "run_name", "project", "report_to", "push_to_hub", "resume_from_checkpoint",
        "overwrite_output_dir", "do_train", "do_eval", "do_predict", "disable_tqdm", "local_rank",
        "skip_memory_metrics", "include_num_input_tokens_seen", "dataloader_num_workers",
        "dataloader_pin_memory", "dataloader_persistent_workers", "dataloader_prefetch_factor",
        "restore_callback_states_from_checkpoint", "ignore_data_skip", "use_cpu", "no_cuda",
        "per_device_eval_batch_size", "eval_accumulation_steps", "prediction_loss_only",
    }
)
_BOOKKEEPING_PREFIXES = ("hub_", "logging_", "log_", "save_", "eval_", "trackio_", "push_to_hub_", "ddp_", "fsdp")
# Hard-negative settings have their own section in the card.
_HARD_NEGATIVE_ARGS = ("num_hard_negatives", "hard_negative_mode", "concepts", "substitution_seed")

_MODE_HELP = {
    "replace": "each image's hard negatives take the place of randomly chosen in-batch negatives in its row "
    "of the similarity matrix (the paper's setting)",
    "append": "each image's hard negatives are added to its row as extra candidates; the in-batch negatives stay",
}

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def _is_hub_id(name: str | None) -> bool:
    """An ``owner/name`` Hub repo id that is not also a local path.

    Bare names (legacy ids such as ``bert-base-uncased``) are not accepted: they cannot be
    told apart from a relative folder name once the card is rendered elsewhere.
    """
    return bool(name) and _HUB_ID.match(name) is not None and not Path(name).exists() and ".." not in name


# the Hub cache's folder of a downloaded repo: .../models--<owner>--<name>/snapshots/<revision>
_HUB_CACHE_FOLDER = re.compile(r"^models--(?P<owner>[^/]+?)--(?P<name>[^/]+)$")


def _model_source(name_or_path: str | None) -> str | None:
    """How a card names the model training started from, without the machine's folder layout.

    A Hub id stays as it is. A local folder becomes the Hub id it is a copy of where that is
    known (a folder of the Hub cache, or a checkpoint whose card record names the repo it was
    pushed to), else just the folder's name: a card is published, a path like
    ``/home/me/models/clip`` is nobody else's business and useless to them.
    """
    if not name_or_path:
        return None
    path = Path(name_or_path)
    if not path.exists():
        return str(name_or_path)
    path = path.resolve()
    for part in reversed(path.parts):
        found = _HUB_CACHE_FOLDER.match(part)
        if found:
            return f"{found.group('owner')}/{found.group('name')}"
    record = path / CARD_INPUTS_NAME
    if record.is_file():
        try:
            pushed_as = json.loads(record.read_text(encoding="utf-8")).get("model_id")
        except (ValueError, AttributeError):
            pushed_as = None
        if isinstance(pushed_as, str) and _HUB_ID.match(pushed_as):
            return pushed_as
    return path.name


@dataclass
class ModelCardInputs:
    """Everything a card says about one checkpoint; JSON-serialisable so it can be saved and re-rendered.

    Values that were not recorded stay ``None`` / empty and the card says so instead of guessing.

    Args:
        model_name: title of the card and ``model_name`` of the model-index (defaults to the folder name).
        model_id: what the usage snippet passes to ``from_pretrained`` (the Hub repo id once pushed).
        base_model: the model training started from: a Hub id, or a local folder's name (never its path);
            only Hub ids go into the metadata.
        architecture: ``transformers`` class of the model, e.g. ``"CLIPModel"``.
        processor_class: class the usage snippet loads the processor with.
        datasets: Hub dataset ids used for training/evaluation (metadata ``datasets``).
        training_data: one or two sentences on the training set.
        num_train_rows: image-caption pairs in the training set.
        concept_subsets: rows per concept (the concept whose keyword produced the row's negatives).
        num_hard_negatives, hard_negative_mode, substitution_seed: the hard-negative settings.
        concepts: concept name -> ``{"keywords": count, "examples": "white → blue, ..."}``
            (see :func:`describe_concepts`; a plain list of names is accepted too).
        config_class: name of the arguments class ``hyperparameters`` was compared with.
        hyperparameters: only the arguments whose value differs from that class's defaults.
        per_device_batch_size, num_processes, gradient_accumulation_steps: for the effective batch size.
        hardware: e.g. ``"1 x NVIDIA H100 80GB HBM3"``.
        training_time_s: wall-clock seconds of training up to this checkpoint.
        global_step, max_steps, epoch: progress at this checkpoint.
        trained_parameters: what trained (``trainable``, ``total``, ``share``, ``what``; see
            :func:`hf_hardneg.parameter_efficient.trained_parameter_summary`), e.g. LoRA adapters only.
        eval_results: results dict as returned by ``hf_hardneg.evaluation.evaluate_model``.
        license: license id for the metadata; ``None`` leaves it out and the card says so.
        tags: extra Hub tags (the library's own tags are always added).
        versions: package -> version of the training environment.
    """

    model_name: str | None = None
    model_id: str | None = None
    base_model: str | None = None
    architecture: str | None = None
    processor_class: str = "AutoProcessor"
    datasets: list[str] = field(default_factory=list)
    training_data: str | None = None
    num_train_rows: int | None = None
    concept_subsets: dict[str, int] = field(default_factory=dict)
    num_hard_negatives: int | None = None
    hard_negative_mode: str | None = None
    concepts: dict[str, dict[str, Any]] = field(default_factory=dict)
    substitution_seed: int | None = None
    config_class: str = "HardNegCLIPConfig"
    hyperparameters: dict[str, Any] = field(default_factory=dict)
    per_device_batch_size: int | None = None
    num_processes: int | None = None
    gradient_accumulation_steps: int | None = None
    hardware: str | None = None
    training_time_s: float | None = None
    global_step: int | None = None
    max_steps: int | None = None
    epoch: float | None = None
    trained_parameters: dict[str, Any] = field(default_factory=dict)
    eval_results: dict[str, Any] | None = None
    license: str | None = None
    tags: list[str] = field(default_factory=list)
    versions: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.concepts, Mapping):  # names or Concept objects given directly
            self.concepts = describe_concepts(self.concepts)

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=False, default=_json_default)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "ModelCardInputs":
        """Build from a dict, ignoring keys this version does not know (a card written by a newer release)."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            logger.warning("ignoring unknown model card fields %s", unknown)
        return cls(**{k: v for k, v in data.items() if k in known})

    def replace(self, **changes: Any) -> "ModelCardInputs":
        """A copy with ``changes`` applied; ``None`` values in ``changes`` are ignored (keep what is recorded)."""
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})


def _json_default(value: Any) -> Any:
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, Path):
        return str(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    if hasattr(value, "to_dict"):
        return value.to_dict()
    if hasattr(value, "item"):  # numpy / torch scalars
        return value.item()
    return str(value)


# ---------------------------------------------------------------------------------------------
# Rendering
# ---------------------------------------------------------------------------------------------


def _compile(source: str):
    """The card template compiled with the Jinja settings it is written for.

    Not ``ModelCard.from_template``, which renders with a default ``jinja2.Template``:
    it would print nothing for a misspelt variable (StrictUndefined makes that fail the
    tests) and keep the blank lines of every block tag (trim_blocks/lstrip_blocks).
    """
    import jinja2

    env = jinja2.Environment(
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        autoescape=False,  # Markdown, not HTML
    )
    return env.from_string(source)


@functools.lru_cache(maxsize=1)
def _packaged_template():
    return _compile(resources.files("hf_hardneg").joinpath("templates", TEMPLATE_NAME).read_text(encoding="utf-8"))


def create_model_card(
    inputs: ModelCardInputs | None = None, *, template: str | os.PathLike | None = None, **fields: Any
) -> ModelCard:
    """Render the card for ``inputs`` (or for a record built from ``fields``) as a ``huggingface_hub.ModelCard``.

    ``fields`` override values of ``inputs``. The card's metadata carries the evaluation
    results as a ``model-index``, so the Hub shows them beside the model. ``template`` is a
    Jinja file replacing the packaged one; it receives the variables listed in
    ``model_cards/README.md`` and must start with the ``{{ card_data }}`` YAML block.
    """
    inputs = (inputs or ModelCardInputs()).replace(**fields) if fields or inputs is None else inputs
    model_name = inputs.model_name or (inputs.model_id.rstrip("/").split("/")[-1] if inputs.model_id else None)
    model_name = model_name or "hardneg-clip"
    model_id = inputs.model_id or model_name

    index = eval_results_to_model_index(inputs.eval_results)
    card_data = ModelCardData(
        model_name=model_name if index else None,  # only meaningful inside model-index
        base_model=inputs.base_model if _is_hub_id(inputs.base_model) else None,
        datasets=sorted(set(inputs.datasets)) or None,
        language="en",
        license=inputs.license,
        library_name=LIBRARY_NAME,
        pipeline_tag="zero-shot-image-classification",
        tags=[*DEFAULT_TAGS, *(f"concept-{part}" for c in inputs.concepts for part in c.split("+")), *inputs.tags],
        eval_results=index or None,
    )
    eval_table, eval_source = _eval_markdown(inputs.eval_results)
    context = dict(
        card_data=card_data.to_yaml(),
        model_name=model_name,
        model_id=model_id,
        base_model=inputs.base_model,
        base_model_url=f"https://huggingface.co/{inputs.base_model}" if _is_hub_id(inputs.base_model) else None,
        architecture=inputs.architecture,
        processor_class=inputs.processor_class,
        text_padding=_usage_padding(inputs.architecture),
        training_data=inputs.training_data,
        dataset_links=[
            (name, f"https://huggingface.co/datasets/{name}" if _is_hub_id(name) else None)
            for name in sorted(set(inputs.datasets))
        ],
        num_train_rows=inputs.num_train_rows,
        concept_subsets=sorted(inputs.concept_subsets.items(), key=lambda kv: (-kv[1], kv[0])),
        hard_negatives=_hard_negative_section(inputs),
        config_class=inputs.config_class,
        hyperparameters=[(k, _format_value(v)) for k, v in sorted(inputs.hyperparameters.items())],
        effective_batch=_effective_batch(inputs),
        hardware=inputs.hardware,
        training_time=_format_duration(inputs.training_time_s),
        progress=_format_progress(inputs),
        eval_table=eval_table,
        eval_source=eval_source,
        license_note=None
        if inputs.license
        else "No license was recorded for this checkpoint; it inherits the terms of its base model and "
        "training data (COCO captions: CC BY 4.0; COCO images: their Flickr licenses).",
        versions=sorted(inputs.versions.items()),
        trained_parameters=inputs.trained_parameters or None,
    )
    compiled = _packaged_template() if template is None else _compile(Path(template).read_text(encoding="utf-8"))
    return ModelCard(compiled.render(**context))


def write_model_card(output_dir: str | os.PathLike, inputs: ModelCardInputs | None = None, **fields: Any) -> Path:
    """Write ``README.md`` and its record ``hardneg_card.json`` into ``output_dir``; return the README path.

    Both files are written to a temporary name and renamed, so a Hub upload that runs
    at the same moment (``hub_strategy="every_save"``) never sees half a card.
    """
    inputs = (inputs or ModelCardInputs()).replace(**fields) if fields or inputs is None else inputs
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    card = create_model_card(inputs)
    readme = output_dir / "README.md"
    _atomic_write(output_dir / CARD_INPUTS_NAME, inputs.to_json() + "\n")
    _atomic_write(readme, str(card))
    return readme


def load_model_card_inputs(folder: str | os.PathLike) -> ModelCardInputs | None:
    """The record a folder's card was rendered from, or ``None`` if the folder has none."""
    path = Path(folder) / CARD_INPUTS_NAME
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not valid JSON ({err}); delete it to rebuild the card from the checkpoint") from err
    if not isinstance(data, dict):
        raise ValueError(f"{path} must hold a JSON object, got {type(data).__name__}")
    return ModelCardInputs.from_dict(data)


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def _hard_negative_section(inputs: ModelCardInputs) -> dict[str, Any] | None:
    """Template context of the hard-negative settings; ``None`` when the record has none at all."""
    if inputs.num_hard_negatives is None and not inputs.concepts:
        return None
    mode = inputs.hard_negative_mode or "replace"
    return dict(
        num_hard_negatives=inputs.num_hard_negatives if inputs.num_hard_negatives is not None else "not recorded",
        mode=mode,
        mode_help=_MODE_HELP.get(mode, "see the hf_hardneg documentation"),
        concepts=[
            {"name": name, "keywords": info.get("keywords"), "sample": info.get("examples", "")}
            for name, info in inputs.concepts.items()
        ],
        substitution_seed=inputs.substitution_seed,
    )


def _effective_batch(inputs: ModelCardInputs) -> dict[str, int] | None:
    if inputs.per_device_batch_size is None:
        return None
    processes = inputs.num_processes or 1
    accumulation = inputs.gradient_accumulation_steps or 1
    return dict(
        per_device=inputs.per_device_batch_size,
        processes=processes,
        accumulation=accumulation,
        total=inputs.per_device_batch_size * processes * accumulation,
    )


def _format_value(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, (list, tuple, dict)):
        return json.dumps(value, default=_json_default)
    return str(value)


def _format_duration(seconds: float | None) -> str | None:
    if seconds is None or not math.isfinite(seconds):
        return None
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours} h {minutes:02d} min"
    if minutes:
        return f"{minutes} min {secs:02d} s"
    return f"{secs} s"


def _format_progress(inputs: ModelCardInputs) -> str | None:
    parts = []
    if inputs.global_step is not None:
        parts.append(f"step {inputs.global_step:,}" + (f" of {inputs.max_steps:,}" if inputs.max_steps else ""))
    if inputs.epoch is not None:
        parts.append(f"epoch {inputs.epoch:.2f}")
    return ", ".join(parts) or None


# ---------------------------------------------------------------------------------------------
# What the run was: hyperparameters, hardware, data
# ---------------------------------------------------------------------------------------------


def _field_defaults(cls: type) -> dict[str, Any]:
    """Declared defaults of an arguments dataclass, read without instantiating it.

    Instantiating ``TrainingArguments`` during training is not an option: its
    ``__post_init__`` re-initialises accelerate's process state under the running Trainer.
    """
    out = {}
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        if f.default is not dataclasses.MISSING:
            out[f.name] = f.default
        elif f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
            out[f.name] = f.default_factory()  # type: ignore[misc]
    return out


def _accelerator_config_defaults() -> dict[str, Any] | None:
    try:
        from transformers.trainer_pt_utils import AcceleratorConfig
    except ImportError:
        return None
    return _normalise(dataclasses.asdict(AcceleratorConfig()))


def _is_unset(value: Any) -> bool:
    """Values that ``__post_init__`` turns a ``None``/empty default into, all meaning "not set"."""
    return value is None or value is False or value in ("", "none", [], {}, ["none"])


def _same_as_default(name: str, default: Any, value: Any) -> bool:
    default, value = _normalise(default), _normalise(value)
    if default == value or (_is_unset(default) and _is_unset(value)):
        return True
    if name == "accelerator_config" and default is None and isinstance(value, dict):
        reference = _accelerator_config_defaults() or {}
        # HardNegCLIPConfig always turns dispatch_batches off (see its __post_init__): not a user choice
        return all(k in reference and (reference[k] == v or (k == "dispatch_batches" and not v))
                   for k, v in value.items())
    return False


def non_default_hyperparameters(args: Any) -> dict[str, Any]:
    """The training arguments whose values differ from the declared defaults of ``type(args)``.

    ``transformers.modelcard.extract_hyperparameters_from_trainer`` lists a fixed set
    (learning rate, batch sizes, seed, ...) whatever their values; a card that lists
    only what a run changed shows at a glance how it departs from the paper's recipe.

    Bookkeeping (paths, logging, saving, Hub settings, tokens) and the hard-negative
    settings, which the card lists in their own section, are left out. Token values are
    never returned.
    """
    current = args.to_dict() if hasattr(args, "to_dict") else dataclasses.asdict(args)
    defaults = _field_defaults(type(args))
    out = {}
    for name, value in current.items():
        if (
            name in _BOOKKEEPING_ARGS
            or name in _HARD_NEGATIVE_ARGS
            or name.startswith(_BOOKKEEPING_PREFIXES)
            or "token" in name
            or name.startswith("_")
        ):
            continue
        if name in defaults and _same_as_default(name, defaults[name], value):
            continue
        out[name] = _normalise(value)
    return out


def _normalise(value: Any) -> Any:
    """Make equal settings compare equal and print as JSON (enums, tuples, nested dicts)."""
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, tuple):
        return [_normalise(v) for v in value]
    if isinstance(value, list):
        return [_normalise(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _normalise(v) for k, v in value.items()}
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return json.loads(json.dumps(value, default=_json_default))


def describe_hardware(num_processes: int = 1, device_type: str | None = None) -> str:
    """A short, human-readable description such as ``"4 x NVIDIA H100 80GB HBM3"`` or ``"CPU (x86_64, 16 cores)"``."""
    import torch

    if device_type in (None, "cuda") and torch.cuda.is_available():
        return f"{num_processes} x {torch.cuda.get_device_name(torch.cuda.current_device())}"
    mps = getattr(torch.backends, "mps", None)
    if device_type == "mps" or (device_type is None and mps is not None and mps.is_available()):
        return f"{num_processes} x Apple MPS ({platform.machine()})"
    cores = os.cpu_count() or 0
    cpu = f"CPU ({platform.machine() or 'unknown'}, {cores} cores)"
    return cpu if num_processes == 1 else f"{num_processes} processes on {cpu}"


def _library_versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for package in ("hf_hardneg", "transformers", "torch", "datasets", "accelerate", "huggingface_hub"):
        try:
            out[package] = version(package)
        except PackageNotFoundError:
            continue
    return out


def dataset_summary(dataset: Any, concept_column: str = "hard_negative_concept") -> dict[str, Any]:
    """Rows, per-concept row counts and the dataset's Hub name, from a ``datasets.Dataset``.

    Streaming datasets have no length; only their name is reported then.
    """
    out: dict[str, Any] = {}
    info = getattr(dataset, "info", None)
    name = getattr(info, "dataset_name", None) if info is not None else None
    if name and _is_hub_id(name):  # packaged builders ("json", "parquet", ...) and local names are not Hub ids
        out["datasets"] = [name]
    try:
        out["num_train_rows"] = len(dataset)
    except TypeError:  # IterableDataset
        return out
    columns = getattr(dataset, "column_names", None) or []
    if concept_column in columns:
        counts = Counter(v for v in dataset[concept_column] if v is not None)
        out["concept_subsets"] = {str(k): int(v) for k, v in counts.items()}
    return out


def describe_concepts(value: Any) -> dict[str, dict[str, Any]]:
    """Name -> ``{"keywords": int | None, "examples": str}`` for each concept a run used.

    ``value`` is what the config holds: built-in names, ``Concept`` objects, ``"a+b"``
    combinations or paths of YAML/JSON concept files (expanded into their concepts). It
    is resolved while training, so a card re-rendered elsewhere needs no concept file.
    """
    from hf_hardneg.concepts import resolve_concepts

    if value is None:
        return {}
    if isinstance(value, (str, os.PathLike)) or hasattr(value, "substitutions"):
        value = [value]
    out: dict[str, dict[str, Any]] = {}
    for item in value:
        try:
            found = resolve_concepts(item)
        except (ValueError, TypeError, OSError):
            out[str(item)] = {"keywords": None, "examples": "(not a built-in concept)"}
            continue
        for concept in found:
            examples = ", ".join(f"{k} → {v[0]}" for k, v in list(concept.substitutions.items())[:3])
            out[concept.name] = {"keywords": len(concept.keywords), "examples": examples}
    return out


def inputs_from_trainer(trainer: Any, **overrides: Any) -> ModelCardInputs:
    """Collect a card record from a ``Trainer`` (any subclass): its arguments, model, data and state.

    Uses the trainer's :class:`ModelCardCallback` when it has one (it knows the training
    time and the data split counted at the start); ``overrides`` (e.g.
    ``datasets=["user/coco-captions"]``, ``license="mit"``) win over everything read
    from the trainer.
    """
    callback = find_model_card_callback(trainer) or ModelCardCallback()
    if callback._data is None and getattr(trainer, "train_dataset", None) is not None:
        callback._data = dataset_summary(trainer.train_dataset)
    accelerator = getattr(trainer, "accelerator", None)
    model = accelerator.unwrap_model(trainer.model) if accelerator is not None else trainer.model
    record = callback.inputs(trainer.args, trainer.state, model, getattr(trainer, "processing_class", None))
    return record.replace(**overrides)


def _from_args(args: Any) -> dict[str, Any]:
    return dict(
        config_class=type(args).__name__,
        hyperparameters=non_default_hyperparameters(args),
        num_hard_negatives=getattr(args, "num_hard_negatives", None),
        hard_negative_mode=_normalise(getattr(args, "hard_negative_mode", None)),
        concepts=describe_concepts(getattr(args, "concepts", None)),
        substitution_seed=getattr(args, "substitution_seed", None),
        per_device_batch_size=getattr(args, "per_device_train_batch_size", None),
        num_processes=getattr(args, "world_size", 1),
        gradient_accumulation_steps=getattr(args, "gradient_accumulation_steps", 1),
        hardware=describe_hardware(getattr(args, "world_size", 1), _device_type(args)),
        model_id=getattr(args, "hub_model_id", None) if getattr(args, "push_to_hub", False) else None,
        model_name=(getattr(args, "hub_model_id", None) or "").split("/")[-1] or Path(args.output_dir).name or None,
    )


def _device_type(args: Any) -> str | None:
    try:
        return args.device.type
    except Exception:  # device set-up can fail on a machine without the configured backend
        return None


def _from_model(model: Any) -> dict[str, Any]:
    config = getattr(model, "config", None)
    architectures = getattr(config, "architectures", None) or []
    return dict(
        base_model=_model_source(getattr(model, "name_or_path", None) or getattr(config, "_name_or_path", None)),
        architecture=architectures[0] if architectures else type(model).__name__,
        processor_class=processor_class_for(architectures[0] if architectures else type(model).__name__),
    )


def _from_state(state: Any) -> dict[str, Any]:
    return dict(
        global_step=getattr(state, "global_step", None) or None,
        max_steps=getattr(state, "max_steps", None) or None,
        epoch=getattr(state, "epoch", None),
    )


def processor_class_for(architecture: str | None, processing_class: Any = None) -> str:
    """The class a reader should load the processor with.

    A saved processor (``CLIPProcessor``...) names itself; otherwise the model family
    decides, and ``AutoProcessor`` is the fallback that works for any family.
    """
    from hf_hardneg.models import FAMILIES

    name = type(processing_class).__name__ if processing_class is not None else ""
    if name.endswith("Processor") and not name.endswith("ImageProcessor"):
        return name
    family = FAMILIES.get(architecture or "")
    return family.processor_class if family is not None else "AutoProcessor"


def _usage_padding(architecture: str | None) -> str:
    """The ``padding=`` of the card's usage snippet: what the family was trained with (see ``hf_hardneg.models``)."""
    from hf_hardneg.models import FAMILIES

    family = FAMILIES.get(architecture or "")
    return '"max_length"' if family is not None and family.pads_to_max_length else "True"


# ---------------------------------------------------------------------------------------------
# Trainer integration
# ---------------------------------------------------------------------------------------------

class ModelCardCallback(TrainerCallback):
    """Write a model card into every checkpoint folder, and into ``output_dir`` before each Hub push.

    With it, each ``checkpoint-N`` folder is publishable as it is (``hf-hardneg push
    --checkpoint output/checkpoint-N``), and ``TrainingArguments(push_to_hub=True,
    hub_strategy=...)`` uploads the hard-negative card rather than a generic one.

    Args:
        eval_results: results dict of ``hf_hardneg.evaluation.evaluate_model`` to show; by default
            the latest evaluation during training: the results object ``HardNegCLIPTrainer``
            hands over after each of its evaluators' runs, or, in a plain ``Trainer``, what a
            :class:`~hf_hardneg.evaluation.ConceptEvalCallback` logged (register this callback
            after that one, so that a checkpoint's card shows its own evaluation).
        eval_dataset_name: what logged metrics were measured on, for the card's table.
        **overrides: any :class:`ModelCardInputs` field (``datasets``, ``training_data``, ``license``, ``tags``...).

    ``Trainer.push_to_hub`` regenerates ``README.md`` through ``Trainer.create_model_card``
    after this callback ran; a trainer must override that method with
    :func:`write_trainer_model_card` (``HardNegCLIPTrainer`` does) or the final push
    carries transformers' generic card instead.
    """

    def __init__(
        self,
        eval_results: Mapping[str, Any] | None = None,
        eval_dataset_name: str = "held-out evaluation set",
        **overrides: Any,
    ) -> None:
        unknown = set(overrides) - {f.name for f in dataclasses.fields(ModelCardInputs)}
        if unknown:
            raise TypeError(f"ModelCardCallback got unknown card fields {sorted(unknown)}")
        self.eval_results = dict(eval_results) if eval_results is not None else None
        #: the results of the latest evaluation during training, handed over by HardNegCLIPTrainer
        self.training_results: dict[str, Any] | None = None
        self.eval_dataset_name = eval_dataset_name
        self.overrides = overrides
        self._start: float | None = None
        self._data: dict[str, Any] | None = None

    # -- events ----------------------------------------------------------------------------
    def on_train_begin(self, args, state, control, train_dataloader=None, **kwargs):
        self._start = time.perf_counter()
        if self._data is None and train_dataloader is not None:
            # counted once: the per-concept split of the data does not change during training
            self._data = dataset_summary(getattr(train_dataloader, "dataset", None))

    def on_save(self, args, state, control, model=None, processing_class=None, **kwargs):
        if state.is_world_process_zero:
            folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
            if folder.is_dir():
                self.write(folder, args, state, model, processing_class)

    def on_push_begin(self, args, state, control, model=None, processing_class=None, **kwargs):
        # Runs before the Trainer uploads output_dir (and, for hub_strategy="checkpoint" /
        # "all_checkpoints", the newest checkpoint folder), so both carry a current card.
        if not state.is_world_process_zero:
            return
        self.write(args.output_dir, args, state, model, processing_class)
        folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        if folder.is_dir():
            self.write(folder, args, state, model, processing_class)

    def on_train_end(self, args, state, control, model=None, processing_class=None, **kwargs):
        if state.is_world_process_zero and Path(args.output_dir).is_dir():
            self.write(args.output_dir, args, state, model, processing_class)

    # -- card --------------------------------------------------------------------------------
    def inputs(self, args, state, model=None, processing_class=None) -> ModelCardInputs:
        """The card record for the current moment of training."""
        record = ModelCardInputs(**_from_args(args), **_from_state(state), versions=_library_versions())
        if model is not None:
            from hf_hardneg.parameter_efficient import trained_parameter_summary

            record = record.replace(**_from_model(model), trained_parameters=trained_parameter_summary(model, args))
        if processing_class is not None:
            record.processor_class = processor_class_for(record.architecture, processing_class)
        if self._data:
            record = record.replace(**self._data)
        if self._start is not None:
            record.training_time_s = time.perf_counter() - self._start
        results = self.eval_results or self.training_results
        if results is None:  # a plain Trainer: what a ConceptEvalCallback logged
            results = logged_eval_results(state.log_history, state.global_step, self.eval_dataset_name)
        record.eval_results = results or None
        return record.replace(**self.overrides)

    def write(self, folder, args, state, model=None, processing_class=None) -> Path:
        return write_model_card(folder, self.inputs(args, state, model, processing_class))


# Trainer.push_to_hub(**kwargs) passes these to create_model_card; their card fields.
_PUSH_KWARGS = {"model_name": "model_name", "license": "license", "tags": "tags", "finetuned_from": "base_model",
                "dataset": "datasets"}


def write_trainer_model_card(trainer: Any, output_dir: str | os.PathLike | None = None, **push_kwargs: Any) -> Path | None:
    """Write the hard-negative card of ``trainer`` into ``output_dir`` (default ``args.output_dir``).

    Meant as the body of ``Trainer.create_model_card``, which ``Trainer.push_to_hub`` calls
    right before uploading ``output_dir``; without it the push would replace the card with
    transformers' generic one. ``push_kwargs`` are ``push_to_hub``'s card arguments
    (``model_name``, ``license``, ``tags``, ``finetuned_from``, ``dataset``); others
    (``language``, ``tasks``, ``dataset_tags``, ``dataset_args``) do not apply and are ignored.
    Only the main process writes; returns the README path there, ``None`` elsewhere.
    """
    if not trainer.is_world_process_zero():
        return None
    overrides = {}
    for key, value in push_kwargs.items():
        if key in _PUSH_KWARGS and value is not None:
            if key in ("tags", "dataset") and isinstance(value, str):
                value = [value]
            overrides[_PUSH_KWARGS[key]] = list(value) if key in ("tags", "dataset") else value
    return write_model_card(output_dir or trainer.args.output_dir, inputs_from_trainer(trainer, **overrides))


def find_model_card_callback(trainer: Any) -> ModelCardCallback | None:
    """The :class:`ModelCardCallback` registered on ``trainer``, if any."""
    for callback in trainer.callback_handler.callbacks:
        if isinstance(callback, ModelCardCallback):
            return callback
    return None


# ---------------------------------------------------------------------------------------------
# Evaluation results
# ---------------------------------------------------------------------------------------------

def _dataset_id(task: str, label: str) -> str:
    """A Hub dataset id for the model-index when the label names one, else a slug of the label.

    A local copy or a home-built InpaintCOCO-format set keeps its own label: claiming the
    Hub dataset for it would misreport where the numbers come from.
    """
    if task == "inpaintcoco" and label == "InpaintCOCO":  # the runner's label for the default Hub source
        return INPAINTCOCO_REPO_ID
    if _is_hub_id(label):
        return label
    return re.sub(r"[^a-z0-9]+", "-", label.lower()).strip("-") or task


def _dataset_label(tasks: Mapping[str, Any], task: str) -> str:
    """The dataset label a task recorded, on one line (a label may be a multi-line repr) and without table pipes."""
    label = " ".join(str(tasks.get(task, {}).get("dataset") or task).split())
    return label.replace("|", "/")


def eval_results_to_model_index(results: Mapping[str, Any] | None) -> list[EvalResult]:
    """The headline numbers of an ``evaluate_model`` results dict as ``huggingface_hub.EvalResult``s.

    One entry per :func:`hf_hardneg.evaluation.report.summary_rows` row, so the card's
    table and its ``model-index`` always show the same numbers.
    """
    if not results:
        return []
    from hf_hardneg.evaluation.registry import TASKS
    from hf_hardneg.evaluation.report import summary_rows

    tasks = results.get("tasks", {})
    out = []
    for row in summary_rows(results):
        if row.value is None or (isinstance(row.value, float) and not math.isfinite(row.value)):
            continue
        label = _dataset_label(tasks, row.task)
        task = TASKS.get(row.task)
        out.append(
            EvalResult(
                task_type=task.model_index_type if task else "zero-shot-image-classification",
                task_name=task.title if task else row.task,
                dataset_type=_dataset_id(row.task, label),
                dataset_name=label,
                dataset_config=row.row,
                metric_type=re.sub(r"^r@(\d+)$", r"recall@\1", row.metric.lower()),
                metric_name=f"{row.task} {row.row} {row.metric}",
                metric_value=round(float(row.value), 4),
            )
        )
    return out


def _eval_markdown(results: Mapping[str, Any] | None) -> tuple[str | None, str | None]:
    """(table, one-line provenance) for the card; ``(None, None)`` without results."""
    if not results:
        return None, None
    from hf_hardneg.evaluation.report import summary_rows

    tasks = results.get("tasks", {})
    rows = summary_rows(results)
    if not rows:
        return None, None
    lines = ["| Task | Dataset | Subset | Metric | Value | n |", "| --- | --- | --- | --- | ---: | ---: |"]
    for r in rows:
        value = "–" if r.value is None or not math.isfinite(float(r.value)) else f"{float(r.value):.3f}"
        count = "" if r.count is None else f"{int(r.count):,}"
        lines.append(f"| {r.task} | {_dataset_label(tasks, r.task)} | {r.row} | {r.metric} | {value} | {count} |")
    errors = results.get("errors") or {}
    if errors:
        lines += ["", "Not evaluated because of an error: " + "; ".join(f"`{t}` ({m})" for t, m in errors.items())]
    settings = results.get("settings") or {}
    if settings.get("measured_at_step") is not None:
        source = f"Measured during training (ConceptEvalCallback) at step {settings['measured_at_step']:,}"
    else:
        source = "Measured with `hf-hardneg evaluate`"
    if results.get("created"):
        source += f" on {str(results['created'])[:10]}"
    if settings.get("max_examples"):
        source += f", on at most {settings['max_examples']} examples per task (a quick look, not a full evaluation)"
    source += (
        ". Ties (and near-ties) count against the correct answer, so a model that cannot tell the candidates "
        "apart scores at or below chance; micro = pooled over examples, macro = mean over subsets."
    )
    return "\n".join(lines), source


def logged_eval_results(
    log_history: list[Mapping[str, Any]] | None, step: int | None = None, dataset_name: str = "held-out evaluation set"
) -> dict[str, Any] | None:
    """The newest training-time evaluation in a Trainer's ``log_history`` as a results dict, or ``None``.

    For a checkpoint folder read from disk (its ``trainer_state.json``): the evaluator's
    metrics are logged as ``eval_concept_accuracy/<concept>`` and ``eval_t2i_R@k`` by
    ``HardNegCLIPTrainer``, without the prefix by a ConceptEvalCallback in a plain
    ``Trainer``; :func:`hf_hardneg.evaluation.evaluator.results_from_metrics` reads both.
    Entries after ``step`` are ignored.
    """
    from hf_hardneg.evaluation.evaluator import results_from_metrics

    for entry in reversed(log_history or []):
        if step is not None and entry.get("step", 0) > step:
            continue
        for prefix in ("eval_", ""):
            results = results_from_metrics(entry, prefix, dataset=dataset_name, step=entry.get("step"))
            if results is not None:
                return results
    return None
