"""Zero-shot classification: how much of its pretraining a fine-tuned dual encoder kept.

Fine-tuning on hard-negative captions buys concept accuracy and, like every fine-tuning
method, costs some zero-shot accuracy; a run should report both. This module gives the
pieces the ``zeroshot`` task (:mod:`hf_hardneg.evaluation.registry`), the training-time
:class:`ZeroShotEvaluator` and scripts share:

* prompt templates and class names by name: ``"default"`` (seven generic prompts) or
  ``"imagenet"`` (CLIP's 80 ImageNet templates and 1,000 class names, shipped in
  ``hf_hardneg/data/clip_imagenet_*.txt`` with their source and MIT licence), or a text
  file of one entry per line;
* :func:`load_image_folder`: a local folder whose subfolders are the classes;
* :func:`zero_shot_evaluate`: top-1, top-5 and per-class accuracy of a model on images
  already in memory (e.g. rendered by a demo), as a :class:`ZeroShotResult`.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Sequence

from .tasks import DEFAULT_PROMPT_TEMPLATES, ClassificationSet, score_classification

__all__ = [
    "IMAGE_EXTENSIONS",
    "ZeroShotEvaluator",
    "ZeroShotResult",
    "imagenet_class_names",
    "imagenet_templates",
    "is_image_folder",
    "load_image_folder",
    "resolve_class_names",
    "resolve_templates",
    "zero_shot_evaluate",
]

#: Files an image folder's class subfolders may hold; anything else is counted and left out.
IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm"})
_DATA_FILE_SUFFIXES = frozenset({".parquet", ".arrow", ".csv", ".json", ".jsonl", ".tsv"})
_METRIC_PREFIX = "zeroshot_"


def _read_entries(path: Path) -> list[str]:
    """One entry per line of a text file (``#`` comment lines and blank lines left out), or a JSON list."""
    text = path.read_text(encoding="utf-8")
    if path.suffix.lower() == ".json":
        values = json.loads(text)
        if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
            raise ValueError(f"{path}: expected a JSON list of strings")
        return values
    return [line.rstrip("\n") for line in text.splitlines() if line.strip() and not line.startswith("#")]


def _packaged(name: str) -> list[str]:
    with resources.as_file(resources.files("hf_hardneg.data") / name) as path:
        return _read_entries(Path(path))


def imagenet_class_names() -> list[str]:
    """CLIP's 1,000 ImageNet class names, in ImageNet-1k label order (two names, 'crane' and 'maillot',
    occur twice, as in the source: the two classes then tie and both count as wrong)."""
    return _packaged("clip_imagenet_classes.txt")


def imagenet_templates() -> list[str]:
    """CLIP's 80 ImageNet prompt templates (``"a bad photo of a {}."``...)."""
    return _packaged("clip_imagenet_templates.txt")


def resolve_templates(value: str | os.PathLike | Sequence[str] | None) -> tuple[str, ...]:
    """Prompt templates from a name (``"default"``, ``"imagenet"``), a text/JSON file, or a list."""
    if value is None or (isinstance(value, str) and value == "default"):
        templates: Sequence[str] = DEFAULT_PROMPT_TEMPLATES
        where = "the default templates"
    elif isinstance(value, str) and value == "imagenet":
        templates, where = imagenet_templates(), "the ImageNet templates"
    elif isinstance(value, (str, os.PathLike)):
        path = Path(value)
        if not path.is_file():
            raise FileNotFoundError(f"templates {value!r}: not 'default', 'imagenet' or an existing file of one "
                                    "template per line")
        templates, where = _read_entries(path), str(path)
    else:
        templates, where = list(value), "the templates given"
    if not templates:
        raise ValueError(f"{where}: no prompt template")
    for i, t in enumerate(templates):
        if t.count("{}") != 1:
            raise ValueError(f"{where}: template {i + 1} {t!r} must contain '{{}}' exactly once, where the class "
                             "name goes")
    return tuple(templates)


def resolve_class_names(value: str | os.PathLike | Sequence[str] | None) -> list[str] | None:
    """Class names from ``"imagenet"``, a text/JSON file, a comma-separated string, or a list; ``None`` stays."""
    if value is None:
        return None
    if isinstance(value, str) and value == "imagenet":
        return imagenet_class_names()
    if isinstance(value, (str, os.PathLike)):
        path = Path(value)
        if path.is_file():
            return _read_entries(path)
        if isinstance(value, str) and "," in value:
            return [v.strip() for v in value.split(",") if v.strip()]
        raise FileNotFoundError(f"class names {os.fspath(value)!r}: not 'imagenet', an existing file of one name "
                                "per line, or a comma-separated list")
    return list(value)


# ---------------------------------------------------------------------------
# Image folders: one subfolder per class
# ---------------------------------------------------------------------------


def is_image_folder(path: str | os.PathLike) -> bool:
    """Whether ``path`` looks like ``root/<class>/<image>`` (and not a saved dataset or a folder of data files)."""
    root = Path(os.fspath(path))
    if not root.is_dir() or (root / "state.json").exists() or (root / "dataset_dict.json").exists():
        return False
    entries = list(root.iterdir())
    if any(e.is_file() and e.suffix.lower() in _DATA_FILE_SUFFIXES for e in entries):
        return False
    for sub in (e for e in entries if e.is_dir() and not e.name.startswith(".")):
        if any(f.suffix.lower() in IMAGE_EXTENSIONS for f in sub.iterdir() if f.is_file()):
            return True
    return False


def load_image_folder(root: str | os.PathLike, class_names: Sequence[str] | None = None) -> ClassificationSet:
    """A classification set from ``root/<class>/...``: each subfolder (sorted by name) is a class, every image
    file below it one example.

    ``class_names`` replaces the folder names in prompts (one per subfolder, in sorted folder order: ImageNet's
    ``n01440764``-style folders sort into its label order, so ``resolve_class_names("imagenet")`` fits them).
    Files that are not images are left out and counted in the set's ``notes``, as are empty class folders.
    """
    root = Path(os.fspath(root))
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: no such folder (an image folder holds one subfolder of images per class)")
    folders = sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not folders:
        raise ValueError(f"{root}: no class subfolders; put each class's images in root/<class name>/")
    names = [d.name for d in folders] if class_names is None else list(class_names)
    if len(names) != len(folders):
        raise ValueError(f"{root}: {len(folders)} class folders but {len(names)} class names; give one name per "
                         "subfolder, in sorted folder order")
    images: list[str] = []
    labels: list[int] = []
    skipped, empty = 0, []
    for label, folder in enumerate(folders):
        before = len(images)
        for dirpath, dirnames, filenames in os.walk(folder):
            dirnames.sort()
            for name in sorted(filenames):
                if Path(name).suffix.lower() in IMAGE_EXTENSIONS and not name.startswith("."):
                    images.append(os.path.join(dirpath, name))
                    labels.append(label)
                else:
                    skipped += 1
        if len(images) == before:
            empty.append(folder.name)
    if not images:
        raise ValueError(f"{root}: no image files ({', '.join(sorted(IMAGE_EXTENSIONS))}) in its class subfolders")
    loose = sum(1 for e in root.iterdir() if e.is_file())
    notes: dict[str, Any] = {"layout": f"image folder, {len(folders)} class subfolders"}
    if skipped:
        notes["files left out (not images)"] = skipped
    if loose:
        notes["files beside the class folders, left out"] = loose
    if empty:
        notes["classes without images"] = ", ".join(empty[:20]) + (f" and {len(empty) - 20} more" if len(empty) > 20 else "")
    return ClassificationSet(images, labels, names, notes)


# ---------------------------------------------------------------------------
# In-memory evaluation
# ---------------------------------------------------------------------------


@dataclass
class ZeroShotResult:
    """Zero-shot accuracy of one model on one labelled image set.

    ``top5`` is ``None`` with five classes or fewer; ``per_class`` maps each class that has
    images to its top-1 accuracy; ``metrics`` is the full dict the ``zeroshot`` task reports.
    """

    top1: float
    top5: float | None
    per_class: dict[str, float]
    mean_per_class_top1: float
    count: int
    num_classes: int
    chance: float
    metrics: dict[str, Any] = field(repr=False, default_factory=dict)

    @classmethod
    def from_metrics(cls, metrics: dict[str, Any]) -> "ZeroShotResult":
        return cls(top1=metrics["top1"], top5=metrics.get("top5"),
                   per_class={k: v["top1"] for k, v in metrics.get("per_class", {}).items()},
                   mean_per_class_top1=metrics.get("mean_per_class_top1", metrics["top1"]), count=metrics["count"],
                   num_classes=metrics["num_classes"], chance=metrics["chance"], metrics=dict(metrics))


def _tokenizer_and_image_processor(processor: Any) -> tuple[Any, Any]:
    if isinstance(processor, (tuple, list)) and len(processor) == 2:
        return processor[0], processor[1]
    tokenizer, image_processor = getattr(processor, "tokenizer", None), getattr(processor, "image_processor", None)
    if tokenizer is None or image_processor is None:
        raise TypeError("processor must be a processor with .tokenizer and .image_processor (e.g. CLIPProcessor) "
                        "or a (tokenizer, image_processor) pair")
    return tokenizer, image_processor


def zero_shot_evaluate(
    model: Any,
    processor: Any,
    images: Sequence,
    labels: Sequence[int],
    class_names: Sequence[str],
    templates: str | Sequence[str] | None = "default",
    batch_size: int = 64,
    device: Any = None,
    *,
    autocast_dtype: str | None = None,
    tie_tolerance: float | None = None,
) -> ZeroShotResult:
    """Zero-shot top-1/top-5/per-class accuracy of ``model`` on labelled images held in memory.

    Args:
        model: a dual encoder (``CLIPModel``, ``SiglipModel``, ``VisionTextDualEncoderModel``...).
        processor: its processor (``.tokenizer`` and ``.image_processor``) or a ``(tokenizer, image_processor)`` pair.
        images: PIL images, image paths or ``datasets`` image entries.
        labels: each image's index into ``class_names``.
        class_names: what the prompts call each class (``"_"`` reads as a space).
        templates: ``"default"``, ``"imagenet"``, a file, or a list of ``"... {} ..."`` prompts; each class is
            the mean of its prompts' embeddings.
        device: where to run (``None``: where the model is).

    Example::

        result = zero_shot_evaluate(model, processor, images, labels, ["cube", "sphere"])
        result.top1, result.per_class["cube"]
    """
    from .encoding import Embedder

    tokenizer, image_processor = _tokenizer_and_image_processor(processor)
    cs = ClassificationSet(list(images), [int(y) for y in labels], list(class_names))
    embedder = Embedder(model, tokenizer, image_processor, device=device, autocast_dtype=autocast_dtype,
                        batch_size=batch_size, progress=False)
    return ZeroShotResult.from_metrics(score_classification(embedder, cs, resolve_templates(templates), tie_tolerance))


# ---------------------------------------------------------------------------
# Training-time evaluation
# ---------------------------------------------------------------------------


def load_zeroshot_set(source: Any, split: str = "test", class_names: Any = None, **kwargs: Any) -> ClassificationSet:
    """A :class:`ClassificationSet` from a ``ClassificationSet``, an image folder, or any dataset
    :func:`~hf_hardneg.evaluation.adapters.load_classification` reads (saved, Parquet, Hub id)."""
    if isinstance(source, ClassificationSet):
        return source
    names = resolve_class_names(class_names)
    if isinstance(source, (str, os.PathLike)) and is_image_folder(source):
        if kwargs:
            raise TypeError(f"{os.fspath(source)}: an image folder takes no {sorted(kwargs)} (its subfolders are "
                            "the classes)")
        return load_image_folder(source, names)
    from .adapters import load_classification

    return load_classification(source, split, class_names=names, **kwargs)


def results_from_zeroshot_metrics(metrics: dict[str, Any], prefix: str, dataset: str) -> dict[str, Any] | None:
    """The ``zeroshot`` task entry behind flat ``zeroshot_*`` metrics (one ``log_history`` entry), or ``None``."""
    head = prefix + _METRIC_PREFIX
    values = {k[len(head):]: v for k, v in metrics.items() if k.startswith(head)}
    if "top1" not in values:
        return None
    return {"dataset": dataset, "kind": "classification", "metrics": values}


class ZeroShotEvaluator:
    """Zero-shot accuracy during training, beside concept accuracy: pass it to
    :class:`~hf_hardneg.trainer.HardNegCLIPTrainer` as ``evaluator=`` (alone or in a list with a
    :class:`~hf_hardneg.evaluation.ConceptRetrievalEvaluator`).

    Its metrics are ``zeroshot_top1``, ``zeroshot_top5`` and ``zeroshot_mean_per_class_top1`` (logged as
    ``eval_zeroshot_top1``...); the full results, per class included, go to the model card.

    Args:
        source: a ``ClassificationSet``, an image folder, a saved dataset, a data file or a Hub id
            with a ``ClassLabel`` column.
        templates: ``"default"``, ``"imagenet"``, a file or a list (see :func:`resolve_templates`).
        class_names: ``"imagenet"``, a file or a list, replacing the dataset's label names.
        max_examples: a seeded subset of this many images, the same at every call.
    """

    primary_metric = f"{_METRIC_PREFIX}top1"

    def __init__(self, source: Any, tokenizer: Any, image_processor: Any, *, templates: Any = "default",
                 class_names: Any = None, split: str = "test", max_examples: int | None = None,
                 dataset_name: str | None = None, batch_size: int = 64, autocast_dtype: str | None = None,
                 tie_tolerance: float | None = None, seed: int = 0, progress: bool = False, **loader_options: Any):
        self.classification_set = load_zeroshot_set(source, split, class_names, **loader_options).subset(
            max_examples, seed)
        self.templates = resolve_templates(templates)
        self.tokenizer, self.image_processor = tokenizer, image_processor
        self.batch_size, self.autocast_dtype, self.tie_tolerance = batch_size, autocast_dtype, tie_tolerance
        self.dataset_name = dataset_name or (Path(os.fspath(source)).name if isinstance(source, (str, os.PathLike))
                                             else "zero-shot set")
        self.max_examples, self.seed, self.progress = max_examples, seed, progress
        #: the results dict of the latest call (``evaluate_model`` format, task ``zeroshot``)
        self.last_results: dict[str, Any] | None = None

    def evaluate(self, model: Any) -> dict[str, Any]:
        """The results dict (``evaluate_model`` format) of ``model`` now."""
        from .encoding import Embedder

        embedder = Embedder(model, self.tokenizer, self.image_processor, device=None,
                            autocast_dtype=self.autocast_dtype, batch_size=self.batch_size, progress=self.progress)
        metrics = score_classification(embedder, self.classification_set, self.templates, self.tie_tolerance)
        entry: dict[str, Any] = {"dataset": self.dataset_name, "kind": "classification", "metrics": metrics}
        if self.classification_set.notes:
            entry["notes"] = dict(self.classification_set.notes)
        self.last_results = {
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "settings": {"tie_tolerance": embedder.tie_tolerance if self.tie_tolerance is None else self.tie_tolerance,
                         "max_examples": self.max_examples, "seed": self.seed,
                         "num_templates": len(self.templates)},
            "tasks": {"zeroshot": entry},
        }
        return self.last_results

    def __call__(self, model: Any) -> dict[str, float]:
        """Flat metrics (``zeroshot_top1``...); the full results stay in :attr:`last_results`."""
        metrics = self.evaluate(model)["tasks"]["zeroshot"]["metrics"]
        return {f"{_METRIC_PREFIX}{k}": float(metrics[k]) for k in ("top1", "top5", "mean_per_class_top1")
                if k in metrics}
