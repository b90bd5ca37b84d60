"""Evaluation: the paper's metrics, benchmark adapters, a runner, a training callback and the Figure-4 plot.

Layers, bottom up (each usable on its own):

* :mod:`.metrics` -- functions on scores/embeddings; ties count against the correct answer;
* :mod:`.encoding` -- :class:`Embedder`: batched, de-duplicated encoding through ``hf_hardneg.models``;
* :mod:`.tasks` -- evaluation-set containers and their scoring;
* :mod:`.adapters` -- SugarCrepe, ARO, Winoground, InpaintCOCO, the Table-2 sets, zero-shot data;
* :mod:`.compositional` -- SugarCrepe++, MMVP-VLM, VALSE, What'sUp, ColorSwap;
* :mod:`.text_prior` -- the text-only control (a caption n-gram prior that never sees the image);
* :mod:`.reference` -- published figures for openai/clip-vit-base-patch32, shown beside a run of it;
* :mod:`.registry` -- the tasks by name (kind, model-index naming, the code that runs them);
* :mod:`.runner` -- :func:`evaluate_model` (``hf-hardneg evaluate``), :mod:`.report` -- results files and tables;
* :mod:`.evaluator` -- :class:`ConceptRetrievalEvaluator`, which the trainer runs in ``evaluate``;
* :mod:`.callback` -- :class:`ConceptEvalCallback`; :mod:`.plotting` -- :func:`plot_tradeoff`.

Names are imported lazily: ``import hf_hardneg.evaluation`` costs nothing until one is used.
"""

from __future__ import annotations

from typing import Any

from hf_hardneg._lazy import lazy_exports

_EXPORTS = {
    # metrics
    "DEFAULT_TIE_TOLERANCE": "metrics",
    "beats": "metrics",
    "candidate_accuracy": "metrics",
    "candidate_ranks": "metrics",
    "default_tie_tolerance": "metrics",
    "grouped_accuracy": "metrics",
    "inpaintcoco_correct": "metrics",
    "pad_candidate_scores": "metrics",
    "paired_scores": "metrics",
    "recall_at_k": "metrics",
    "retrieval_metrics": "metrics",
    "retrieval_ranks": "metrics",
    "zero_shot_accuracy": "metrics",
    "add_averages": "metrics",
    # encoding
    "Embedder": "encoding",
    "LazyImages": "encoding",
    # sets and scoring
    "ClassificationSet": "tasks",
    "MultipleChoiceSet": "tasks",
    "PairedSet": "tasks",
    "RetrievalSet": "tasks",
    "TripletSet": "tasks",
    "score_triplets": "tasks",
    "build_concept_set": "tasks",
    "build_retrieval_set": "tasks",
    "score_classification": "tasks",
    "score_multiple_choice": "tasks",
    "score_paired": "tasks",
    "score_retrieval": "tasks",
    # adapters
    "ARO_SUBSETS": "adapters",
    "CAPTIONED_DATASETS": "adapters",
    "SUGARCREPE_SUBSETS": "adapters",
    "load_aro": "adapters",
    "load_captioned": "adapters",
    "load_classification": "adapters",
    "load_coco": "adapters",
    "load_inpaintcoco_pairs": "adapters",
    "load_sugarcrepe": "adapters",
    "load_table": "adapters",
    "load_winoground": "adapters",
    "SUGARCREPE_PP_SUBSETS": "compositional",
    "WHATSUP_SUBSETS": "compositional",
    "load_colorswap": "compositional",
    "load_mmvp_vlm": "compositional",
    "load_sugarcrepe_pp": "compositional",
    "load_valse": "compositional",
    "load_whatsup": "compositional",
    "NgramCaptionPrior": "text_prior",
    "text_only_control": "text_prior",
    "REFERENCE_FIGURES": "reference",
    "reference_table": "reference",
    # runner and reports
    "TASKS": "registry",
    "Task": "registry",
    "register_task": "registry",
    "evaluate_model": "runner",
    "compare_table": "report",
    "history_table": "report",
    "load_results": "report",
    "results_table": "report",
    "save_results": "report",
    "summary_rows": "report",
    # training-time
    "ConceptEvalCallback": "callback",
    "ConceptRetrievalEvaluator": "evaluator",
    # zero-shot classification
    "ZeroShotEvaluator": "zeroshot",
    "ZeroShotResult": "zeroshot",
    "imagenet_class_names": "zeroshot",
    "imagenet_templates": "zeroshot",
    "load_image_folder": "zeroshot",
    "zero_shot_evaluate": "zeroshot",
    "load_history": "plotting",
    "plot_tradeoff": "plotting",
    # evaluate wrappers
    "candidate_ranking_metric": "hf_evaluate",
    "paired_matching_metric": "hf_evaluate",
}

#: The paper's four concepts (Table 3).
DEFAULT_CONCEPTS = ("object", "color", "location", "size")

__all__ = sorted([*_EXPORTS, "TASK_NAMES", "DEFAULT_CONCEPTS"])
_import_on_first_use = lazy_exports(__name__, {name: f".{module}" for name, module in _EXPORTS.items()}, globals())


def __getattr__(name: str) -> Any:
    if name == "TASK_NAMES":  # the registry's names, as registered now (importing it does not import torch)
        from .registry import TASKS

        return tuple(TASKS)
    return _import_on_first_use(name)


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
