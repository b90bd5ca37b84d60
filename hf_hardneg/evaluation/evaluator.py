"""Evaluators: the paper's trade-off, measured on a held-out set by a callable the Trainer runs.

An evaluator follows the protocol sentence-transformers' users know: call it with a
model, get a dict of named metrics, one of which is its :attr:`primary_metric`.
:class:`~hf_hardneg.trainer.HardNegCLIPTrainer` runs its evaluators inside
``Trainer.evaluate``, so the metrics pass through ``Trainer.log`` with the ``eval_``
prefix: every ``report_to`` integration sees them, and ``metric_for_best_model`` with
``load_best_model_at_end`` can keep the checkpoint with the best concept accuracy.

:class:`ConceptRetrievalEvaluator` measures, on captioned images (e.g. COCO val):

* fine-grained concept accuracy -- the true caption against all its substitutions --
  per concept, with micro and macro averages (``concept_accuracy/<concept>``);
* text-to-image and image-to-text Recall@1/5/10 over the same images (``t2i_R@5``...).

The flat metric names are made here and read back here (:func:`results_from_metrics`),
so nothing else parses them.
"""

from __future__ import annotations

import datetime as _dt
from typing import Any, Mapping, Sequence

from .encoding import Embedder
from .tasks import build_concept_set, build_retrieval_set, score_multiple_choice, score_retrieval

__all__ = ["ConceptRetrievalEvaluator", "metrics_from_results", "results_from_metrics"]

CONCEPT_PREFIX = "concept_accuracy/"
_RETRIEVAL_DIRECTIONS = ("t2i_R@", "i2t_R@")


def metrics_from_results(results: Mapping[str, Any]) -> dict[str, float]:
    """Flat, loggable metrics of a results dict with ``concept`` and/or ``retrieval`` tasks."""
    tasks = results.get("tasks", {})
    out: dict[str, float] = {}
    for name, value in tasks.get("concept", {}).get("metrics", {}).items():
        if isinstance(value, Mapping) and "accuracy" in value:
            out[f"{CONCEPT_PREFIX}{name}"] = float(value["accuracy"])
    for name, value in tasks.get("retrieval", {}).get("metrics", {}).items():
        if name.startswith(_RETRIEVAL_DIRECTIONS):
            out[name] = float(value)
    return out


def results_from_metrics(metrics: Mapping[str, Any], prefix: str = "", dataset: str = "held-out evaluation set",
                         step: int | None = None) -> dict[str, Any] | None:
    """The results dict behind flat metrics (e.g. one ``log_history`` entry); ``None`` if none are there.

    ``prefix`` is what the Trainer put in front (``"eval_"``), or ``""`` for what a
    :class:`~hf_hardneg.evaluation.ConceptEvalCallback` logged in a plain ``Trainer``.
    """
    concept, retrieval = {}, {}
    for key, value in metrics.items():
        if not key.startswith(prefix):
            continue
        name = key[len(prefix):]
        if name.startswith(CONCEPT_PREFIX):
            concept[name[len(CONCEPT_PREFIX):]] = {"accuracy": value}
        elif name.startswith(_RETRIEVAL_DIRECTIONS):
            retrieval[name] = value
    from .zeroshot import results_from_zeroshot_metrics

    zeroshot = results_from_zeroshot_metrics(dict(metrics), prefix, dataset)
    if not (concept or retrieval or zeroshot):
        return None
    tasks: dict[str, Any] = {}
    if concept:
        tasks["concept"] = {"dataset": dataset, "kind": "multiple_choice", "metrics": concept}
    if retrieval:
        tasks["retrieval"] = {"dataset": dataset, "kind": "retrieval", "metrics": retrieval}
    if zeroshot:
        tasks["zeroshot"] = zeroshot
    return {"settings": {"measured_at_step": step}, "tasks": tasks}


class ConceptRetrievalEvaluator:
    """Concept accuracy and retrieval of a model on a captioned image set; images encoded once for both.

    Args:
        eval_dataset: rows with an image and a caption; rows sharing ``image_key_column``
            are one image with several captions (COCO).
        concepts: concepts evaluated (names, files or objects; see ``hf_hardneg.concepts.resolve_concepts``).
        tokenizer, image_processor: the model's, as for training.
        max_examples: cap on examples per concept (a seeded subset, the same at every call).
        max_retrieval_images: cap on gallery images (seeded subset).
        dataset_name: what the set is called in the results (model cards, plots).
        autocast_dtype, tie_tolerance, batch_size: as for :class:`~hf_hardneg.evaluation.Embedder`.

    Example::

        evaluator = ConceptRetrievalEvaluator(coco_val, ["color", "size"], tokenizer, image_processor)
        metrics = evaluator(model)  # {"concept_accuracy/color": ..., "t2i_R@5": ..., ...}
    """

    #: what ``metric_for_best_model`` should usually be: the paper's concept side of the trade-off
    primary_metric = f"{CONCEPT_PREFIX}macro_average"

    def __init__(
        self,
        eval_dataset,
        concepts: Sequence[Any],
        tokenizer,
        image_processor,
        *,
        image_column: str = "image",
        caption_column: str = "caption",
        image_key_column: str | None = "image_id",
        max_examples: int | None = None,
        max_retrieval_images: int | None = None,
        batch_size: int = 64,
        autocast_dtype: str | None = None,
        tie_tolerance: float | None = None,
        dataset_name: str = "COCO",
        seed: int = 0,
        progress: bool = False,
    ):
        from hf_hardneg.concepts import resolve_concepts

        concepts = resolve_concepts(concepts)
        if image_key_column is not None and image_key_column not in eval_dataset.column_names:
            image_key_column = None
        self.concept_set = build_concept_set(eval_dataset, concepts, caption_column=caption_column,
                                             image_column=image_column, image_key_column=image_key_column,
                                             max_examples=max_examples, seed=seed)
        if len(self.concept_set) == 0:
            raise ValueError(f"no caption of the evaluation set contains a keyword of {[c.name for c in concepts]}: "
                             "nothing to measure concept accuracy on")
        self.retrieval_set = build_retrieval_set(eval_dataset, image_column=image_column,
                                                 caption_column=caption_column, image_key_column=image_key_column,
                                                 max_images=max_retrieval_images, seed=seed)
        self._shared_images = max_retrieval_images is None  # both sets then index the same gallery
        self.concepts = concepts
        self.tokenizer, self.image_processor = tokenizer, image_processor
        self.batch_size, self.autocast_dtype, self.tie_tolerance = batch_size, autocast_dtype, tie_tolerance
        self.dataset_name, self.max_examples, self.seed, self.progress = dataset_name, max_examples, seed, progress
        #: the results dict of the latest call (``evaluate_model`` format)
        self.last_results: dict[str, Any] | None = None

    def evaluate(self, model) -> dict[str, Any]:
        """The results dict (``evaluate_model`` format: ``tasks.concept`` and ``tasks.retrieval``) of ``model`` now."""
        embedder = Embedder(model, self.tokenizer, self.image_processor, device=None,
                            autocast_dtype=self.autocast_dtype, batch_size=self.batch_size, progress=self.progress)
        images = embedder.embed_images(self.retrieval_set.images, desc="eval images") if self._shared_images else None
        concept = score_multiple_choice(embedder, self.concept_set, self.tie_tolerance, desc="concept",
                                        image_embeds=images)
        retrieval = score_retrieval(embedder, self.retrieval_set, tie_tolerance=self.tie_tolerance,
                                    image_embeds=images)
        self.last_results = {
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "settings": {"tie_tolerance": embedder.tie_tolerance if self.tie_tolerance is None else self.tie_tolerance,
                         "max_examples": self.max_examples, "concepts": [c.name for c in self.concepts],
                         "seed": self.seed},
            "tasks": {"concept": {"dataset": self.dataset_name, "kind": "multiple_choice", "metrics": concept},
                      "retrieval": {"dataset": self.dataset_name, "kind": "retrieval", "metrics": retrieval}},
        }
        return self.last_results

    def __call__(self, model) -> dict[str, float]:
        """Flat metrics of ``model`` (see :func:`metrics_from_results`); the full results stay in :attr:`last_results`."""
        return metrics_from_results(self.evaluate(model))
