"""Regressions found by using the library end to end as a first-time user (train.py, the CLI, the trainer).

Each test names the journey that broke. All run on tiny models and a handful of rows.
"""

from __future__ import annotations

import csv
import json
import runpy
import sys
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
import torch
import torch.nn.functional as F

from _float_tolerance import f32_logit_tolerance
from hf_hardneg.cli import main as cli_main
from hf_hardneg.config import HardNegCLIPConfig
from hf_hardneg.loss import HardNegativeContrastiveLoss, HardNegativeSigmoidLoss
from hf_hardneg.models import check_local_model_path
from hf_hardneg.trainer import HardNegCLIPTrainer

torch.set_num_threads(1)
REPO_ROOT = Path(__file__).resolve().parents[1]




@pytest.fixture(scope="module")
def tiny(tiny_clip_dir):
    from transformers import AutoImageProcessor, AutoModel, AutoTokenizer

    return (AutoModel.from_pretrained(tiny_clip_dir), AutoTokenizer.from_pretrained(tiny_clip_dir),
            AutoImageProcessor.from_pretrained(tiny_clip_dir))


def _rows(captions, num_rows, k=1):
    from datasets import Dataset

    rng = np.random.default_rng(0)
    data = {"image": [PIL.Image.fromarray(rng.integers(0, 255, (24, 24, 3), dtype=np.uint8)) for _ in range(num_rows)],
            "caption": [captions[i % len(captions)] for i in range(num_rows)]}
    for j in range(1, k + 1):
        data[f"negative_{j}"] = [captions[(i + j) % len(captions)] for i in range(num_rows)]
    return Dataset.from_dict(data)


def _args(tmp_path, **overrides):
    values = dict(output_dir=str(tmp_path / "out"), per_device_train_batch_size=4, learning_rate=1e-3,
                  logging_steps=1, save_strategy="no", report_to="none", use_cpu=True, disable_tqdm=True,
                  dataloader_num_workers=0, num_hard_negatives=1)
    values.update(overrides)
    return HardNegCLIPConfig(**values)


# -- journey: a short last batch in the paper's replace mode --------------------------------------------


def test_replace_mode_batch_smaller_than_k_plus_one_appends_the_rest():
    # 70 colour rows at batch 3 leave one image in the last batch: it used to stop training with
    # "the global batch needs at least k+1=2 images"
    # float64 throughout: the loss computes in its inputs' precision, so the reference differs only by
    # float64 rounding (about 1e-16), on every CPU
    torch.manual_seed(0)
    img, txt, hn = (torch.randn(*shape, dtype=torch.float64) for shape in ((1, 6), (1, 6), (1, 1, 6)))
    out = HardNegativeContrastiveLoss("replace")(img, txt, hn, 10.0)
    i, t, h = (F.normalize(x, dim=-1) for x in (img, txt, hn[:, 0]))
    expected = 0.5 * F.cross_entropy(10.0 * torch.stack([(i * t).sum(-1), (i * h).sum(-1)], dim=1), torch.tensor([0]))
    assert out.loss.item() == pytest.approx(expected.item(), rel=1e-12, abs=1e-14)

    # N=3, k=3: each row holds its positive and exactly its own three hard negatives
    img, txt, hn = (torch.randn(*shape, dtype=torch.float64) for shape in ((3, 6), (3, 6), (3, 3, 6)))
    out = HardNegativeContrastiveLoss("replace")(img, txt, hn, 10.0, generator=torch.Generator().manual_seed(1))
    i, t, h = F.normalize(img, dim=-1), F.normalize(txt, dim=-1), F.normalize(hn, dim=-1)
    for row in range(3):
        wanted = sorted([10.0 * (i[row] @ t[row]).item()] + (10.0 * (h[row] @ i[row])).tolist())
        assert sorted(out.logits_per_image[row].tolist()) == pytest.approx(wanted, rel=1e-12, abs=1e-13)
    # the float32 path gives the same logits within float32 rounding of 6-dim dot products
    out32 = HardNegativeContrastiveLoss("replace")(img.float(), txt.float(), hn.float(), 10.0,
                                                   generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(out32.logits_per_image.double(), out.logits_per_image, rtol=0,
                               atol=f32_logit_tolerance(10.0, 6))
    sigmoid = HardNegativeSigmoidLoss("replace")(img, txt, hn, 10.0, -1.0, generator=torch.Generator().manual_seed(1))
    assert sigmoid.logits_per_image.shape == (3, 4) and torch.isfinite(sigmoid.loss)


def test_trainer_survives_a_one_image_last_batch(tmp_path, tiny, tiny_captions):
    model, tokenizer, image_processor = tiny
    trainer = HardNegCLIPTrainer(model, _args(tmp_path, num_train_epochs=1), train_dataset=_rows(tiny_captions, 5),
                                 processing_class=tokenizer, image_processor=image_processor)
    trainer.train()  # batches of 4 and 1
    assert trainer.state.global_step == 2


def test_trainer_names_a_missing_column_before_training(tmp_path, tiny, tiny_captions):
    # used to surface as a KeyError from inside the DataLoader at the first step
    model, tokenizer, image_processor = tiny
    data = _rows(tiny_captions, 4, k=0).rename_column("caption", "text")
    with pytest.raises(ValueError, match=r"no column 'caption' \(caption_column\).*'text'.*caption_column="):
        HardNegCLIPTrainer(model, _args(tmp_path, num_hard_negatives=0), train_dataset=data,
                           processing_class=tokenizer, image_processor=image_processor)
    HardNegCLIPTrainer(model, _args(tmp_path, num_hard_negatives=0), train_dataset=data, caption_column="text",
                       processing_class=tokenizer, image_processor=image_processor)


# -- journey: --streaming with hard negatives ------------------------------------------------------------


def test_streaming_batches_keep_their_hard_negative_captions(tmp_path, tiny, tiny_captions):
    # accelerate dispatches IterableDataset batches by default and cut input_ids (n*(1+k) rows) to n:
    # "got 4 captions for 4 images, expected 8"
    model, tokenizer, image_processor = tiny
    args = _args(tmp_path, max_steps=2)
    assert args.accelerator_config.dispatch_batches is False
    trainer = HardNegCLIPTrainer(model, args, train_dataset=_rows(tiny_captions, 8).to_iterable_dataset(),
                                 processing_class=tokenizer, image_processor=image_processor)
    trainer.train()
    assert [log["hard_negative_accuracy"] for log in trainer.state.log_history if "loss" in log] != []
    with pytest.raises(ValueError, match="drops the hard-negative captions"):
        _args(tmp_path, accelerator_config={"dispatch_batches": True})


# -- journey: --save_steps given on the command line ---------------------------------------------------


def test_explicit_save_steps_is_not_overridden_by_the_fraction_of_data(tmp_path, tiny, tiny_captions):
    model, tokenizer, image_processor = tiny
    data = _rows(tiny_captions, 40, k=0)

    def trainer(args):
        return HardNegCLIPTrainer(model, args, train_dataset=data, processing_class=tokenizer,
                                  image_processor=image_processor)

    assert trainer(_args(tmp_path, num_hard_negatives=0, save_strategy="steps", save_steps=3)).args.save_steps == 3
    args = _args(tmp_path, num_hard_negatives=0, save_strategy="steps")  # 10 steps per epoch, 10% -> 1
    assert trainer(args).args.save_steps == 1
    data = _rows(tiny_captions, 80, k=0)
    assert trainer(args).args.save_steps == 2  # the fraction's own earlier value is recomputed, not kept


# -- journey: train.py bad input ------------------------------------------------------------------------


def _coco_json(path: Path, coco_mini: Path, bad_caption) -> Path:
    data = json.loads((coco_mini / "annotations" / "captions_train2017.json").read_text())
    image = data["images"][0]
    anns = [a for a in data["annotations"] if a["image_id"] == image["id"]][:3]
    anns[1] = dict(anns[1], caption=bad_caption)
    path.write_text(json.dumps({"licenses": data["licenses"], "images": [image], "annotations": anns}))
    return path


@pytest.mark.coco
def test_train_script_skips_invalid_captions_on_request(train_script, coco_mini, tmp_path):
    captions = _coco_json(tmp_path / "captions.json", coco_mini, None)
    flags = ["--coco_captions_json", str(captions), "--coco_images_dir", str(coco_mini / "images" / "train2017"),
             "--output_dir", str(tmp_path / "out")]
    _, data_args, config = train_script.parse_args(flags)
    with pytest.raises(ValueError, match=r"annotations\[1\].*caption is missing.*--skip_invalid_captions"):
        train_script.load_training_data(data_args, config)
    _, data_args, config = train_script.parse_args(flags + ["--skip_invalid_captions"])
    train, _ = train_script.load_training_data(data_args, config)
    assert len(train) == 2


@pytest.mark.coco
def test_train_script_reads_a_single_csv_file(train_script, coco_mini, tmp_path):
    images = sorted((coco_mini / "images" / "train2017").glob("*.jpg"))[:3]
    table = tmp_path / "pairs.csv"
    with table.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "text"])
        writer.writerows([[str(p), f"a {colour} bus"] for p, colour in zip(images, ["red", "white", "blue"])])
    flags = ["--dataset_path", str(table), "--image_column", "path", "--caption_column", "text",
             "--concepts", "color", "--num_hard_negatives", "1", "--output_dir", str(tmp_path / "out")]
    _, data_args, config = train_script.parse_args(flags)
    train, _ = train_script.load_training_data(data_args, config)
    assert train["text"] == ["a red bus", "a white bus", "a blue bus"]
    assert all(n != t for n, t in zip(train["negative_1"], train["text"]))
    _, data_args, config = train_script.parse_args(["--dataset_path", str(tmp_path / "missing.csv"),
                                                    "--output_dir", str(tmp_path / "out")])
    with pytest.raises(FileNotFoundError, match="missing.csv: no such file"):
        train_script.load_training_data(data_args, config)


def test_train_script_checks_concepts_and_model_before_the_data(train_script, tmp_path, monkeypatch, capsys):
    missing_data = ["--coco_captions_json", str(tmp_path / "none.json"), "--coco_images_dir", str(tmp_path),
                    "--output_dir", str(tmp_path / "out")]
    with pytest.raises(ValueError, match="unknown concept 'colr'"):
        train_script.main(missing_data + ["--concepts", "colr", "--model_name_or_path", str(tmp_path / "nope")])
    with pytest.raises(FileNotFoundError, match=r"--model_name_or_path .*nope: no such folder"):
        train_script.main(missing_data + ["--model_name_or_path", str(tmp_path / "nope")])
    # run as a script: one line on stderr and status 2, not a traceback
    monkeypatch.setattr(sys, "argv", ["train.py", *missing_data, "--model_name_or_path", str(tmp_path / "nope")])
    with pytest.raises(SystemExit) as exit_info:
        runpy.run_path(str(REPO_ROOT / "train.py"), run_name="__main__")
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("train.py: error: --model_name_or_path") and "Traceback" not in err


def test_train_script_card_names_the_training_data(train_script):
    parse = train_script.DataArguments
    coco = train_script.card_data_fields(parse(coco_captions_json="/data/coco/annotations/captions_train2017.json",
                                               coco_images_dir="/data/coco/train2017"))
    assert coco == {"training_data": "COCO captions from `captions_train2017.json` with the images of `train2017`."}
    hub = train_script.card_data_fields(parse(dataset_name="user/captions", dataset_config_name="en"))
    assert hub["datasets"] == ["user/captions"] and "`user/captions`, configuration `en`" in hub["training_data"]
    assert "/srv" not in train_script.card_data_fields(parse(dataset_path="/srv/x/pairs.csv"))["training_data"]


# -- journey: hf-hardneg evaluate / compare with bad input ----------------------------------------------


def test_cli_errors_are_one_line_messages(tmp_path, capsys, monkeypatch):
    code = cli_main(["evaluate", "--model", str(tmp_path / "nope"), "--output", str(tmp_path / "e")])
    err = capsys.readouterr().err
    assert code == 2 and "hf-hardneg evaluate: error: evaluation model" in err and "no such folder" in err
    assert "Traceback" not in err
    assert cli_main(["compare", str(tmp_path / "none.json")]) == 2
    assert "none.json not found" in capsys.readouterr().err
    monkeypatch.setenv("HF_HARDNEG_TRACEBACK", "1")
    with pytest.raises(FileNotFoundError):
        cli_main(["compare", str(tmp_path / "none.json")])


def test_local_model_paths_are_never_taken_for_hub_ids(tmp_path):
    for path in (tmp_path / "missing", "./runs/missing", "runs/hn1/checkpoint-10"):
        with pytest.raises(FileNotFoundError, match="no such folder"):
            check_local_model_path(str(path))
    (tmp_path / "weights.bin").write_bytes(b"")
    with pytest.raises(NotADirectoryError, match="a file, not a folder"):
        check_local_model_path(str(tmp_path / "weights.bin"))
    check_local_model_path("openai/clip-vit-base-patch32")  # a Hub id: left to from_pretrained
    check_local_model_path(str(tmp_path))


def test_evaluate_device_typos_and_missing_gpus_are_named():
    from hf_hardneg.evaluation.encoding import resolve_device

    with pytest.raises(ValueError, match="'gpu' is not a torch device name"):
        resolve_device("gpu")
    if not torch.cuda.is_available():  # used to fail in torch with "Torch not compiled with CUDA enabled"
        with pytest.raises(ValueError, match="no CUDA GPU.*--device cpu"):
            resolve_device("cuda")
    assert resolve_device("cpu") == torch.device("cpu")


def test_hub_default_benchmark_offline_says_how_to_use_a_local_copy(tiny_clip_dir, monkeypatch):
    from hf_hardneg.evaluation import adapters
    from hf_hardneg.evaluation.runner import evaluate_model

    def offline(**kwargs):
        raise ConnectionError("Couldn't reach 'phiyodr/InpaintCOCO' on the Hub (OfflineModeIsEnabled)")

    monkeypatch.setattr(adapters, "load_inpaintcoco_pairs", offline)
    with pytest.raises(OSError, match=r"OfflineModeIsEnabled.*--source inpaintcoco=PATH"):
        evaluate_model(str(tiny_clip_dir), "inpaintcoco", device="cpu", progress=False)
    results = evaluate_model(str(tiny_clip_dir), "inpaintcoco", device="cpu", progress=False, on_error="skip")
    assert "--source inpaintcoco=PATH" in results["errors"]["inpaintcoco"]


def test_results_markdown_names_the_equation_1_row():
    from hf_hardneg.evaluation.report import results_table

    metrics = {"color": {"image_score": 0.5, "text_score": 0.25, "group_score": 0.25, "count": 4}}
    table = results_table({"model": "m", "tasks": {"inpaintcoco": {"dataset": "d", "kind": "paired",
                                                                   "metrics": metrics}}})
    assert "| inpaintcoco | d | color | image_score | 0.500 | 4 |" in table
    assert "`image_score` is the paper's Equation (1) accuracy" in table


@pytest.mark.coco
def test_train_script_concept_eval_writes_the_history_compare_reads(train_script, coco_mini, tiny_clip_dir, tmp_path):
    # README: `hf-hardneg compare --histories runs/*/*.concept_eval.json`; train.py could not write those files
    annotations, images = coco_mini / "annotations", coco_mini / "images"
    common = ["--model_name_or_path", str(tiny_clip_dir), "--output_dir", str(tmp_path / "run"),
              "--coco_captions_json", str(annotations / "captions_train2017.json"),
              "--coco_images_dir", str(images / "train2017"), "--concept_eval"]
    with pytest.raises(ValueError, match="--concept_eval .*--eval_coco_captions_json"):
        train_script.main(common)
    code = train_script.main(common + [
        "--eval_coco_captions_json", str(annotations / "captions_val2017.json"),
        "--eval_coco_images_dir", str(images / "val2017"), "--concept_eval_max_examples", "4",
        "--concepts", "color", "--num_hard_negatives", "1", "--max_steps", "2", "--per_device_train_batch_size", "4",
        "--per_device_eval_batch_size", "4", "--max_eval_samples", "4", "--save_strategy", "no", "--use_cpu",
        "--report_to", "none", "--dataloader_num_workers", "0", "--disable_tqdm", "true"])
    assert code == 0
    history = json.loads((tmp_path / "run" / "run.concept_eval.json").read_text())
    assert [p["step"] for p in history["points"]] == [0, 2]
    assert set(history["points"][0]["concept_accuracy"]) >= {"object", "color", "location", "size"}
    assert (tmp_path / "run" / "run.tradeoff.png").is_file()
    assert "| concept | captions_val2017.json | color | accuracy |" in (tmp_path / "run" / "README.md").read_text()
