"""WiSE-FT interpolation: alpha 0 and 1 are the end points bit for bit, alpha in between is the float64 mix,
incompatible models are refused in one line, and the CLI writes loadable checkpoints, cards and the sweep."""

from __future__ import annotations

import json

import numpy as np
import PIL.Image
import pytest
import torch
from safetensors.torch import load_file

from hf_hardneg.interpolation import IncompatibleModelsError, check_compatible, interpolate_state_dicts
from hf_hardneg.testing import make_tiny_model

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def pair(tmp_path_factory, tiny_captions):
    """Two tiny CLIPs of one architecture (different seeds: a 'base' and a 'fine-tuned' copy), saved."""
    root = tmp_path_factory.mktemp("wiseft")
    base = make_tiny_model(tiny_captions, root / "base", seed=0)[0]
    tuned = make_tiny_model(tiny_captions, root / "tuned", seed=1)[0]
    return root, base, tuned


def _weights(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_alpha_zero_and_one_are_the_end_points_exactly_and_inputs_untouched(pair):
    _, base, tuned = pair
    before_base, before_tuned = _weights(base), _weights(tuned)
    at0, at1 = interpolate_state_dicts(base, tuned, 0.0), interpolate_state_dicts(base, tuned, 1)
    for name, value in at0.state_dict().items():
        assert torch.equal(value, before_base[name]), name
        assert torch.equal(at1.state_dict()[name], before_tuned[name]), name
    assert any(not torch.equal(before_base[k], before_tuned[k]) for k in before_base)  # the ends do differ
    for name in before_base:  # neither input changed
        assert torch.equal(base.state_dict()[name], before_base[name])
        assert torch.equal(tuned.state_dict()[name], before_tuned[name])


def test_intermediate_alpha_is_the_float64_mix_rounded_once(pair):
    _, base, tuned = pair
    mid = interpolate_state_dicts(base, tuned, 0.25).state_dict()
    for name, x in base.state_dict().items():
        y = tuned.state_dict()[name]
        if torch.is_floating_point(x):
            expected = (0.75 * x.double() + 0.25 * y.double()).to(x.dtype)
            assert torch.equal(mid[name], expected), name
        else:
            assert torch.equal(mid[name], x), name


def test_incompatible_models_are_refused(pair, tiny_captions):
    _, base, _ = pair
    wider = make_tiny_model(tiny_captions, hidden_size=48)[0]
    with pytest.raises(IncompatibleModelsError, match=r"shape \(32,\) in the base but \(48,\)|shape .* in the base"):
        check_compatible(base, wider)
    deeper = make_tiny_model(tiny_captions, num_layers=3)[0]
    with pytest.raises(IncompatibleModelsError, match="only in the fine-tuned model"):
        interpolate_state_dicts(base, deeper, 0.5)
    siglip = make_tiny_model(tiny_captions, kind="siglip")[0]
    with pytest.raises(IncompatibleModelsError, match="cannot interpolate a CLIPModel with a SiglipModel"):
        interpolate_state_dicts(base, siglip, 0.5)
    with pytest.raises(IncompatibleModelsError, match="load both in one dtype"):
        check_compatible(base, make_tiny_model(tiny_captions)[0].double())
    with pytest.raises(ValueError, match="finite"):
        interpolate_state_dicts(base, base, float("nan"))


def test_cli_refuses_incompatible_models_in_one_line(pair, tiny_captions, tmp_path, capsys):
    from hf_hardneg.cli import main

    root, _, _ = pair
    make_tiny_model(tiny_captions, tmp_path / "siglip", kind="siglip")
    code = main(["interpolate", "--base", str(root / "base"), "--finetuned", str(tmp_path / "siglip"),
                 "--alpha", "0.5", "--output", str(tmp_path / "out")])
    errors = [line for line in capsys.readouterr().err.splitlines() if "error:" in line]  # loading bars aside
    assert code == 2 and len(errors) == 1
    assert errors[0].startswith("hf-hardneg interpolate: error: cannot interpolate a CLIPModel with a SiglipModel")
    assert not (tmp_path / "out").exists()  # refused before anything is written


def _captioned(tiny_captions, tmp_path):
    import datasets

    rng = np.random.default_rng(0)
    rows = {"image": [PIL.Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)) for _ in tiny_captions],
            "caption": list(tiny_captions), "image_id": list(range(len(tiny_captions)))}
    datasets.Dataset.from_dict(rows).save_to_disk(tmp_path / "coco")
    classes = tmp_path / "classes"
    for i, name in enumerate(["cat", "dog", "bus"]):
        (classes / name).mkdir(parents=True)
        for j in range(2):
            PIL.Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(classes / name / f"{j}.png")
    return tmp_path / "coco", classes


def test_cli_writes_loadable_checkpoints_cards_and_the_evaluated_sweep(pair, tiny_captions, tmp_path):
    from transformers import AutoImageProcessor, AutoModel, AutoTokenizer

    from hf_hardneg.cli import main

    root, base, tuned = pair
    coco, classes = _captioned(tiny_captions, tmp_path)
    out = tmp_path / "wiseft"
    code = main(["interpolate", "--base", str(root / "base"), "--finetuned", str(root / "tuned"),
                 "--alpha", "0", "0.5", "1", "--output", str(out), "--evaluate", "--device", "cpu",
                 "--source", f"coco={coco}", "--source", f"zeroshot={classes}", "--concepts", "color",
                 "--no-progress"])
    assert code == 0
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == ["alpha_0.0", "alpha_0.5", "alpha_1.0"]
    for alpha, reference in (("0.0", base), ("1.0", tuned)):
        saved = load_file(out / f"alpha_{alpha}" / "model.safetensors")
        for name, value in reference.state_dict().items():
            if name in saved:  # save_pretrained leaves out tied copies
                assert torch.equal(saved[name], value), (alpha, name)
    folder = out / "alpha_0.5"
    AutoModel.from_pretrained(folder), AutoTokenizer.from_pretrained(folder), AutoImageProcessor.from_pretrained(folder)
    card = (folder / "README.md").read_text()
    assert "WiSE-FT weight-space interpolation" in card and "alpha = 0.5" in card
    assert "| zeroshot |" in card and "| concept |" in card
    sweep = json.loads((out / "sweep.json").read_text())
    assert [p["alpha"] for p in sweep["points"]] == [0.0, 0.5, 1.0]
    for point in sweep["points"]:
        results = json.loads((out / point["path"] / "eval" / "results.json").read_text())
        assert point["metrics"]["zeroshot_top1"] == results["tasks"]["zeroshot"]["metrics"]["top1"]
        assert point["metrics"]["concept_accuracy"] == results["tasks"]["concept"]["metrics"]["color"]["accuracy"]
        assert point["metrics"]["t2i_R@5"] == results["tasks"]["retrieval"]["metrics"]["t2i_R@5"]
    table = (out / "sweep.md").read_text()
    assert "| alpha | concept accuracy | zero-shot top-1 | t2i R@5 | i2t R@5 |" in table
    assert (out / "sweep.png").stat().st_size > 0
