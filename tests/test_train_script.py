"""train.py: the paper's YAML configs, flag overrides, data loading, and an end-to-end run on real COCO images."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
CONFIGS = sorted((REPO_ROOT / "configs").glob("*.yaml"))
PAPER_RUNS = {  # name -> (num_hard_negatives, concepts)
    "classic": (0, None),
    "hn1_object": (1, ["object"]), "hn2_object": (2, ["object"]), "hn3_object": (3, ["object"]),
    "hn1_color": (1, ["color"]), "hn2_color": (2, ["color"]), "hn3_color": (3, ["color"]),
    "hn1_location": (1, ["location"]), "hn1_size": (1, ["size"]),
}

torch.set_num_threads(1)




def test_every_paper_run_has_a_config_that_parses(train_script, tmp_path):
    assert set(PAPER_RUNS) <= {path.stem for path in CONFIGS}
    for path in CONFIGS:
        if path.stem not in PAPER_RUNS:
            continue
        model_args, data_args, config = train_script.parse_args(
            ["--config", str(path), "--bf16", "false", "--output_dir", str(tmp_path)])
        k, concepts = PAPER_RUNS[path.stem]
        assert (config.num_hard_negatives, config.concepts) == (k, concepts), path.name
        assert config.hard_negative_mode == "replace"
        assert model_args.model_name_or_path == "openai/clip-vit-base-patch32"
        assert data_args.coco_captions_json.endswith("captions_train2017.json")
        # the paper's recipe comes from HardNegCLIPConfig's defaults
        assert (config.learning_rate, config.weight_decay, config.per_device_train_batch_size) == (5e-6, 0.1, 64)
        assert config.lr_scheduler_type == "constant" and config.num_train_epochs == 3
        assert config.dataloader_num_workers > 0 and config.dataloader_persistent_workers


def test_flags_override_the_config_file_and_unknown_keys_are_errors(train_script, tmp_path):
    _, _, config = train_script.parse_args(["--config", str(REPO_ROOT / "configs" / "hn1_color.yaml"),
                                            "--learning_rate", "1e-5", "--num_hard_negatives", "2",
                                            "--bf16", "false", "--output_dir", str(tmp_path)])
    assert (config.learning_rate, config.num_hard_negatives, config.concepts) == (1e-5, 2, ["color"])
    bad = tmp_path / "bad.yaml"
    bad.write_text("num_hard_negatives: 1\nlearning_rat: 0.1\n")
    with pytest.raises(ValueError, match=r"bad.yaml: unknown argument\(s\) \['learning_rat'\]"):
        train_script.parse_args(["--config", str(bad)])
    with pytest.raises(FileNotFoundError, match="no such file"):
        train_script.parse_args(["--config", str(tmp_path / "missing.yaml")])
    _, _, plain = train_script.parse_args(["--output_dir", str(tmp_path), "--concepts", "color", "size"])
    assert plain.concepts == ["color", "size"] and plain.num_hard_negatives == 0


def test_local_dataset_with_image_paths_plain_and_streaming(train_script, coco_mini, tmp_path):
    from datasets import Dataset, IterableDataset

    from hf_hardneg.data import load_coco_captions

    coco = load_coco_captions(coco_mini / "annotations" / "captions_val2017.json", coco_mini / "images" / "val2017")
    paths = [str(coco_mini / "images" / "val2017" / name) for name in coco["file_name"][:40]]
    Dataset.from_dict({"path": paths, "text": coco["caption"][:40]}).save_to_disk(tmp_path / "saved")
    common = ["--dataset_path", str(tmp_path / "saved"), "--image_column", "path", "--caption_column", "text",
              "--concepts", "color", "--num_hard_negatives", "2", "--output_dir", str(tmp_path / "out")]

    _, data_args, config = train_script.parse_args(common)
    train, evaluation = train_script.load_training_data(data_args, config)
    assert evaluation is None and isinstance(train, Dataset) and 0 < len(train) < 40
    assert {"negative_1", "negative_2"} <= set(train.column_names)
    assert all(row["negative_1"] != row["text"] for row in train)

    _, data_args, config = train_script.parse_args(common + ["--streaming", "--max_train_samples", "3"])
    streamed, _ = train_script.load_training_data(data_args, config)
    assert isinstance(streamed, IterableDataset)
    rows = list(streamed)
    assert [row["negative_1"] for row in rows] == train["negative_1"][:3]  # same negatives when streaming

    _, data_args, config = train_script.parse_args(common[:6] + ["--num_hard_negatives", "1",
                                                                 "--output_dir", str(tmp_path / "out")])
    with pytest.raises(ValueError, match="has 0 negative_\\* columns; pass --concepts"):
        train_script.load_training_data(data_args, config)
    _, data_args, config = train_script.parse_args(["--dataset_path", str(tmp_path / "saved"),
                                                    "--output_dir", str(tmp_path / "out")])
    with pytest.raises(ValueError, match=r"no column 'image' \(--image_column\)"):
        train_script.load_training_data(data_args, config)


@pytest.mark.slow
@pytest.mark.coco
def test_end_to_end_on_real_coco_images(train_script, coco_mini, tiny_clip_dir, tmp_path):
    from transformers import AutoImageProcessor, AutoModel, AutoTokenizer

    out = tmp_path / "run"
    annotations = coco_mini / "annotations"
    code = train_script.main([
        "--model_name_or_path", str(tiny_clip_dir),
        "--coco_captions_json", str(annotations / "captions_train2017.json"),
        "--coco_images_dir", str(coco_mini / "images" / "train2017"),
        "--eval_coco_captions_json", str(annotations / "captions_val2017.json"),
        "--eval_coco_images_dir", str(coco_mini / "images" / "val2017"),
        "--max_eval_samples", "8",
        "--concepts", "color", "--num_hard_negatives", "1",
        "--per_device_train_batch_size", "8", "--per_device_eval_batch_size", "8", "--max_steps", "2",
        "--logging_steps", "1", "--save_strategy", "no", "--use_cpu", "--report_to", "none",
        "--dataloader_num_workers", "2", "--dataloader_persistent_workers", "true",  # decode in workers
        "--output_dir", str(out), "--disable_tqdm", "true",
    ])
    assert code == 0
    for name in ("model.safetensors", "tokenizer.json", "preprocessor_config.json", "config.json"):
        assert (out / name).is_file(), name
    AutoModel.from_pretrained(out), AutoTokenizer.from_pretrained(out), AutoImageProcessor.from_pretrained(out)
    state = json.loads((out / "trainer_state.json").read_text())
    steps = [log for log in state["log_history"] if "loss" in log]
    assert [log["step"] for log in steps] == [1, 2]
    assert all(math.isfinite(log["loss"]) and 0 <= log["hard_negative_accuracy"] <= 1 for log in steps)
    results = json.loads((out / "eval_results.json").read_text())
    assert math.isfinite(results["eval_loss"]) and "eval_hard_negative_accuracy" in results
