"""hf_hardneg: hard-negative captions for contrastive vision-language training.

Public names are imported lazily so that ``import hf_hardneg`` stays cheap
(no torch or transformers import until a training or evaluation name is used).
"""

from __future__ import annotations

from hf_hardneg._lazy import lazy_exports

__version__ = "0.1.0"

# public name -> module that defines it
_EXPORTS = {
    # concepts and substitution rules
    "Concept": "hf_hardneg.concepts",
    "CONCEPTS": "hf_hardneg.concepts",
    "get_concept": "hf_hardneg.concepts",
    "load_concepts": "hf_hardneg.concepts",
    "combine_concepts": "hf_hardneg.concepts",
    "find_keywords": "hf_hardneg.substitution",
    "enumerate_negatives": "hf_hardneg.substitution",
    "sample_negatives": "hf_hardneg.substitution",
    "HardNegativeTransform": "hf_hardneg.substitution",
    "add_hard_negatives": "hf_hardneg.substitution",
    "keep_rows_with_keywords": "hf_hardneg.substitution",
    # data
    "load_coco_captions": "hf_hardneg.data",
    "load_inpaintcoco": "hf_hardneg.data",
    # training
    "HardNegativeContrastiveLoss": "hf_hardneg.loss",
    "HardNegativeSigmoidLoss": "hf_hardneg.loss",
    "build_loss_for": "hf_hardneg.loss",
    "HardNegativeCollator": "hf_hardneg.collator",
    "HardNegCLIPConfig": "hf_hardneg.config",
    "HardNegCLIPTrainer": "hf_hardneg.trainer",
    # evaluation
    "evaluate_model": "hf_hardneg.evaluation",
    "ConceptEvalCallback": "hf_hardneg.evaluation",
    "zero_shot_evaluate": "hf_hardneg.evaluation",
    # keeping what the model knew
    "interpolate_state_dicts": "hf_hardneg.interpolation",
    "merge_adapters": "hf_hardneg.parameter_efficient",
    # publishing
    "create_model_card": "hf_hardneg.model_card",
    "write_model_card": "hf_hardneg.model_card",
    "ModelCardCallback": "hf_hardneg.model_card",
    "push_checkpoint": "hf_hardneg.hub",
    # the embedded synthetic world
    "make_synthetic_dataset": "hf_hardneg.synthetic",
}

__all__ = ["__version__", *_EXPORTS]


__getattr__ = lazy_exports(__name__, _EXPORTS, globals())


def __dir__():
    return sorted(__all__)
