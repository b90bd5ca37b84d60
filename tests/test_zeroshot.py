"""Zero-shot classification: shipped CLIP ImageNet prompts, image folders and ClassLabel datasets, known-answer
models (an oracle scores 1.0, a constant model at most chance), the CLI task and the training-time evaluator."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
import torch
from transformers import CLIPModel

from hf_hardneg.evaluation.zeroshot import (
    ZeroShotEvaluator,
    imagenet_class_names,
    imagenet_templates,
    is_image_folder,
    load_image_folder,
    load_zeroshot_set,
    resolve_class_names,
    resolve_templates,
    zero_shot_evaluate,
)
from hf_hardneg.testing import make_tiny_model

torch.set_num_threads(1)

COLOURS = {"red": (220, 20, 20), "green": (20, 200, 20), "blue": (20, 20, 230)}


class ColourOracle(CLIPModel):
    """A CLIPModel whose image embedding is the one-hot of the image's dominant channel and whose text
    embedding is the one-hot of the colour word in the prompt: it knows every answer of a colour set.
    ``constant=True`` maps everything to one vector (it can tell nothing apart)."""

    def __init__(self, config, tokenizer, constant: bool = False):
        super().__init__(config)
        self.word_ids = [tokenizer.convert_tokens_to_ids(w) for w in COLOURS]
        self.constant = constant

    def get_image_features(self, pixel_values=None, **kwargs):
        if self.constant:
            return torch.ones(pixel_values.shape[0], 3)
        return torch.nn.functional.one_hot(pixel_values.mean(dim=(2, 3)).argmax(dim=1), 3).float()

    def get_text_features(self, input_ids=None, attention_mask=None, **kwargs):
        if self.constant:
            return torch.ones(input_ids.shape[0], 3)
        return torch.stack([(input_ids == i).any(dim=1) for i in self.word_ids], dim=1).float()


def _colour_images(n_per_class: int = 3):
    rng = np.random.default_rng(0)
    images, labels = [], []
    for label, rgb in enumerate(COLOURS.values()):
        for _ in range(n_per_class):
            noise = rng.integers(-15, 15, (32, 32, 3))
            images.append(PIL.Image.fromarray(np.clip(np.array(rgb) + noise, 0, 255).astype(np.uint8)))
            labels.append(label)
    return images, labels


@pytest.fixture(scope="module")
def colour_models():
    texts = [t.format(c) for t in resolve_templates("default") for c in COLOURS]
    model, tokenizer, image_processor = make_tiny_model(texts)
    oracle = ColourOracle(model.config, tokenizer).eval()
    constant = ColourOracle(model.config, tokenizer, constant=True).eval()
    return oracle, constant, tokenizer, image_processor


def test_shipped_clip_imagenet_prompts_have_source_and_licence():
    names, templates = imagenet_class_names(), imagenet_templates()
    assert len(names) == 1000 and names[0] == "tench" and names[-1] == "toilet paper"
    assert len(templates) == 80 and all(t.count("{}") == 1 for t in templates)
    data = Path(__file__).resolve().parents[1] / "hf_hardneg" / "data"
    for name in ("clip_imagenet_classes.txt", "clip_imagenet_templates.txt"):
        head = (data / name).read_text(encoding="utf-8").splitlines()[:6]
        assert any("github.com/openai/CLIP" in line for line in head) and any("MIT" in line for line in head)
    licence = (data / "clip_imagenet_LICENSE.txt").read_text(encoding="utf-8")
    assert "MIT License" in licence and "Copyright (c) 2021 OpenAI" in licence
    assert resolve_templates("imagenet") == tuple(templates) and resolve_class_names("imagenet") == names


def test_template_and_class_name_files_and_their_errors(tmp_path):
    good = tmp_path / "t.txt"
    good.write_text("# my prompts\na photo of a {}.\n\nart of the {}.\n")
    assert resolve_templates(good) == ("a photo of a {}.", "art of the {}.")
    bad = tmp_path / "bad.txt"
    bad.write_text("a photo of a {}.\na photo\n")
    with pytest.raises(ValueError, match=r"bad.txt: template 2 'a photo' must contain"):
        resolve_templates(bad)
    with pytest.raises(FileNotFoundError, match="not 'default', 'imagenet'"):
        resolve_templates(tmp_path / "missing.txt")
    assert resolve_class_names("cat, dog") == ["cat", "dog"]


def test_oracle_scores_one_and_a_constant_model_at_most_chance(colour_models):
    oracle, constant, tokenizer, image_processor = colour_models
    images, labels = _colour_images()
    names = list(COLOURS)
    result = zero_shot_evaluate(oracle, (tokenizer, image_processor), images, labels, names, batch_size=4)
    assert result.top1 == 1.0 and result.top5 is None and result.count == 9 and result.num_classes == 3
    assert result.per_class == {"red": 1.0, "green": 1.0, "blue": 1.0} and result.mean_per_class_top1 == 1.0
    assert result.chance == pytest.approx(1 / 3)
    # the oracle's class embeddings are exact: swapping two names makes exactly those classes wrong
    swapped = zero_shot_evaluate(oracle, (tokenizer, image_processor), images, labels, ["green", "red", "blue"])
    assert swapped.per_class == {"green": 0.0, "red": 0.0, "blue": 1.0} and swapped.top1 == pytest.approx(1 / 3)
    flat = zero_shot_evaluate(constant, (tokenizer, image_processor), images, labels, names)
    assert flat.top1 <= flat.chance and flat.top1 == 0.0  # every class ties, and ties count against the truth


def _write_folder(root: Path) -> Path:
    images, labels = _colour_images(2)
    names = list(COLOURS)
    for i, (image, label) in enumerate(zip(images, labels)):
        folder = root / names[label]
        folder.mkdir(parents=True, exist_ok=True)
        image.save(folder / f"{i}.png")
    (root / "red" / "notes.txt").write_text("not an image")
    (root / "purple").mkdir()
    (root / "LICENSE").write_text("stray file")
    return root


def test_image_folder_classes_are_subfolders_and_left_out_files_are_counted(tmp_path, colour_models):
    root = _write_folder(tmp_path / "colours")
    assert is_image_folder(root) and not is_image_folder(root / "red")
    cs = load_image_folder(root)
    assert cs.class_names == ["blue", "green", "purple", "red"]  # sorted folder names
    assert [cs.class_names[y] for y in cs.labels] == ["blue"] * 2 + ["green"] * 2 + ["red"] * 2
    assert cs.notes["files left out (not images)"] == 1 and cs.notes["classes without images"] == "purple"
    assert cs.notes["files beside the class folders, left out"] == 1
    renamed = load_image_folder(root, ["azure", "lime", "violet", "scarlet"])
    assert renamed.class_names[renamed.labels[0]] == "azure"
    with pytest.raises(ValueError, match="4 class folders but 2 class names"):
        load_image_folder(root, ["a", "b"])
    oracle, _, tokenizer, image_processor = colour_models
    names = ["blue", "green", "purple", "red"]  # 'purple' has no images and no token: an extra distractor
    result = zero_shot_evaluate(oracle, (tokenizer, image_processor), list(cs.images), cs.labels, names)
    assert result.top1 == 1.0 and set(result.per_class) == {"blue", "green", "red"}


def test_classlabel_dataset_saved_and_parquet_load_alike(tmp_path):
    import datasets

    images, labels = _colour_images(1)
    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=list(COLOURS))})
    ds = datasets.Dataset.from_dict({"image": images, "label": labels}, features=features)
    ds.save_to_disk(tmp_path / "saved")
    ds.to_parquet(tmp_path / "set.parquet")
    saved = load_zeroshot_set(str(tmp_path / "saved"))
    assert saved.class_names == list(COLOURS) and saved.labels == labels
    parquet = load_zeroshot_set(str(tmp_path / "set.parquet"))
    assert parquet.labels == labels and parquet.class_names == list(COLOURS)  # the ClassLabel survives Parquet
    assert load_zeroshot_set(ds, class_names="r,g,b").class_names == ["r", "g", "b"]


def test_cli_zeroshot_task_with_imagenet_templates_and_per_class_report(tmp_path, tiny_clip_dir):
    from hf_hardneg.cli import main

    root = _write_folder(tmp_path / "colours")
    out = tmp_path / "eval"
    code = main(["evaluate", "--model", str(tiny_clip_dir), "--tasks", "zeroshot", "--output", str(out),
                 "--source", f"zeroshot={root}", "--source", "zeroshot:templates=imagenet", "--no-progress",
                 "--device", "cpu"])
    assert code == 0
    entry = json.loads((out / "results.json").read_text())["tasks"]["zeroshot"]
    metrics = entry["metrics"]
    assert entry["kind"] == "classification" and metrics["num_templates"] == 80
    assert metrics["count"] == 6 and metrics["num_classes"] == 4 and metrics["chance"] == 0.25
    assert {k: v["count"] for k, v in metrics["per_class"].items()} == {"blue": 2, "green": 2, "red": 2}
    assert metrics["mean_per_class_top1"] == pytest.approx(
        sum(v["top1"] for v in metrics["per_class"].values()) / 3)
    assert entry["notes"]["files left out (not images)"] == 1
    report = (out / "results.md").read_text()
    assert "`zeroshot`: accuracy per class" in report and "| red |" in report
    assert "mean_per_class_top1" in report


def test_zeroshot_evaluator_logs_during_training_and_reaches_the_card(tmp_path, tiny_clip_dir, tiny_captions):
    from test_trainer import load_tiny, make_args, make_rows

    from hf_hardneg.evaluation.evaluator import results_from_metrics
    from hf_hardneg.trainer import HardNegCLIPTrainer

    root = _write_folder(tmp_path / "colours")
    model, tokenizer, image_processor = load_tiny(tiny_clip_dir)
    evaluator = ZeroShotEvaluator(root, tokenizer, image_processor, dataset_name="colours")
    args = make_args(tmp_path, max_steps=2, eval_strategy="steps", eval_steps=1)
    trainer = HardNegCLIPTrainer(model, args, train_dataset=make_rows(tiny_captions, 8), processing_class=tokenizer,
                                 image_processor=image_processor, evaluator=evaluator)
    trainer.train()
    logged = [log for log in trainer.state.log_history if "eval_zeroshot_top1" in log]
    assert [log["step"] for log in logged] == [1, 2]
    assert all(0 <= log["eval_zeroshot_top1"] <= 1 for log in logged)
    trainer.save_model()
    card = (Path(args.output_dir) / "README.md").read_text()
    assert "| zeroshot | colours | all | top1 |" in card
    # the card of a checkpoint read from disk parses the same flat metrics back
    back = results_from_metrics(logged[-1], prefix="eval_", dataset="colours")
    assert back["tasks"]["zeroshot"]["metrics"]["top1"] == logged[-1]["eval_zeroshot_top1"]


def test_train_script_zeroshot_flag(train_script, tmp_path, tiny_clip_dir, tiny_captions):
    from test_trainer import make_rows

    make_rows(tiny_captions, 8).save_to_disk(tmp_path / "rows")
    root = _write_folder(tmp_path / "colours")
    out = tmp_path / "run"
    code = train_script.main([
        "--model_name_or_path", str(tiny_clip_dir), "--dataset_path", str(tmp_path / "rows"),
        "--zeroshot_eval", str(root), "--zeroshot_templates", "imagenet",
        "--per_device_train_batch_size", "4", "--max_steps", "1", "--save_strategy", "no", "--use_cpu",
        "--report_to", "none", "--output_dir", str(out), "--disable_tqdm", "true", "--dataloader_num_workers", "0",
    ])
    assert code == 0
    results = json.loads((out / "eval_results.json").read_text())
    assert 0 <= results["eval_zeroshot_top1"] <= 1
    assert "| zeroshot | colours | all | top1 |" in (out / "README.md").read_text()
