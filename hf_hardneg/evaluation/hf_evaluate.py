"""Optional ``evaluate``-library wrappers around the metric functions.

For users whose pipelines already speak ``evaluate``'s ``add_batch`` /
``compute`` protocol. Both wrappers are thin: the arithmetic, including ties
counting against the correct answer, is :mod:`hf_hardneg.evaluation.metrics`.
``evaluate`` is only imported when one of these classes is first used.

>>> metric = candidate_ranking_metric()                       # doctest: +SKIP
>>> metric.add_batch(predictions=[[0.9, 0.1, 0.3]], references=[0])   # doctest: +SKIP
>>> metric.compute()                                             # doctest: +SKIP
{'accuracy': 1.0, 'count': 1}
"""

from __future__ import annotations

from functools import lru_cache

from .metrics import DEFAULT_TIE_TOLERANCE, candidate_accuracy, pad_candidate_scores, paired_scores

__all__ = ["candidate_ranking_metric", "paired_matching_metric"]

_CITATION = """\
@inproceedings{rosch2024enhancing,
  title={Enhancing Conceptual Understanding in Multimodal Contrastive Learning through Hard Negative Samples},
  author={R{\\"o}sch, Philipp J. and Oswald, Norbert and Geierhos, Michaela and Libovick{\\'y}, Jind{\\v{r}}ich},
  year={2024}
}"""


@lru_cache(maxsize=None)
def _classes():
    try:
        import datasets
        import evaluate
    except ImportError as err:  # pragma: no cover
        raise ImportError("the evaluate wrappers need the `evaluate` package: pip install evaluate") from err

    def metric_info(description: str, inputs_description: str, **features) -> "evaluate.MetricInfo":
        return evaluate.MetricInfo(description=description, citation=_CITATION, inputs_description=inputs_description,
                                   features=datasets.Features(features))

    class CandidateRanking(evaluate.Metric):
        """Top-1 accuracy of the referenced candidate among per-example score lists (ties lose)."""

        def _info(self):
            return metric_info(
                "Fraction of examples whose correct candidate scores strictly highest (by more than "
                "tie_tolerance). Concept accuracy, SugarCrepe, ARO.",
                "predictions: list of per-candidate scores per example; references: index of the correct candidate.",
                predictions=datasets.Sequence(datasets.Value("float64")), references=datasets.Value("int64"),
            )

        def _compute(self, predictions, references, tie_tolerance: float = DEFAULT_TIE_TOLERANCE):
            scores, mask = pad_candidate_scores(predictions)
            if not len(references):
                return {"accuracy": float("nan"), "count": 0}
            correct = candidate_accuracy(scores, references, mask, tie_tolerance)
            return {"accuracy": correct.float().mean().item(), "count": len(references)}

    class PairedMatching(evaluate.Metric):
        """Winoground text/image/group scores; image score = InpaintCOCO Equation (1)."""

        def _info(self):
            return metric_info(
                "For 2 images x 2 captions: text score (each image prefers its caption), image score (each "
                "caption prefers its image), group score (both).",
                "predictions: [s(i0,c0), s(i0,c1), s(i1,c0), s(i1,c1)] per example.",
                predictions=datasets.Sequence(datasets.Value("float64")),
            )

        def _compute(self, predictions, tie_tolerance: float = DEFAULT_TIE_TOLERANCE):
            import torch

            sims = torch.tensor(predictions, dtype=torch.float64).reshape(-1, 2, 2)
            return paired_scores(sims, tie_tolerance).as_dict()

    return CandidateRanking, PairedMatching


def candidate_ranking_metric(**kwargs):
    """An ``evaluate.Metric`` computing ties-lose top-1 accuracy over candidate score lists."""
    return _classes()[0](**kwargs)


def paired_matching_metric(**kwargs):
    """An ``evaluate.Metric`` computing Winoground text/image/group scores from 4 scores per example."""
    return _classes()[1](**kwargs)
