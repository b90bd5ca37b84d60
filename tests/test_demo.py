"""The offline demo (`make demo`): a shortened run end to end, caching, configuration errors."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import yaml

from hf_hardneg.demo import (DEFAULT_CONFIG, DemoConfig, describe_effects, effects, format_table, load_demo_config,
                             main, summarize_seeds)

TINY = {
    "stage1_scenes": 96,
    "stage2_scenes": 96,
    "eval_scenes": 32,
    "model": {"kind": "clip", "image_size": 32, "patch_size": 8, "hidden_size": 32, "num_layers": 1,
              "projection_dim": 16, "max_length": 40},
    "stage1": {"max_steps": 6, "learning_rate": 1.0e-3, "per_device_train_batch_size": 16},
    "stage2": {"max_steps": 6, "learning_rate": 5.0e-4, "per_device_train_batch_size": 16},
    "eval_every": 3,
    "concepts": ["object", "color", "location", "size"],
    "checkpoint_concepts": ["color", "size"],
    "num_threads": 1,
    "parallel_runs": 2,
}
RUNS = {"classic", "hn_object", "hn_color", "hn_location", "hn_size"}


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
    assert "| HN color |" in printed and "| classic |" in printed and "mean ± standard deviation" in printed
    assert "HN location beats classic on location on" in printed and "of 2 seeds" in printed

    for seed in (0, 1):
        report = json.loads((out / f"seed{seed}" / "demo_results.json").read_text())
        assert set(report["summary"]) == {"stage1", "wise_ft"} | RUNS
        for row in report["summary"].values():
            assert {"color", "size", "location", "object", "t2i_R@5", "pair_accuracy", "zeroshot_top1"} <= set(row)
            assert all(0.0 <= v <= 1.0 for v in row.values())
        assert report["chance"]["zeroshot_top1"] == pytest.approx(1 / 18)
        assert report["counts"]["zeroshot_scenes"] == DemoConfig().zeroshot_scenes
        assert (out / f"seed{seed}" / "wise_ft" / "model.safetensors").is_file()
        assert report["chance"]["color"] == pytest.approx(1 / 9)
        assert report["chance"]["size"] == pytest.approx(1 / 2)
        # every stage-2 run starts from the same stage-1 weights, on the same rows, for the same steps
        histories = report["histories"]
        starts = {name: h[0] for name, h in histories.items()}
        assert {s["step"] for s in starts.values()} == {0}
        assert len({json.dumps(s["concept_accuracy"], sort_keys=True) for s in starts.values()}) == 1
        assert len({s["t2i_R@5"] for s in starts.values()}) == 1
        runs = report["stage2_runs"]
        assert len({runs[name]["train_rows"] for name in RUNS}) == 1
        assert runs["classic"]["train_rows"] == report["counts"]["stage2_rows"] > 0
        assert {runs[name]["steps"] for name in RUNS} == {TINY["stage2"]["max_steps"]}
        assert [p["step"] for p in histories["hn_color"]] == [0, 3, 6]
        # only the HN runs saw hard negatives
        assert all("hard_negative_accuracy" in runs[f"hn_{c}"]["last_train_log"] for c in TINY["concepts"])
        assert "hard_negative_accuracy" not in runs["classic"]["last_train_log"]
        # the table's values are the plots' last points (same held-out scenes, same weights)
        for name in RUNS:
            last = histories[name][-1]["concept_accuracy"]
            for concept in TINY["checkpoint_concepts"]:
                assert report["summary"][name][concept] == pytest.approx(last[concept], abs=1e-9)
        assert "object" not in histories["hn_color"][-1]["concept_accuracy"]
        assert set(report["plots"]) == {"color", "size"}
        for concept in TINY["checkpoint_concepts"]:
            png = out / f"seed{seed}" / f"tradeoff_{concept}.png"
            assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        for name in {"stage1"} | RUNS:
            assert (out / f"seed{seed}" / name / "model.safetensors").is_file()
        assert set(report["effects"]) == set(TINY["concepts"])

    summary = json.loads((out / "demo_summary.json").read_text())
    assert summary["seeds"] == [0, 1]
    color = summary["mean_std"]["hn_color"]["color"]
    per_seed = [summary["per_seed"][s]["hn_color"]["color"] for s in ("0", "1")]
    assert color[0] == pytest.approx(sum(per_seed) / 2)
    wins = sum(summary["per_seed"][s]["hn_color"]["color"] > summary["per_seed"][s]["classic"]["color"]
               for s in ("0", "1"))
    assert summary["effects"]["color"]["wins"] == wins and summary["effects"]["color"]["seeds"] == 2

    # the summary can be rebuilt from the seeds' results without training
    assert main(["--config", str(tiny_config), "--seeds", "0", "1", "--report-only", "--no-progress"]) == 0
    assert "mean ± standard deviation" in capsys.readouterr().out
    assert main(["--config", str(tiny_config), "--seeds", "7", "--report-only", "--no-progress"]) == 2

    # a second run of the same configuration reuses the data and the stage-1 checkpoint (runs in-process)
    weights = out / "seed0" / "stage1" / "model.safetensors"
    before = weights.stat().st_mtime_ns
    assert main(["--config", str(tiny_config), "--seed", "0", "--parallel-runs", "1", "--no-progress"]) == 0
    assert "stage 1: reusing" in capsys.readouterr().out
    assert weights.stat().st_mtime_ns == before
    assert len(list((out / "data").iterdir())) == 1


@pytest.mark.slow
def test_image_negative_runs_compare_text_only_and_text_and_image(tmp_path, capsys):
    path = tmp_path / "demo.yaml"
    path.write_text(yaml.safe_dump({**TINY, "output_dir": str(tmp_path / "out"), "concepts": ["color"],
                                    "checkpoint_concepts": ["color"], "image_negative_concepts": ["color"]}))
    assert main(["--config", str(path), "--image-negatives", "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "edits color, text+image" in printed and "edits color, text only" in printed
    report = json.loads((tmp_path / "out" / "seed0" / "demo_results.json").read_text())
    runs = report["stage2_runs"]
    # both train on the same original and edited rows; only the second scores the other image of its pair
    assert runs["edit_color"]["train_rows"] == runs["edit_color_img"]["train_rows"]
    assert runs["edit_color"]["train_rows"] == 2 * len(
        __import__("datasets").load_from_disk(str(next((tmp_path / "out" / "data").iterdir()) / "edits_color")))
    assert "image_hard_negative_accuracy" in runs["edit_color_img"]["last_train_log"]
    assert "image_hard_negative_accuracy" not in runs["edit_color"]["last_train_log"]
    assert "pair_accuracy/color" in report["summary"]["edit_color_img"]
    assert {"image_negatives/color", "image_negatives/color/pair_accuracy"} <= set(report["effects"])


def test_default_config_file_is_valid_and_equals_the_built_in_defaults():
    """An installed package has no configs/ folder: DemoConfig() must run the same demo."""
    cfg = load_demo_config(DEFAULT_CONFIG)
    assert cfg == DemoConfig()
    assert cfg.num_hard_negatives == 1
    assert cfg.stage2["per_device_train_batch_size"] == 64
    assert cfg.world_config().layout == "grid"
    assert set(cfg.checkpoint_concepts) <= set(cfg.concepts)
    assert set(cfg.concepts) == {"object", "color", "location", "size"}


@pytest.mark.parametrize(
    "values, match",
    [
        ({"stage_1": {}}, r"unknown demo settings \['stage_1'\]"),
        ({"stage2": {"max_step": 3}}, r"stage2 has unknown training arguments \['max_step'\]"),
        ({"stage1": {"output_dir": "x"}}, r"stage1 may not set \['output_dir'\]"),
        ({"concepts": ["colour", "texture"]}, "unknown concept 'texture'"),
        ({"concepts": []}, "concepts is empty"),
        ({"image_negative_concepts": ["object_coco"]}, "can edit only"),
        ({"parallel_runs": 0}, "parallel_runs must be >= 1"),
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
    reports = [{"summary": {"classic": {"color": 0.2, "t2i_R@5": 0.9}, "hn_color": {"color": 0.5, "t2i_R@5": 0.8}}},
               {"summary": {"classic": {"color": 0.4, "t2i_R@5": 0.9}, "hn_color": {"color": 0.7, "t2i_R@5": 1.0}}}]
    stats = summarize_seeds(reports)
    # sample standard deviation of two values 0.2 apart: sqrt(0.02); plain float64 arithmetic
    assert stats["classic"]["color"] == pytest.approx((0.3, math.sqrt(0.02)), rel=1e-12)
    assert stats["hn_color"]["t2i_R@5"] == pytest.approx((0.9, math.sqrt(0.02)), rel=1e-12)
    found = effects(reports, ["color"])
    assert found["color"]["wins"] == 2 and found["color"]["seeds"] == 2
    assert found["color"]["min_points"] == pytest.approx(30.0, rel=1e-12)
    assert describe_effects(found) == [
        "HN color beats classic on color on 2 of 2 seeds (+30.0 to +30.0 points, mean +30.0)"]
    table = format_table(stats, ["color", "t2i_R@5"], chance={"color": 1 / 9})
    assert table.splitlines() == [
        "| model | color | t2i R@5 |",
        "| --- | --- | --- |",
        "| chance | 0.111 | – |",
        "| classic | 0.300 ± 0.141 | 0.900 ± 0.000 |",
        "| HN color | 0.600 ± 0.141 | 0.900 ± 0.141 |",
    ]
    one = summarize_seeds(reports[:1])
    assert one["hn_color"]["color"] == (0.5, 0.0)


def test_config_overrides_win_over_the_file(tiny_config):
    cfg = load_demo_config(tiny_config, seed=5, output_dir="elsewhere", num_threads=None)
    assert (cfg.seed, cfg.output_dir, cfg.num_threads) == (5, "elsewhere", 1)
    assert isinstance(cfg, DemoConfig)



SHORT_SIZE = {
    "stage1_scenes": 6000, "stage2_scenes": 6000, "eval_scenes": 500, "zeroshot_scenes": 36,
    "stage1": {"max_steps": 400, "learning_rate": 1.0e-3, "lr_scheduler_type": "cosine", "warmup_steps": 0.05,
               "per_device_train_batch_size": 64},
    "stage2": {"max_steps": 400, "learning_rate": 1.0e-3, "lr_scheduler_type": "constant",
               "per_device_train_batch_size": 64},
    "concepts": ["size"], "checkpoint_concepts": ["size"], "eval_every": 400, "wise_ft_run": None,
}


@pytest.mark.slow
def test_shortened_demo_shows_the_size_effect(tmp_path):
    """The direction of the effect, not its size: from the same stage-1 weights, size hard negatives
    rank the true size word above its substitute more often than classic training does.

    The demo's world and model with a third of its budget. Size is the concept whose effect came
    first and held on every seed measured (full demo: 5 of 5 seeds, see the README; this setting:
    seeds 0, 1, 2 gave +4.0, +6.0 and +0.3 points), so only the sign is asserted.
    """
    path = tmp_path / "short.yaml"
    path.write_text(yaml.safe_dump({**SHORT_SIZE, "output_dir": str(tmp_path / "out")}))
    assert main(["--config", str(path), "--no-progress"]) == 0
    summary = json.loads((tmp_path / "out" / "seed0" / "demo_results.json").read_text())["summary"]
    assert summary["hn_size"]["size"] > summary["classic"]["size"], summary
    assert summary["classic"]["size"] > summary["stage1"]["size"]  # stage 2 teaches size words at all
