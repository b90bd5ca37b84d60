"""The offline demo (`make demo`): a shortened run end to end, caching, configuration errors."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import yaml

from hf_hardneg.demo import DEFAULT_CONFIG, DemoConfig, format_table, load_demo_config, main, summarize_seeds

TINY = {
    "stage1_scenes": 96,
    "stage2_scenes": 96,
    "eval_scenes": 32,
    "model": {"kind": "clip", "image_size": 32, "patch_size": 8, "hidden_size": 32, "num_layers": 1,
              "projection_dim": 16, "max_length": 40},
    "stage1": {"max_steps": 6, "learning_rate": 1.0e-3, "per_device_train_batch_size": 16},
    "stage2": {"max_steps": 6, "learning_rate": 5.0e-4, "per_device_train_batch_size": 16},
    "eval_every": 3,
    "checkpoint_eval_examples": 8,
    "eval_concepts": ["color", "size", "location", "object"],
    "checkpoint_concepts": ["color", "size"],
    "num_threads": 1,
}


@pytest.fixture()
def tiny_config(tmp_path) -> Path:
    path = tmp_path / "demo.yaml"
    path.write_text(yaml.safe_dump({**TINY, "output_dir": str(tmp_path / "out")}))
    return path


@pytest.mark.slow
def test_shortened_demo_runs_end_to_end_and_reuses_stage1(tiny_config, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["--config", str(tiny_config), "--seeds", "0", "1", "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "| HN1 |" in printed and "| classic |" in printed and "mean ± standard deviation" in printed

    for seed in (0, 1):
        report = json.loads((out / f"seed{seed}" / "demo_results.json").read_text())
        assert set(report["summary"]) == {"stage1", "classic", "hn1"}
        for row in report["summary"].values():
            assert set(row) == {"color", "size", "location", "object", "t2i_R@5"}
            assert all(0.0 <= v <= 1.0 for v in row.values())
        assert report["chance"]["color"] == pytest.approx(1 / 9)
        assert report["chance"]["size"] == pytest.approx(1 / 2)
        # classic and HN1 start from the same stage-1 weights, on the same rows, for the same steps
        start = {name: h[0] for name, h in report["histories"].items()}
        assert start["classic"]["step"] == start["hn1"]["step"] == 0
        assert start["classic"]["concept_accuracy"] == start["hn1"]["concept_accuracy"]
        assert start["classic"]["t2i_R@5"] == start["hn1"]["t2i_R@5"]
        runs = report["stage2_runs"]
        assert runs["classic"]["train_rows"] == runs["hn1"]["train_rows"] > 0
        assert runs["classic"]["steps"] == runs["hn1"]["steps"] == TINY["stage2"]["max_steps"]
        assert [p["step"] for p in report["histories"]["hn1"]] == [0, 3, 6]
        # only the HN1 run saw hard negatives
        assert "hard_negative_accuracy" in runs["hn1"]["last_train_log"]
        assert "hard_negative_accuracy" not in runs["classic"]["last_train_log"]
        # checkpoints measure the cheap concepts; the final table has all of them
        assert set(report["histories"]["hn1"][-1]["concept_accuracy"]) >= {"color", "size"}
        assert "object" not in report["histories"]["hn1"][-1]["concept_accuracy"]
        assert set(report["plots"]) == {"color", "size"}
        for concept in TINY["checkpoint_concepts"]:
            png = out / f"seed{seed}" / f"tradeoff_{concept}.png"
            assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        for name in ("stage1", "classic", "hn1"):
            assert (out / f"seed{seed}" / name / "model.safetensors").is_file()

    summary = json.loads((out / "demo_summary.json").read_text())
    assert summary["seeds"] == [0, 1]
    color = summary["mean_std"]["hn1"]["color"]
    per_seed = [summary["per_seed"][s]["hn1"]["color"] for s in ("0", "1")]
    assert color[0] == pytest.approx(sum(per_seed) / 2)

    # a second run of the same configuration reuses the data and the stage-1 checkpoint
    weights = out / "seed0" / "stage1" / "model.safetensors"
    before = weights.stat().st_mtime_ns
    assert main(["--config", str(tiny_config), "--seed", "0", "--no-progress"]) == 0
    assert "stage 1: reusing" in capsys.readouterr().out
    assert weights.stat().st_mtime_ns == before
    assert len(list((out / "data").iterdir())) == 1


def test_default_config_file_is_valid_and_equals_the_built_in_defaults():
    """An installed package has no configs/ folder: DemoConfig() must run the same demo."""
    cfg = load_demo_config(DEFAULT_CONFIG)
    assert cfg == DemoConfig()
    assert cfg.num_hard_negatives == 1
    assert cfg.stage2["per_device_train_batch_size"] == 64
    assert cfg.world_config().layout == "grid"
    assert set(cfg.hard_negative_concepts) <= set(cfg.eval_concepts)


@pytest.mark.parametrize(
    "values, match",
    [
        ({"stage_1": {}}, r"unknown demo settings \['stage_1'\]"),
        ({"stage2": {"max_step": 3}}, r"stage2 has unknown training arguments \['max_step'\]"),
        ({"stage1": {"output_dir": "x"}}, r"stage1 may not set \['output_dir'\]"),
        ({"hard_negative_concepts": ["colour", "texture"]}, "unknown concept 'texture'"),
        ({"hard_negative_concepts": []}, "hard_negative_concepts is empty"),
        ({"world": {"layout": "spiral"}}, "layout must be"),
        ({"world": {"n_objects": 3}}, "known world fields"),
        ({"eval_scenes": 0}, "eval_scenes must be >= 1"),
    ],
)
def test_bad_demo_config_names_the_problem(tmp_path, values, match):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(values))
    with pytest.raises(ValueError, match=match):
        load_demo_config(path)


def test_missing_or_malformed_config_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="configs/demo.yaml"):
        load_demo_config(tmp_path / "nope.yaml")
    path = tmp_path / "list.yaml"
    path.write_text("- 1\n- 2\n")
    with pytest.raises(ValueError, match="expected a mapping"):
        load_demo_config(path)


def test_summary_over_seeds_and_table():
    reports = [{"summary": {"classic": {"color": 0.2, "t2i_R@5": 0.9}, "hn1": {"color": 0.5, "t2i_R@5": 0.8}}},
               {"summary": {"classic": {"color": 0.4, "t2i_R@5": 0.9}, "hn1": {"color": 0.7, "t2i_R@5": 1.0}}}]
    stats = summarize_seeds(reports)
    # sample standard deviation of two values 0.2 apart: sqrt(0.02); plain float64 arithmetic
    assert stats["classic"]["color"] == pytest.approx((0.3, math.sqrt(0.02)), rel=1e-12)
    assert stats["hn1"]["t2i_R@5"] == pytest.approx((0.9, math.sqrt(0.02)), rel=1e-12)
    table = format_table(stats, ["color", "t2i_R@5"], chance={"color": 1 / 9})
    assert table.splitlines() == [
        "| model | color | t2i R@5 |",
        "| --- | --- | --- |",
        "| chance | 0.111 | – |",
        "| classic | 0.300 ± 0.141 | 0.900 ± 0.000 |",
        "| HN1 | 0.600 ± 0.141 | 0.900 ± 0.141 |",
    ]
    one = summarize_seeds(reports[:1])
    assert one["hn1"]["color"] == (0.5, 0.0)


def test_config_overrides_win_over_the_file(tiny_config):
    cfg = load_demo_config(tiny_config, seed=5, output_dir="elsewhere", num_threads=None)
    assert (cfg.seed, cfg.output_dir, cfg.num_threads) == (5, "elsewhere", 1)
    assert isinstance(cfg, DemoConfig)
