"""The README's "Extending" recipes, each followed on a toy case: a concept, a model family, a benchmark, a loss."""

from __future__ import annotations

import numpy as np
import PIL.Image
import pytest
import torch
from torch import nn

from hf_hardneg.config import HardNegCLIPConfig
from hf_hardneg.trainer import HardNegCLIPTrainer

torch.set_num_threads(1)

CAPTIONS = ["a round red ball on a table", "a square blue box on the floor", "a round green plate",
            "a square white tile", "a triangular yellow sign", "a round black clock on a wall",
            "a square red cushion", "a triangular blue flag"]


def _rows(captions, size=24):
    from datasets import Dataset

    rng = np.random.default_rng(0)
    images = [PIL.Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)) for _ in captions]
    return Dataset.from_dict({"image": images, "caption": list(captions)})


def _args(tmp_path, **overrides):
    values = dict(output_dir=str(tmp_path / "out"), per_device_train_batch_size=4, max_steps=2, learning_rate=1e-3,
                  logging_steps=1, save_strategy="no", report_to="none", use_cpu=True, disable_tqdm=True,
                  dataloader_num_workers=0, seed=0)
    values.update(overrides)
    return HardNegCLIPConfig(**values)


def _moved(before: dict, model: nn.Module) -> list[str]:
    return [n for n, p in model.named_parameters() if p.requires_grad and not torch.equal(p.detach(), before[n])]


# -- recipe 1: a concept (a YAML file, nothing else) ----------------------------------------------------------


def test_recipe_a_concept_from_a_file_trains_and_is_described(tmp_path):
    from hf_hardneg.concepts import resolve_concepts
    from hf_hardneg.testing import make_tiny_model

    shapes = tmp_path / "shapes.yaml"
    shapes.write_text("concepts:\n  - name: shape\n    words: [round, square, triangular]\n", encoding="utf-8")
    (shape,) = resolve_concepts(str(shapes))
    assert shape.substitutions["round"] == ("square", "triangular")

    model, tokenizer, image_processor = make_tiny_model(CAPTIONS + ["a square ball", "a triangular ball"])
    trainer = HardNegCLIPTrainer(model, _args(tmp_path, concepts=[str(shapes)], num_hard_negatives=1),
                                 train_dataset=_rows(CAPTIONS), processing_class=tokenizer,
                                 image_processor=image_processor)
    rows = trainer.train_dataset
    assert set(rows["hard_negative_concept"]) == {"shape"} and len(rows) == 8
    assert all(neg != cap for neg, cap in zip(rows["negative_1"], rows["caption"]))
    trainer.train()
    card = (tmp_path / "out").joinpath("README.md")
    trainer.save_model()
    assert "shape" in card.read_text(encoding="utf-8")


# -- recipe 2: a model family (one ModelFamily entry in hf_hardneg/models.py) ---------------------------------


def _tiny_chinese_clip():
    from transformers import ChineseCLIPConfig, ChineseCLIPModel, CLIPImageProcessor

    from hf_hardneg.testing import build_word_tokenizer

    tokenizer = build_word_tokenizer(CAPTIONS, max_length=32)
    small = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2)
    config = ChineseCLIPConfig(text_config=dict(small, vocab_size=len(tokenizer), max_position_embeddings=32),
                               vision_config=dict(small, image_size=32, patch_size=8), projection_dim=16)
    torch.manual_seed(0)
    image_processor = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    return ChineseCLIPModel(config), tokenizer, image_processor


def test_recipe_a_model_family_is_one_table_entry(tmp_path):
    from hf_hardneg.loss import HardNegativeContrastiveLoss
    from hf_hardneg.model_card import processor_class_for
    from hf_hardneg.models import encode_images, encode_texts, family_of, logit_scale_and_bias, max_text_length

    model, tokenizer, image_processor = _tiny_chinese_clip()
    family = family_of(model)
    assert (family.model_class, family.loss, family.text_padding) == ("ChineseCLIPModel", "softmax", "longest")
    assert processor_class_for("ChineseCLIPModel") == "ChineseCLIPProcessor"
    assert max_text_length(model, tokenizer) == 32

    # with k = 0 the library's loss is the family's own (float64: two computations of one value)
    model = model.double().eval()
    enc = tokenizer(CAPTIONS[:4], padding=True, return_tensors="pt")
    pixels = torch.randn(4, 3, 32, 32, dtype=torch.float64)
    with torch.no_grad():
        theirs = model(input_ids=enc.input_ids, attention_mask=enc.attention_mask, pixel_values=pixels,
                       return_loss=True).loss
        ours = HardNegativeContrastiveLoss()(encode_images(model, pixels),
                                             encode_texts(model, enc.input_ids, enc.attention_mask), None,
                                             logit_scale_and_bias(model)[0])
    assert ours.loss.item() == pytest.approx(theirs.item(), rel=1e-10)

    # and it trains with hard negatives, every trainable parameter moving
    model = model.float().train()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    rows = _rows(CAPTIONS).add_column("negative_1", [" ".join(reversed(c.split())) for c in CAPTIONS])
    trainer = HardNegCLIPTrainer(model, _args(tmp_path, num_hard_negatives=1), train_dataset=rows,
                                 processing_class=tokenizer, image_processor=image_processor)
    trainer.train()
    unused = {"text_model.pooler.dense.weight", "text_model.pooler.dense.bias"}  # ChineseCLIP projects [CLS]
    assert set(before) - set(_moved(before, trainer.model)) <= unused


# -- recipe 3: a benchmark (an adapter and a registry entry) ------------------------------------------------


def load_toy_benchmark(source=None):
    """A toy adapter: each image against its true caption and one with the colour swapped."""
    from hf_hardneg.evaluation.tasks import MultipleChoiceSet

    rows = source if source is not None else _rows(CAPTIONS[:4])
    swap = {"red": "blue", "blue": "red", "green": "white", "white": "green"}
    candidates = [[c, " ".join(swap.get(w, w) for w in c.split())] for c in rows["caption"]]
    assert all(true != swapped for true, swapped in candidates)
    return MultipleChoiceSet(images=list(rows["image"]), image_index=list(range(len(candidates))),
                             candidates=candidates, labels=[0] * len(candidates), groups=["toy"] * len(candidates))


def test_recipe_a_benchmark_is_an_adapter_and_a_registry_entry(tmp_path, tiny_clip_dir):
    import hf_hardneg.evaluation as evaluation
    from hf_hardneg.evaluation import evaluate_model
    from hf_hardneg.evaluation.registry import TASKS, Task, register_task
    from hf_hardneg.model_card import eval_results_to_model_index

    register_task(Task("toy", "multiple_choice", "Toy colour swaps", label="Toy", loader=f"{__name__}:load_toy_benchmark"))
    try:
        assert "toy" in evaluation.TASK_NAMES  # the CLI's --tasks list
        results = evaluate_model(str(tiny_clip_dir), ["toy"], tmp_path / "eval", progress=False)
        metrics = results["tasks"]["toy"]["metrics"]
        assert results["tasks"]["toy"]["dataset"] == "Toy" and metrics["toy"]["count"] == 4
        assert 0.0 <= metrics["toy"]["accuracy"] <= 1.0
        (entry, *_) = eval_results_to_model_index(results)
        assert entry.task_name == "Toy colour swaps" and entry.task_type == "zero-shot-image-classification"
    finally:
        TASKS.pop("toy")


# -- recipe 4: a loss (an nn.Module with the losses' call signature, passed as loss=) --------------------------


class MarginHardNegativeLoss(nn.Module):
    """CLIP's loss plus a hinge that keeps each positive ``margin`` above its own hard negatives."""

    def __init__(self, margin: float = 0.2):
        super().__init__()
        from hf_hardneg.loss import HardNegativeContrastiveLoss

        self.contrastive = HardNegativeContrastiveLoss(mode="append")
        self.margin = margin
        self.calls = 0

    def forward(self, image_embeds, text_embeds, hard_negative_embeds=None, logit_scale=None, logit_bias=None,
                generator=None):
        self.calls += 1
        out = self.contrastive(image_embeds, text_embeds, hard_negative_embeds, logit_scale)
        if hard_negative_embeds is not None:
            img = nn.functional.normalize(image_embeds, dim=-1)
            pos = (img * nn.functional.normalize(text_embeds, dim=-1)).sum(-1, keepdim=True)
            neg = (img[:, None] * nn.functional.normalize(hard_negative_embeds, dim=-1)).sum(-1)
            out.loss = out.loss + torch.relu(self.margin - pos + neg).mean()
        return out


def test_recipe_a_loss_is_a_module_handed_to_the_trainer(tmp_path):
    from hf_hardneg.testing import make_tiny_model

    model, tokenizer, image_processor = make_tiny_model(CAPTIONS)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    rows = _rows(CAPTIONS).add_column("negative_1", [" ".join(reversed(c.split())) for c in CAPTIONS])
    loss = MarginHardNegativeLoss()
    trainer = HardNegCLIPTrainer(model, _args(tmp_path, num_hard_negatives=1), train_dataset=rows,
                                 processing_class=tokenizer, image_processor=image_processor, loss=loss)
    trainer.train()
    assert loss.calls == 2 and trainer.loss_fn is loss
    assert _moved(before, trainer.model)
    assert all("hard_negative_accuracy" in log for log in trainer.state.log_history if "loss" in log)
