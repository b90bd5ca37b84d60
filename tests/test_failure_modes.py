"""Bad input and unlucky runs, as a user meets them: each answered by one line that names the problem and the fix.

The README's "Failure modes" table lists these cases; a case added there gets a test here.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import PIL.Image
import pytest

from hf_hardneg.cli import main as cli_main

REPO_ROOT = Path(__file__).resolve().parents[1]
TRAIN = str(REPO_ROOT / "train.py")


def _run(*args, env=None, timeout=300):
    return subprocess.run([sys.executable, *map(str, args)], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", **(env or {})})


def _error_lines(stderr: str, prog: str) -> list[str]:
    lines = stderr.replace("\r", "\n").splitlines()  # a progress bar may share the line
    return [line for line in lines if line.startswith(f"{prog}: error:")]


def _image_rows(folder: Path, captions: list[str]) -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    paths = []
    for i, _ in enumerate(captions):
        path = folder / f"img{i}.jpg"
        PIL.Image.fromarray(rng.integers(0, 255, (24, 24, 3), dtype=np.uint8)).save(path)
        paths.append(str(path))
    return paths


# -- data -----------------------------------------------------------------------------------------------------


def test_the_keyword_filter_reports_what_it_dropped_at_the_default_level(caplog):
    from datasets import Dataset

    from hf_hardneg.substitution import add_hard_negatives, keep_rows_with_keywords

    ds = Dataset.from_dict({"caption": ["a red bus", "a plain wall", "a blue car", "two dogs"]})
    with caplog.at_level(logging.WARNING, logger="hf_hardneg"):
        add_hard_negatives(ds, "color", num_negatives=1)
        keep_rows_with_keywords(ds, "color")
    kept = [r.getMessage() for r in caplog.records if r.getMessage().startswith("kept")]
    assert kept == ["kept 2 of 4 rows whose 'caption' has a keyword of color (2 without one left out)"] * 2
    assert all(r.levelno == logging.WARNING for r in caplog.records if r.getMessage().startswith("kept"))


def test_no_caption_with_a_keyword_is_named_as_such(tmp_path):
    from datasets import Dataset

    from hf_hardneg.config import HardNegCLIPConfig
    from hf_hardneg.data.prepare import apply_concepts

    ds = Dataset.from_dict({"caption": ["a plain wall", "two dogs"]})
    args = HardNegCLIPConfig(output_dir=str(tmp_path), concepts=["color"], num_hard_negatives=1, use_cpu=True,
                             report_to="none")
    with pytest.raises(ValueError, match=r"none of the 2 captions in column 'caption' holds a keyword of the "
                                         r"concepts \['color'\].*--caption_column.*--concepts"):
        apply_concepts(ds, args)


def test_an_empty_coco_annotation_list_is_named_as_such(tmp_path):
    from hf_hardneg.data import load_coco_captions

    path = tmp_path / "captions.json"
    path.write_text(json.dumps({"images": [], "licenses": [], "annotations": []}))
    (tmp_path / "images").mkdir()
    with pytest.raises(ValueError, match=r"captions.json: the 'annotations' list is empty"):
        load_coco_captions(path, tmp_path / "images")


def test_two_data_sources_are_refused(train_script, tmp_path):
    _, data_args, config = train_script.parse_args([
        "--coco_captions_json", "a.json", "--coco_images_dir", "imgs", "--dataset_path", "rows.parquet",
        "--output_dir", str(tmp_path)])
    with pytest.raises(ValueError, match=r"training data given twice \(--coco_captions_json/--coco_images_dir and "
                                         r"--dataset_path\); pass one source"):
        train_script.load_training_data(data_args, config)


def test_bad_config_yaml_and_mixed_type_captions_are_one_line(tmp_path, tiny_clip_dir):
    bad = tmp_path / "bad.yaml"
    bad.write_text("learning_rate: 1e-5\nconcepts: [color\n")
    done = _run(TRAIN, "--config", bad)
    assert done.returncode == 2
    assert _error_lines(done.stderr, "train.py") == [
        f"train.py: error: --config {bad}: not valid YAML at line 3, column 1 (expected ',' or ']', but got "
        "'<stream end>'); write one `name: value` per line, as in configs/hn1_color.yaml"]
    assert "Traceback" not in done.stderr

    rows = tmp_path / "rows.jsonl"
    paths = _image_rows(tmp_path / "img", ["a", "b"])
    rows.write_text("\n".join(json.dumps(r) for r in [{"image": paths[0], "caption": "a red bus"},
                                                     {"image": paths[1], "caption": 5}]))
    done = _run(TRAIN, "--model_name_or_path", tiny_clip_dir, "--dataset_path", rows, "--concepts", "color",
                "--output_dir", tmp_path / "out", "--use_cpu", "true", "--report_to", "none")
    assert done.returncode == 2, done.stderr[-2000:]
    (line,) = _error_lines(done.stderr, "train.py")
    assert f"(--dataset_path {rows})" in line and "row 1 holds 5 (int)" in line and "make every caption a string" in line
    assert "Traceback" not in done.stderr


def test_a_corrupt_image_in_a_dataloader_worker_is_one_line(tmp_path, tiny_clip_dir):
    from datasets import Dataset

    captions = ["a red bus", "a blue car", "a green kite", "a white cat"] * 2
    paths = _image_rows(tmp_path / "img", captions)
    Path(paths[5]).write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    Dataset.from_dict({"image": paths, "caption": captions}).save_to_disk(tmp_path / "rows")
    done = _run(TRAIN, "--model_name_or_path", tiny_clip_dir, "--dataset_path", tmp_path / "rows",
                "--concepts", "color", "--num_hard_negatives", "1", "--per_device_train_batch_size", "4",
                "--max_steps", "2", "--save_strategy", "no", "--dataloader_num_workers", "2", "--use_cpu", "true",
                "--report_to", "none", "--disable_tqdm", "true", "--output_dir", tmp_path / "out")
    assert done.returncode == 2, done.stderr[-3000:]
    (line,) = _error_lines(done.stderr, "train.py")
    assert "img5.jpg" in line and "skip_corrupt_images" in line and "(in DataLoader worker process" in line
    assert "Traceback" not in line and "Original" not in line


# -- runs -----------------------------------------------------------------------------------------------------


def test_reusing_an_output_dir_is_refused_unless_asked_to_overwrite(tmp_path, tiny_captions):
    from _card_run import train_tiny

    out = tmp_path / "run"
    train_tiny(out, max_steps=4, save_steps=2)
    assert (out / "checkpoint-2").is_dir() and (out / "checkpoint-4").is_dir()
    with pytest.raises(ValueError, match=r"already holds checkpoints of an earlier run \(checkpoint-2, checkpoint-4\)"
                                         r".*--resume_from_checkpoint last.*--overwrite_output_dir"):
        train_tiny(out, max_steps=2, save_steps=1)
    train_tiny(out, max_steps=3, save_steps=3, overwrite_output_dir=True)
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-3"]  # the old run's are gone


# -- command line ---------------------------------------------------------------------------------------------


def test_evaluate_guards_come_before_any_work(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli_main(["evaluate", "--model", "x", "--output", str(tmp_path), "--tie-tolerance", "-1"])
    assert exit_info.value.code == 2
    assert "--tie-tolerance: must be >= 0, got -1" in capsys.readouterr().err
    taken = tmp_path / "results.txt"
    taken.write_text("not a folder")
    # the model does not exist either: the --output check must come first, before anything is loaded
    assert cli_main(["evaluate", "--model", str(tmp_path / "no-model"), "--output", str(taken)]) == 2
    assert f"--output {taken} is a file" in capsys.readouterr().err


def test_push_checks_repo_id_and_licence_and_never_echoes_a_token(tmp_path, capsys):
    secret = "hf_" + "NotARealTokenOnlyForThisTest123"
    with pytest.raises(SystemExit) as exit_info:
        cli_main(["push", "--checkpoint", str(tmp_path), "--repo-id", "a/b", "--token", secret])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert secret not in err and "--token" in err and "HF_TOKEN" in err

    assert cli_main(["push", "--checkpoint", str(tmp_path), "--repo-id", "not a repo!!", "--dry-run"]) == 2
    assert "--repo-id 'not a repo!!' is not a Hub repo id" in capsys.readouterr().err
    assert cli_main(["push", "--checkpoint", str(tmp_path), "--repo-id", "me/model", "--license", "not a license",
                     "--dry-run"]) == 2
    assert "--license 'not a license' is not a licence identifier the Hub knows" in capsys.readouterr().err
    assert cli_main(["push", "--checkpoint", str(tmp_path), "--repo-id", "me/model", "--license", "apache2",
                     "--dry-run"]) == 2
    assert "did you mean apache-2.0" in capsys.readouterr().err


@pytest.mark.slow
def test_push_without_a_network_is_one_line(tmp_path, tiny_clip_dir):
    # a real connection failure: the Hub endpoint is a local port nobody listens on
    secret = "hf_" + "NotARealTokenOnlyForThisTest123"
    done = _run("-m", "hf_hardneg.cli", "push", "--checkpoint", tiny_clip_dir, "--repo-id", "me/model",
                env={"HF_TOKEN": secret, "HF_HUB_OFFLINE": "0", "HF_ENDPOINT": "http://127.0.0.1:9"})
    assert done.returncode == 1, done.stderr[-2000:]
    lines = [line for line in done.stderr.splitlines() if line.startswith("hf-hardneg push:")]
    assert len(lines) == 1 and "could not reach the Hugging Face Hub" in lines[0] and "ConnectError" in lines[0]
    assert "Traceback" not in done.stderr and secret not in done.stdout + done.stderr


def test_build_inpaintcoco_exits_2_for_bad_options(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli_main(["build-inpaintcoco", "--source", str(tmp_path), "--output", str(tmp_path / "o"),
                  "--max-shard-size", "lots"])
    assert exit_info.value.code == 2 and "cannot read shard size 'lots'" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        cli_main(["build-inpaintcoco", "--source", str(tmp_path), "--output", str(tmp_path / "o"),
                  "--push-to-hub", "not a repo!!"])
    assert exit_info.value.code == 2 and "is not a Hub repo id" in capsys.readouterr().err
    # bad input (here: no annotation table) stays exit status 1, as documented
    assert cli_main(["build-inpaintcoco", "--source", str(tmp_path), "--output", str(tmp_path / "o")]) == 1
