"""The text-only control: a Kneser-Ney caption prior fitted on real COCO train captions, scoring benchmark items."""

from __future__ import annotations

import json
import math

import pytest
import torch

from hf_hardneg.evaluation import evaluate_model
from hf_hardneg.evaluation.tasks import MultipleChoiceSet, PairedSet, TripletSet
from hf_hardneg.evaluation.text_prior import UNK, NgramCaptionPrior, text_only_control, tokenize


@pytest.fixture(scope="module")
def train_captions(coco_mini) -> list[str]:
    data = json.loads((coco_mini / "annotations" / "captions_train2017.json").read_text())
    return [a["caption"] for a in data["annotations"]]


@pytest.fixture(scope="module")
def prior(train_captions) -> NgramCaptionPrior:
    return NgramCaptionPrior.fit(train_captions, source="coco-mini train2017")


@pytest.mark.parametrize("context", [(), ("a",), ("a", "dog"), ("never", "seen"), ("a", "zzzunseen")])
def test_probabilities_sum_to_one_over_the_vocabulary(prior, context):
    words = sorted(prior.vocabulary) + [UNK]
    total = math.fsum(prior.prob(w, context) for w in words)
    assert total == pytest.approx(1.0, abs=1e-12)  # float64 sums of ~800 terms
    assert all(prior.prob(w, context) > 0 for w in words[:50])


def test_prior_prefers_what_the_captions_say(train_captions):
    captions = ["a dog sits on a bench"] * 5 + ["a cat sleeps on a bed"] * 5 + train_captions
    prior = NgramCaptionPrior.fit(captions)
    assert prior.log_prob("a dog sits on a bench") > prior.log_prob("a bench sits on a dog")
    assert prior.log_prob("A dog sits on a bench.") == prior.log_prob("a dog sits on a bench")  # case, punctuation
    assert tokenize("A man's hat, red.") == ["a", "man's", "hat", "red"]
    with pytest.raises(ValueError, match="no caption"):
        NgramCaptionPrior.fit(["", "..."])
    with pytest.raises(TypeError, match="caption 1 is a int"):
        NgramCaptionPrior.fit(["a cat", 3])


def test_control_scores_multiple_choice_like_a_model(prior, train_captions):
    true = train_captions[:6]
    false = [" ".join(reversed(c.split())) for c in true]
    mc = MultipleChoiceSet(images=[None], image_index=[0] * 6, candidates=[[t, f] for t, f in zip(true, false)],
                           labels=[0] * 6, groups=["a", "a", "a", "b", "b", "b"])
    out = text_only_control(mc, prior)
    expected = [prior.log_prob(t) > prior.log_prob(f) + 1e-9 for t, f in zip(true, false)]
    assert out["a"]["accuracy"] == pytest.approx(sum(expected[:3]) / 3)
    assert out["b"]["accuracy"] == pytest.approx(sum(expected[3:]) / 3)
    assert out["micro_average"]["count"] == 6
    tie = MultipleChoiceSet([None], [0], [["a red cat", "a red cat"]], [0], ["t"])
    assert text_only_control(tie, prior)["t"]["accuracy"] == 0.0  # a tie counts against the true caption


def test_control_on_paired_and_triplet_sets(prior, train_captions):
    ps = PairedSet([None, None], [0, 0], [1, 1], train_captions[:2], train_captions[2:4], ["x", "x"])
    paired = text_only_control(ps, prior)
    assert paired["x"]["text_score"] == paired["x"]["image_score"] == 0.0  # blind to the image: never solvable
    ts = TripletSet([None], [0, 0], train_captions[:2], train_captions[2:4], ["zebra zebra zebra"] * 2, ["s", "s"])
    expected = [min(prior.log_prob(a), prior.log_prob(b)) > prior.log_prob("zebra zebra zebra") + 1e-9
                for a, b in zip(train_captions[:2], train_captions[2:4])]
    assert text_only_control(ts, prior)["s"]["itt_score"] == pytest.approx(sum(expected) / 2)
    assert text_only_control(object(), prior) is None


def test_evaluate_reports_the_control_beside_the_model(coco_mini, tmp_path, train_captions):
    from hf_hardneg.testing import make_tiny_model

    data = json.loads((coco_mini / "annotations" / "captions_val2017.json").read_text())
    first = {}
    for ann in data["annotations"]:
        first.setdefault(ann["image_id"], ann["caption"].strip())
    images = {img["id"]: img["file_name"] for img in data["images"]}
    raw = {str(i): {"filename": images[k], "caption": c, "negative_caption": " ".join(reversed(c.split()))}
           for i, (k, c) in enumerate(list(first.items())[:8])}
    (tmp_path / "sc").mkdir()
    (tmp_path / "sc" / "swap_obj.json").write_text(json.dumps(raw))
    model_dir = tmp_path / "clip"
    make_tiny_model(list(first.values()), model_dir, kind="clip", seed=2)
    captions_file = coco_mini / "annotations" / "captions_train2017.json"
    res = evaluate_model(model_dir, ["sugarcrepe"], tmp_path / "out", coco_dir=coco_mini,
                         sources={"sugarcrepe": {"source": tmp_path / "sc", "subsets": ["swap_obj"]}},
                         text_prior=captions_file, progress=False, device="cpu")
    control = res["tasks"]["sugarcrepe"]["text_only_control"]
    assert control["prior"].startswith("3-gram Kneser-Ney caption prior (discount 0.75) fitted on 400 captions")
    prior = NgramCaptionPrior.from_captions_file(captions_file)
    expected = sum(prior.log_prob(r["caption"]) > prior.log_prob(r["negative_caption"]) + 1e-9 for r in raw.values())
    assert control["metrics"]["swap_obj"]["accuracy"] == pytest.approx(expected / 8)
    md = (tmp_path / "out" / "results.md").read_text()
    assert "## Text-only control" in md and "| sugarcrepe | swap_obj | accuracy |" in md
    assert torch.isfinite(torch.tensor(res["tasks"]["sugarcrepe"]["metrics"]["swap_obj"]["accuracy"]))


def test_cli_text_prior_option(coco_mini, tmp_path, tiny_clip_dir, capsys):
    from hf_hardneg.cli import main

    (tmp_path / "sc").mkdir()
    data = json.loads((coco_mini / "annotations" / "captions_val2017.json").read_text())
    img = data["images"][0]
    caption = next(a["caption"] for a in data["annotations"] if a["image_id"] == img["id"])
    (tmp_path / "sc" / "add_att.json").write_text(json.dumps(
        {"0": {"filename": img["file_name"], "caption": caption, "negative_caption": caption + " purple"}}))
    code = main(["evaluate", "--model", str(tiny_clip_dir), "--tasks", "sugarcrepe", "--coco-dir", str(coco_mini),
                 "--source", f"sugarcrepe={tmp_path / 'sc'}", "--source", "sugarcrepe:subsets=add_att",
                 "--text-prior", str(coco_mini / "annotations" / "captions_train2017.json"),
                 "--output", str(tmp_path / "out"), "--no-progress", "--device", "cpu"])
    assert code == 0
    out = capsys.readouterr().out
    assert "text-only control: 3-gram Kneser-Ney caption prior" in out and "## Text-only control" in out
