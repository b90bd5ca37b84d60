"""A few real training steps of a tiny CLIP, and an evaluation results dict, for the model-card and push tests.

Solid-colour images with colour captions, colour hard negatives, CPU only. Shared by
tests/test_model_card.py and tests/test_push.py so both check cards and uploads of
checkpoints the real trainer wrote.
"""

from __future__ import annotations

from pathlib import Path

# A results dict in the format of hf_hardneg.evaluation.evaluate_model (see hf_hardneg/evaluation/report.py).
RESULTS = {
    "model": "outputs/color-hn1",
    "created": "2025-01-01T12:00:00+00:00",
    "settings": {"device": "cpu", "tie_tolerance": 1e-05, "max_examples": None},
    "tasks": {
        "concept": {
            "dataset": "COCO val2017",
            "kind": "multiple_choice",
            "metrics": {
                "color": {"accuracy": 0.8125, "count": 3907, "chance": 0.11},
                "size": {"accuracy": 0.9, "count": 2601, "chance": 0.5},
                "micro_average": {"accuracy": 0.8475, "count": 6508},
                "macro_average": {"accuracy": 0.85625},
            },
        },
        "retrieval": {
            "dataset": "COCO val2017",
            "kind": "retrieval",
            "metrics": {"t2i_R@1": 0.31, "t2i_R@5": 0.6, "i2t_R@1": 0.44, "num_texts": 25014, "num_images": 5000},
        },
        "inpaintcoco": {
            "dataset": "InpaintCOCO",
            "kind": "paired",
            "metrics": {"color": {"image_score": 0.89, "text_score": 0.7, "group_score": 0.65, "count": 465}},
        },
    },
}

CAPTIONS = [
    "a white cat sits under a black umbrella",
    "a large red bus on the left side of the street",
    "two dogs play with a frisbee in the background",
    "a small brown teddy bear on a bed",
    "a yellow banana and an orange on a table",
    "a tall giraffe behind a green tree",
    "a gray elephant walking over a little bridge",
    "a blue boat on a calm lake",
]
COLOURS = [(250, 250, 250), (200, 30, 30), (90, 160, 60), (120, 80, 40), (230, 220, 40), (40, 140, 40),
           (128, 128, 128), (30, 60, 200)]


def tiny_dataset():
    """Eight image-caption rows with one colour hard negative each (rows without a colour word dropped)."""
    import datasets
    from PIL import Image

    from hf_hardneg.substitution import add_hard_negatives

    ds = datasets.Dataset.from_dict(
        {"image": [Image.new("RGB", (40, 40), c) for c in COLOURS], "caption": list(CAPTIONS)}
    ).cast_column("image", datasets.Image())
    return add_hard_negatives(ds, ["color"], num_negatives=1)


def train_tiny(output_dir: Path, *, callbacks=None, max_steps: int = 4, save_steps: int = 2, **config):
    """Train a fresh tiny CLIP for ``max_steps`` with a checkpoint every ``save_steps``; return the trainer.

    ``callbacks`` is a list, or a function ``(tokenizer, image_processor) -> list`` for callbacks
    that need the model's processors (e.g. ``ConceptEvalCallback``).
    """
    import torch

    from hf_hardneg.config import HardNegCLIPConfig
    from hf_hardneg.testing import make_tiny_model
    from hf_hardneg.trainer import HardNegCLIPTrainer

    torch.set_num_threads(1)
    base = Path(output_dir).parent / f"{Path(output_dir).name}-base"
    model, tokenizer, image_processor = make_tiny_model(CAPTIONS, base, kind="clip")
    model = type(model).from_pretrained(base)  # so name_or_path records the base checkpoint, as in real use
    args = HardNegCLIPConfig(
        output_dir=str(output_dir),
        num_hard_negatives=1,
        concepts=["color"],
        per_device_train_batch_size=4,
        max_steps=max_steps,
        save_steps=save_steps,
        save_fraction_of_data=0,
        learning_rate=1e-3,
        report_to="none",
        use_cpu=True,
        logging_steps=1,
        disable_tqdm=True,
        **config,
    )
    if callable(callbacks):
        callbacks = callbacks(tokenizer, image_processor)
    trainer = HardNegCLIPTrainer(
        model, args, train_dataset=tiny_dataset(), processing_class=tokenizer, image_processor=image_processor,
        callbacks=callbacks,
    )
    trainer.train()
    return trainer
