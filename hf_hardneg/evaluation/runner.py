"""``evaluate_model``: run named tasks on one model and write ``results.json`` + ``results.md``.

Tasks (names accepted by ``--tasks``):

=========================  ===============================================================
``concept``                fine-grained concept accuracy on COCO captions (paper 5.1, Table 7)
``retrieval``              COCO text-to-image / image-to-text Recall@1/5/10 (paper 5.1)
``inpaintcoco``            Equation (1) accuracy + Winoground-style scores (paper 5.2, Table 1)
``sugarcrepe``             SugarCrepe's 7 subsets, micro and macro averages
``aro``                    ARO VG-Relation, VG-Attribution, COCO-Order, Flickr30k-Order
``winoground``             Winoground text / image / group scores
``sugarcrepe_pp``          SugarCrepe++ image-to-text (ITT) and text-only (TOT) scores
``mmvp_vlm``               MMVP-VLM pair accuracy (``image_score``) per visual pattern
``valse``                  VALSE caption-vs-foil accuracy per piece (validated examples)
``whatsup``                What'sUp spatial relations (Controlled-A/B, COCO-QA, VG-QA)
``colorswap``              ColorSwap text / image / group scores
``zeroshot``               zero-shot top-1/top-5/per-class accuracy (CIFAR-10 default; any ClassLabel
                           dataset or image folder; ``templates=imagenet`` for CLIP's 80 prompts)
``flickr30k``, ``sbu``,    concept accuracy on the paper's generalisation sets (Table 2)
``fashion200k``,
``nasa_earth_instagram``,
``oldbookillustrations``
=========================  ===============================================================

``concept`` and ``retrieval`` read COCO from ``coco_dir`` (official layout) or
from ``sources["coco"]`` (a dataset with ``image``, ``caption``, ``image_id``);
when both run, COCO's images are encoded once for both.

With ``text_prior=`` (a fitted :class:`~hf_hardneg.evaluation.text_prior.NgramCaptionPrior`
or a captions file to fit one on), every task whose set it can answer also gets a
``text_only_control`` entry: the same items scored by the caption-only prior.
"""

from __future__ import annotations

import datetime as _dt
import logging
import os
from pathlib import Path
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import torch

from . import DEFAULT_CONCEPTS, adapters
from .encoding import Embedder, as_embedder
from .registry import TASKS, Task
from .report import save_results
from .tasks import (
    DEFAULT_PROMPT_TEMPLATES,
    build_concept_set,
    build_retrieval_set,
    score_classification,
    score_multiple_choice,
    score_paired,
    score_retrieval,
    score_triplets,
)

logger = logging.getLogger(__name__)

__all__ = ["DEFAULT_CONCEPTS", "TASKS", "evaluate_model"]



@dataclass
class _Run:
    """Options and caches shared by the tasks of one ``evaluate_model`` call."""

    embedder: Embedder
    concepts: Sequence[str]
    sources: dict[str, Any]
    coco_dir: str | None
    coco_split: str
    max_examples: int | None
    tie_tolerance: float | None
    seed: int
    tasks: Sequence[str]
    prompt_templates: Sequence[str]
    text_prior: Any = None
    _coco: Any = field(default=None, repr=False)
    _coco_image_embeds: torch.Tensor | None = field(default=None, repr=False)

    def source(self, task: str, default: Any = None) -> Any:
        return self.sources.get(task, default)

    # COCO (concept + retrieval) -------------------------------------------------------
    def coco(self):
        if self._coco is None:
            if "coco" in self.sources:
                self._coco = adapters.load_table(self.sources["coco"], split=self.coco_split)
            elif self.coco_dir is not None:
                self._coco = adapters.load_coco(self.coco_dir, self.coco_split)
            else:
                raise ValueError("the concept and retrieval tasks need COCO captions: pass coco_dir= (a folder with "
                                 f"annotations/captions_{self.coco_split}.json and the {self.coco_split} images; CLI: "
                                 "--coco-dir) or sources={'coco': dataset_or_path}")
        return self._coco

    @property
    def coco_label(self) -> str:
        return f"COCO {self.coco_split}" if "coco" not in self.sources else str(self.sources["coco"])[:80]

    def coco_image_embeds(self) -> torch.Tensor | None:
        """All distinct COCO images, encoded once -- only when concept and retrieval both run on all of them."""
        if not ({"concept", "retrieval"} <= set(self.tasks)) or self.max_examples is not None:
            return None
        if self._coco_image_embeds is None:
            ds = self.coco()
            rows = build_retrieval_set(ds, image_key_column=self._coco_key()).images
            self._coco_image_embeds = self.embedder.embed_images(rows, desc="COCO images")
        return self._coco_image_embeds

    def _coco_key(self) -> str | None:
        return "image_id" if "image_id" in self.coco().column_names else None

    def coco_images_dir(self) -> Path | None:
        """COCO's val2017 image folder under ``coco_dir`` (SugarCrepe, SugarCrepe++ and COCO-QA point at it)."""
        if self.coco_dir is None:
            return None
        root = Path(self.coco_dir)
        return next((p for p in (root / "val2017", root / "images" / "val2017") if p.is_dir()), None)

    def extras(self, data: Any) -> dict[str, Any]:
        """What a task entry carries besides its metrics: how the data was read, and the text-only control."""
        out: dict[str, Any] = {}
        notes = dict(getattr(data, "notes", {}) or {})
        if notes:
            out["notes"] = notes
        if self.text_prior is not None:
            from .text_prior import text_only_control

            control = text_only_control(data, self.text_prior)
            if control is not None:
                out["text_only_control"] = {"prior": self.text_prior.describe(), "metrics": control}
        return out


# ---------------------------------------------------------------------------
# Task runners (named in hf_hardneg.evaluation.registry): each returns (dataset label, kind, metrics)
# ---------------------------------------------------------------------------


def run_concept(run: _Run, task: Task):
    ds = run.coco()
    mc = build_concept_set(ds, run.concepts, image_key_column=run._coco_key(), max_examples=run.max_examples,
                           seed=run.seed)
    metrics = score_multiple_choice(run.embedder, mc, run.tie_tolerance, desc="concept",
                                    image_embeds=run.coco_image_embeds())
    return run.coco_label, task.kind, metrics, run.extras(mc)


def run_retrieval(run: _Run, task: Task):
    ds = run.coco()
    rs = build_retrieval_set(ds, image_key_column=run._coco_key(), max_images=run.max_examples, seed=run.seed)
    metrics = score_retrieval(run.embedder, rs, tie_tolerance=run.tie_tolerance, image_embeds=run.coco_image_embeds())
    return run.coco_label, task.kind, metrics


def _kwargs(value: Any, key: str = "source") -> dict[str, Any]:
    """A task source given as a path/id/Dataset, or as a dict of adapter keyword arguments."""
    if value is None:
        return {}
    return dict(value) if isinstance(value, Mapping) else {key: value}


#: kind -> how a loaded set of that kind is scored
_SCORERS = {
    "multiple_choice": lambda run, data, name: score_multiple_choice(run.embedder, data, run.tie_tolerance, name),
    "paired": lambda run, data, name: score_paired(run.embedder, data, run.tie_tolerance, desc=name),
    "classification": lambda run, data, name: score_classification(run.embedder, data, run.prompt_templates,
                                                                   run.tie_tolerance),
    "triplet": lambda run, data, name: score_triplets(run.embedder, data, run.tie_tolerance, desc=name),
}


def _score_loaded(run: _Run, task: Task, kw: dict[str, Any], label: str):
    data = task.load(**kw).subset(run.max_examples, run.seed)
    return label, task.kind, _SCORERS[task.kind](run, data, label), run.extras(data)


def run_loaded_task(run: _Run, task: Task):
    """A task whose adapter (``task.loader``) gives the whole set: load it from the task's source and score it."""
    kw = _kwargs(run.source(task.name))
    return _score_loaded(run, task, kw, str(kw.get("source", task.label or task.name))[:80])


def run_sugarcrepe(run: _Run, task: Task):
    kw = _kwargs(run.source("sugarcrepe"))
    if "images_dir" not in kw and run.coco_images_dir() is not None:
        kw["images_dir"] = run.coco_images_dir()  # SugarCrepe's raw JSON files point at COCO val2017 images
    mc = adapters.load_sugarcrepe(**kw).subset(run.max_examples, run.seed)
    return ("SugarCrepe", task.kind, score_multiple_choice(run.embedder, mc, run.tie_tolerance, "SugarCrepe"),
            run.extras(mc))


def run_with_coco_images(run: _Run, task: Task):
    """A loaded task whose raw files name COCO val2017 images (SugarCrepe++, What'sUp's COCO-QA):
    ``coco_dir`` supplies them unless the source names its own."""
    kw = _kwargs(run.source(task.name))
    if task.coco_images_argument not in kw and run.coco_images_dir() is not None:
        kw[task.coco_images_argument] = run.coco_images_dir()
    return _score_loaded(run, task, kw, str(kw.get("source", task.label or task.name))[:80])


_ARO_VG = ("VG-Relation", "VG-Attribution")


def run_aro(run: _Run, task: Task):
    value = run.source("aro")
    if isinstance(value, Mapping) and "source" in value and set(value) - {"source"} <= set(adapters.ARO_SUBSETS):
        # `--source aro=RAW_VG_FOLDER --source aro:COCO-Order=PATH`
        value = {**{s: value["source"] for s in _ARO_VG}, **{k: v for k, v in value.items() if k != "source"}}
    if isinstance(value, Mapping) and set(value) <= set(adapters.ARO_SUBSETS):
        # `--source aro:COCO-Order=PATH`: the named subsets, and only they, run
        kw = {"sources": dict(value), "subsets": [s for s in adapters.ARO_SUBSETS if s in value]}
    elif value is not None and not isinstance(value, Mapping):
        # one raw ARO folder for both Visual Genome subsets
        kw = {"sources": {"VG-Relation": value, "VG-Attribution": value},
              "subsets": ("VG-Relation", "VG-Attribution")}
    else:
        kw = dict(value or {})
    mc = adapters.load_aro(**kw).subset(run.max_examples, run.seed)
    return "ARO", task.kind, score_multiple_choice(run.embedder, mc, run.tie_tolerance, "ARO"), run.extras(mc)


def run_zeroshot(run: _Run, task: Task):
    """Zero-shot classification (see :mod:`hf_hardneg.evaluation.zeroshot`): a dataset with a ``ClassLabel``
    column or an image folder; ``templates=`` and ``class_names=`` (``imagenet``, a file, a list) override
    ``prompt_templates`` and the dataset's label names, e.g. ``--source zeroshot:templates=imagenet``."""
    from .zeroshot import load_zeroshot_set, resolve_templates

    kw = _kwargs(run.source("zeroshot"))
    templates = resolve_templates(kw.pop("templates")) if "templates" in kw else tuple(run.prompt_templates)
    source = kw.pop("source", adapters.DEFAULT_CLASSIFICATION[0])
    split = kw.pop("split", adapters.DEFAULT_CLASSIFICATION[1])
    cs = load_zeroshot_set(source, split, kw.pop("class_names", None), **kw).subset(run.max_examples, run.seed)
    metrics = score_classification(run.embedder, cs, templates, run.tie_tolerance)
    return str(source)[:80], task.kind, metrics, run.extras(cs)


def run_captioned(run: _Run, task: Task):
    """Concept accuracy on one of the captioned sets of :data:`adapters.CAPTIONED_DATASETS` (the paper's Table 2)."""
    kw = _kwargs(run.source(task.name))
    ds, spec = adapters.load_captioned(task.name, **kw)
    mc = build_concept_set(ds, run.concepts, caption_column=spec.caption_column, image_column=spec.image_column,
                           image_key_column=spec.image_key_column, max_examples=run.max_examples, seed=run.seed)
    mc.notes["rows used"] = spec.selection
    label = str(kw.get("source", spec.source or task.name))[:80]
    return label, task.kind, score_multiple_choice(run.embedder, mc, run.tie_tolerance, desc=task.name), run.extras(mc)


def _split_tasks(tasks: str | Sequence[str]) -> list[str]:
    if isinstance(tasks, str):
        tasks = [t for t in tasks.split(",")]
    names = [t.strip() for t in tasks if t and t.strip()]
    unknown = [t for t in names if t not in TASKS]
    if unknown:
        raise ValueError(f"unknown task(s) {unknown}; available: {', '.join(TASKS)}")
    if not names:
        raise ValueError(f"no task given; available: {', '.join(TASKS)}")
    return list(dict.fromkeys(names))


def evaluate_model(
    model_or_path: Any,
    tasks: str | Sequence[str] = ("concept", "retrieval"),
    output_dir: str | os.PathLike | None = None,
    *,
    tokenizer: Any = None,
    image_processor: Any = None,
    coco_dir: str | os.PathLike | None = None,
    coco_split: str = "val2017",
    concepts: Sequence[Any] = DEFAULT_CONCEPTS,
    sources: Mapping[str, Any] | None = None,
    max_examples: int | None = None,
    batch_size: int = 64,
    device: str | torch.device | None = "auto",
    autocast_dtype: str | torch.dtype | None = None,
    dtype: str | torch.dtype | None = None,
    tie_tolerance: float | None = None,
    num_workers: int = 0,
    progress: bool = True,
    on_error: str = "raise",
    name: str | None = None,
    seed: int = 0,
    prompt_templates: Sequence[str] = DEFAULT_PROMPT_TEMPLATES,
    text_prior: Any = None,
) -> dict[str, Any]:
    """Evaluate one dual encoder on the named tasks; return (and optionally save) the results dict.

    Args:
        model_or_path: a checkpoint folder or Hub id, an :class:`Embedder`, or a
            model object together with ``tokenizer`` and ``image_processor``.
        tasks: names from :data:`hf_hardneg.evaluation.registry.TASKS`, as a list or a comma-separated string.
        output_dir: when given, ``results.json`` and ``results.md`` are written there.
        coco_dir: COCO in its official layout, for ``concept`` and ``retrieval``.
        concepts: concept names or :class:`~hf_hardneg.concepts.Concept` objects for the concept tasks.
        sources: per-task data source overriding the default Hub dataset: a path,
            Hub id or ``Dataset``, or a dict of the adapter's keyword arguments
            (e.g. ``{"sugarcrepe": {"source": "raw/", "images_dir": "coco/val2017"}}``).
        max_examples: cap per task (per concept for concept tasks, images for
            retrieval), a seeded random subset -- for quick looks, not for reporting.
        device: ``"auto"`` picks CUDA/MPS/CPU for a checkpoint path; a model object stays on
            its device unless a device is named.
        autocast_dtype: ``"fp16"``/``"bf16"`` to encode under autocast.
        dtype: precision to load the weights in (checkpoint paths only).
        tie_tolerance: similarity margin below which candidates tie (and the
            correct one loses); default depends on the encoding precision.
        on_error: ``"raise"`` (default) or ``"skip"``: a failing task is recorded
            under ``errors`` with its message and the others still run.
        text_prior: a fitted :class:`~hf_hardneg.evaluation.text_prior.NgramCaptionPrior`, or a
            captions file to fit one on (e.g. COCO's ``captions_train2017.json``): each task's
            entry then also holds ``text_only_control``, the same items scored by that
            caption-only prior, which never sees an image.
    """
    if on_error not in ("raise", "skip"):
        raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
    task_names = _split_tasks(tasks)
    if device == "auto" and not isinstance(model_or_path, (str, os.PathLike)):
        device = None  # a model object stays where the caller put it
    embedder = as_embedder(model_or_path, tokenizer, image_processor, device=device, dtype=dtype,
                           autocast_dtype=autocast_dtype, batch_size=batch_size, num_workers=num_workers,
                           progress=progress)
    if isinstance(model_or_path, Embedder):
        embedder.progress = progress
    if text_prior is not None and isinstance(text_prior, (str, os.PathLike)):
        from .text_prior import NgramCaptionPrior

        text_prior = NgramCaptionPrior.from_captions_file(text_prior)
    run = _Run(embedder, list(concepts), dict(sources or {}), None if coco_dir is None else os.fspath(coco_dir),
               coco_split, max_examples, tie_tolerance, seed, task_names, tuple(prompt_templates), text_prior)
    results: dict[str, Any] = {
        "model": name or (os.fspath(model_or_path) if isinstance(model_or_path, (str, os.PathLike)) else embedder.name),
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "hf_hardneg_version": _version(),
        "settings": {
            "device": str(embedder.device),
            "autocast_dtype": None if embedder.autocast_dtype is None else str(embedder.autocast_dtype).replace("torch.", ""),
            "tie_tolerance": embedder.tie_tolerance if tie_tolerance is None else tie_tolerance,
            "max_examples": max_examples,
            "concepts": [getattr(c, "name", c) for c in concepts],
            "seed": seed,
        },
        "tasks": {},
    }
    errors: dict[str, str] = {}
    for task in task_names:
        logger.info("evaluating %s on %s", results["model"], task)
        try:
            outcome = TASKS[task].run_function()(run, TASKS[task])
            label, kind, metrics = outcome[:3]
            extra = dict(outcome[3]) if len(outcome) > 3 else {}
        except Exception as err:  # noqa: BLE001 -- reported below, or re-raised
            if isinstance(err, OSError) and task not in run.sources and task not in ("concept", "retrieval"):
                # offline, or no access to the Hub default: say how to use a local copy instead
                hinted = OSError(f"{err}. The {task} task reads its data from the Hub unless given a source; for a "
                                 f"local copy pass --source {task}=PATH (Python: sources={{{task!r}: PATH}})")
                if on_error == "raise":
                    raise hinted from err
                err = hinted
            if on_error == "raise":
                raise
            errors[task] = f"{type(err).__name__}: {err}"
            logger.warning("task %s skipped: %s", task, errors[task])
            continue
        results["tasks"][task] = {"dataset": label, "kind": kind, "metrics": metrics, **extra}
    if errors:
        results["errors"] = errors
    if output_dir is not None:
        json_path, md_path = save_results(results, output_dir)
        logger.info("wrote %s and %s", json_path, md_path)
    return results


def _version() -> str:
    from hf_hardneg import __version__

    return __version__

