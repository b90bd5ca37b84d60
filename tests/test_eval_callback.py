"""ConceptEvalCallback inside a real (tiny) Trainer run, and the Figure-4 trade-off plot."""

from __future__ import annotations

import json
import sys

import PIL.Image
import pytest
import torch

from hf_hardneg.evaluation import ConceptEvalCallback, load_history, plot_tradeoff
from hf_hardneg.evaluation.plotting import concept_value


def _history(shift: float):
    return [
        {"step": 0, "epoch": 0.0, "epoch_end": False, "concept_accuracy": {"color": 0.5, "size": 0.6,
                                                                          "macro_average": 0.55}, "t2i_R@5": 0.50},
        {"step": 5, "epoch": 0.5, "epoch_end": False, "concept_accuracy": {"color": 0.6 + shift, "size": 0.7,
                                                                          "macro_average": 0.65}, "t2i_R@5": 0.60},
        {"step": 10, "epoch": 1.0, "epoch_end": True, "concept_accuracy": {"color": 0.7 + shift, "size": 0.7,
                                                                          "macro_average": 0.7}, "t2i_R@5": 0.62},
    ]


def test_plot_tradeoff_writes_a_png(tmp_path):
    path = plot_tradeoff({"classic": _history(0.0), "HN1": _history(0.1)}, tmp_path / "fig" / "tradeoff.png",
                         concept="color")
    with PIL.Image.open(path) as im:
        assert im.format == "PNG" and im.size[0] > 300
    assert concept_value(_history(0)[1]) == 0.65  # several concepts -> macro average
    assert concept_value({"concept_accuracy": {"size": 0.4, "micro_average": 0.4, "macro_average": 0.4}}) == 0.4
    with pytest.raises(KeyError, match="location"):
        concept_value(_history(0)[1], "location")
    with pytest.raises(ValueError, match="no histories"):
        plot_tradeoff({}, tmp_path / "x.png")


def test_plot_without_matplotlib_says_how_to_install(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)  # makes the import fail
    with pytest.raises(ImportError, match=r"hf_hardneg\[plot\]"):
        plot_tradeoff({"run": _history(0)}, tmp_path / "x.png")


@pytest.fixture(scope="module")
def coco_val(coco_mini):
    from hf_hardneg.data import load_coco_captions

    return load_coco_captions(coco_mini / "annotations" / "captions_val2017.json", coco_mini / "images" / "val2017")


@pytest.fixture(scope="module")
def coco_train(coco_mini):
    from hf_hardneg.data import load_coco_captions

    ds = load_coco_captions(coco_mini / "annotations" / "captions_train2017.json",
                            coco_mini / "images" / "train2017")
    return ds.select(range(24))


class _ClipCollator:
    """Plain CLIP batches (no hard negatives): what the Trainer feeds CLIPModel(return_loss=True)."""

    def __init__(self, tokenizer, image_processor):
        self.tokenizer, self.image_processor = tokenizer, image_processor

    def __call__(self, rows):
        pixels = self.image_processor(images=[PIL.Image.open(r["image"]).convert("RGB") for r in rows],
                                      return_tensors="pt")["pixel_values"]
        text = self.tokenizer([r["caption"] for r in rows], padding=True, truncation=True, return_tensors="pt")
        return {"pixel_values": pixels, "input_ids": text["input_ids"], "attention_mask": text["attention_mask"],
                "return_loss": True}


def test_callback_records_each_checkpoint_and_draws_the_plot(tmp_path, coco_train, coco_val):
    from transformers import Trainer, TrainingArguments

    from hf_hardneg.testing import make_tiny_model

    torch.manual_seed(0)
    model, tokenizer, image_processor = make_tiny_model(list(coco_train["caption"]) + list(coco_val["caption"]))
    train_rows = [{"image": r["image"]["path"] if isinstance(r["image"], dict) else r["image"].filename,
                   "caption": r["caption"]} for r in coco_train.cast_column("image", _no_decode())]
    callback = ConceptEvalCallback(coco_val, ["color", "size"], tokenizer, image_processor, run_name="hn1",
                                   max_examples=12, max_retrieval_images=40, batch_size=64)
    args = TrainingArguments(output_dir=str(tmp_path / "run"), per_device_train_batch_size=8, num_train_epochs=2,
                             learning_rate=1e-3, save_strategy="steps", save_steps=2, save_only_model=True,
                             logging_steps=50, report_to="none", use_cpu=True, disable_tqdm=True,
                             remove_unused_columns=False, dataloader_num_workers=0, seed=0)
    trainer = Trainer(model=model, args=args, train_dataset=train_rows,
                      data_collator=_ClipCollator(tokenizer, image_processor), callbacks=[callback])
    trainer.train()

    # 24 rows / 8 = 3 steps per epoch: evaluations before training, at saves 2, 4, 6 and at the epoch ends 3, 6
    steps = [p["step"] for p in callback.history]
    assert steps == [0, 2, 3, 4, 6]
    assert [p["epoch_end"] for p in callback.history] == [False, False, True, False, True]
    for point in callback.history:
        assert set(point["concept_accuracy"]) == {"color", "size", "micro_average", "macro_average"}
        assert all(0.0 <= v <= 1.0 for v in point["concept_accuracy"].values())
        assert 0.0 <= point["t2i_R@5"] <= 1.0
        assert point["concept_count"]["color"] == 12
    # training moved the model, so the measured numbers moved too
    first, last = callback.history[0], callback.history[-1]
    assert (first["concept_accuracy"], first["t2i_R@5"]) != (last["concept_accuracy"], last["t2i_R@5"])
    name, points = load_history(tmp_path / "run" / "hn1.concept_eval.json")
    assert name == "hn1" and points == json.loads(json.dumps(callback.history))
    with PIL.Image.open(tmp_path / "run" / "hn1.tradeoff.png") as im:
        assert im.format == "PNG"
    logged = [entry for entry in trainer.state.log_history if "concept_accuracy/color" in entry]
    assert [e["step"] for e in logged] == steps and all("t2i_R@5" in e for e in logged)
    assert model.training  # the callback hands the model back in training mode


def test_callback_rejects_an_eval_set_without_keywords(tiny_clip_dir):
    import datasets
    from transformers import AutoImageProcessor, AutoTokenizer

    ds = datasets.Dataset.from_dict({"image": [PIL.Image.new("RGB", (8, 8))], "caption": ["nothing to swap here"]})
    with pytest.raises(ValueError, match="no caption"):
        ConceptEvalCallback(ds, ["color"], AutoTokenizer.from_pretrained(tiny_clip_dir),
                            AutoImageProcessor.from_pretrained(tiny_clip_dir))


def _no_decode():
    import datasets

    return datasets.Image(decode=False)


def test_resumed_run_keeps_the_points_up_to_its_checkpoint(tiny_clip_dir, tmp_path):
    import datasets
    from transformers import AutoImageProcessor, AutoTokenizer, TrainerControl, TrainerState

    ds = datasets.Dataset.from_dict({"image": [PIL.Image.new("RGB", (8, 8))], "caption": ["a white cat"]})
    callback = ConceptEvalCallback(ds, ["color"], AutoTokenizer.from_pretrained(tiny_clip_dir),
                                   AutoImageProcessor.from_pretrained(tiny_clip_dir))
    args = type("Args", (), {"output_dir": str(tmp_path / "run-7"), "run_name": str(tmp_path / "run-7")})()
    assert callback.history_path(args) == tmp_path / "run-7" / "run-7.concept_eval.json"
    callback.history_path(args).parent.mkdir()
    points = [dict(p, step=s) for p, s in zip(_history(0) * 2, (0, 2, 4, 6, 8, 10))]
    callback.history_path(args).write_text(json.dumps({"run_name": "run-7", "points": points}))
    state = TrainerState(global_step=4)
    callback.on_train_begin(args, state, TrainerControl(), model=None)
    assert [p["step"] for p in callback.history] == [0, 2, 4]


def test_compare_command_plots_several_histories(tmp_path, capsys):
    from hf_hardneg.cli import main

    paths = []
    for name, shift in (("classic", 0.0), ("HN1", 0.1)):
        path = tmp_path / f"{name}.concept_eval.json"
        path.write_text(json.dumps({"run_name": name, "points": _history(shift)}))
        paths.append(str(path))
    assert main(["compare", "--histories", *paths, "--plot", str(tmp_path / "fig4.png"), "--concept", "color"]) == 0
    table = capsys.readouterr().out
    assert "| epoch | accuracy classic | accuracy HN1 | t2i_R@5 classic | t2i_R@5 HN1 |" in table
    assert "| start | 0.500 | 0.500 | 0.500 | 0.500 |" in table and "| 1 | 0.700 | 0.800 | 0.620 | 0.620 |" in table
    with PIL.Image.open(tmp_path / "fig4.png") as im:
        assert im.format == "PNG"
    with pytest.raises(SystemExit, match="go together"):
        main(["compare", "--histories", *paths])
