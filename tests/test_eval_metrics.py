"""Metric functions on hand-built scores and embeddings with known answers.

Every metric is checked for three things: exact answers on small cases, an
oracle scoring 1.0, and a constant (or tie-producing) model scoring at or below
chance -- ties must count against the correct answer.
"""

from __future__ import annotations

import math

import pytest
import torch

from hf_hardneg.evaluation import metrics as M


# ---------------------------------------------------------------- candidate ranking
def test_candidate_ranks_known_values():
    scores = torch.tensor([
        [0.9, 0.1, 0.2],   # correct wins
        [0.5, 0.7, 0.6],   # two ahead
        [0.3, 0.3, 0.1],   # exact tie -> counts against
    ])
    assert M.candidate_ranks(scores).tolist() == [0, 2, 1]
    assert M.candidate_accuracy(scores).tolist() == [True, False, False]


def test_label_position_does_not_matter_under_ties():
    # argmax would return column 0 for a constant row; ranks must not depend on where the truth sits
    constant = torch.full((4, 5), 0.25)
    for label in range(5):
        assert not M.candidate_accuracy(constant, torch.full((4,), label)).any()


def test_near_ties_within_tolerance_count_against_the_true_caption():
    eps = 1e-7  # float32 noise between two encodings of an identical caption
    assert not M.candidate_accuracy(torch.tensor([[0.5 + eps, 0.5]])).item()
    assert not M.candidate_accuracy(torch.tensor([[0.5, 0.5 + eps]])).item()
    # a real margin wins; the tolerance is a parameter
    assert M.candidate_accuracy(torch.tensor([[0.5 + 1e-3, 0.5]])).item()
    assert not M.candidate_accuracy(torch.tensor([[0.5 + 1e-3, 0.5]]), tie_tolerance=1e-2).item()


def test_nan_scores_count_against():
    nan = float("nan")
    scores = torch.tensor([[nan, 0.1], [0.9, nan], [0.9, 0.1]])
    assert M.candidate_accuracy(scores).tolist() == [False, False, True]


def test_mask_and_labels_for_ragged_candidates():
    scores, mask = M.pad_candidate_scores([[0.1, 0.9], [0.8, 0.2, 0.1, 0.0]])
    assert scores.shape == (2, 4) and mask.sum().item() == 6
    # padding zeros would beat 0.0 candidates if they were not masked
    assert M.candidate_ranks(scores, [1, 0], mask).tolist() == [0, 0]
    with pytest.raises(ValueError, match="masked out"):
        M.candidate_ranks(scores, [3, 0], mask)
    with pytest.raises(ValueError, match="labels must lie"):
        M.candidate_ranks(scores, [0, 4], mask)
    with pytest.raises(ValueError, match="2-D"):
        M.candidate_ranks(torch.zeros(3))


def test_candidate_oracle_and_constant():
    n, m = 50, 7
    oracle = torch.rand(n, m) * 0.5
    labels = torch.randint(0, m, (n,))
    oracle[torch.arange(n), labels] = 1.0
    assert M.candidate_accuracy(oracle, labels).float().mean().item() == 1.0
    constant = torch.full((n, m), 0.3)
    assert M.candidate_accuracy(constant, labels).float().mean().item() <= 1 / m


# ---------------------------------------------------------------- paired (InpaintCOCO, Winoground)
def test_paired_scores_hand_built():
    # sims[k, image, caption]
    sims = torch.tensor([
        [[0.9, 0.1], [0.2, 0.8]],   # all correct
        [[0.9, 0.5], [0.95, 0.6]],  # text ok (0.9>0.5, 0.6>0.95? no) -> text False; image: 0.9>0.95? no
        [[0.6, 0.5], [0.4, 0.55]],  # text: 0.6>0.5 and 0.55>0.4 -> True; image: 0.6>0.4 and 0.55>0.5 -> True
        [[0.6, 0.2], [0.7, 0.3]],   # text: 0.6>0.2, 0.3>0.7 no; image: 0.6>0.7 no
        [[0.5, 0.4], [0.45, 0.48]], # text: .5>.4 & .48>.45 True; image: .5>.45 & .48>.4 True
        [[0.6, 0.1], [0.5, 0.2]],   # text: .6>.1 & .2>.5 no; image: .6>.5 & .2>.1 -> True (Eq. 1 holds)
    ])
    s = M.paired_scores(sims)
    assert s.text.tolist() == [True, False, True, False, True, False]
    assert s.image.tolist() == [True, False, True, False, True, True]
    assert s.group.tolist() == [True, False, True, False, True, False]
    assert M.inpaintcoco_correct(sims).tolist() == s.image.tolist()
    d = s.as_dict()
    assert d["count"] == 6 and d["image_score"] == pytest.approx(4 / 6)


def test_paired_oracle_constant_and_ties():
    eye = torch.eye(2).expand(10, 2, 2)
    assert M.paired_scores(eye).as_dict()["group_score"] == 1.0
    constant = M.paired_scores(torch.full((10, 2, 2), 0.7)).as_dict()
    # chance: text 1/4, image 1/4, group 1/6 for random scores; a constant model gets 0
    assert constant["text_score"] == constant["image_score"] == constant["group_score"] == 0.0
    with pytest.raises(ValueError, match=r"\(n, 2, 2\)"):
        M.paired_scores(torch.zeros(3, 4))


# ---------------------------------------------------------------- retrieval
def _naive_ranks(img, txt, owner, tol):
    """Reference implementation: full similarity matrix, explicit loops."""
    img = torch.nn.functional.normalize(img, dim=-1)
    txt = torch.nn.functional.normalize(txt, dim=-1)
    sims = txt @ img.T
    t2i = []
    for j in range(len(txt)):
        true = sims[j, owner[j]]
        t2i.append(sum(1 for i in range(len(img)) if i != owner[j] and not (true - tol > sims[j, i])))
    i2t = []
    for i in range(len(img)):
        own = [j for j in range(len(txt)) if owner[j] == i]
        if not own:
            i2t.append(len(txt))
            continue
        best = max(sims[j, i] for j in own)
        i2t.append(sum(1 for j in range(len(txt)) if owner[j] != i and not (best - tol > sims[j, i])))
    return t2i, i2t


def test_retrieval_ranks_match_reference_and_do_not_depend_on_chunking():
    g = torch.Generator().manual_seed(0)
    img = torch.randn(13, 8, generator=g)
    txt = torch.randn(40, 8, generator=g)
    owner = torch.randint(0, 12, (40,), generator=g)  # image 12 has no caption at all
    owner[:12] = torch.arange(12)
    ref_t2i, ref_i2t = _naive_ranks(img, txt, owner.tolist(), 1e-5)
    for chunk in (1, 3, 64):
        t2i, i2t = M.retrieval_ranks(img, txt, owner, chunk_size=chunk)
        assert t2i.tolist() == ref_t2i
        assert i2t.tolist() == ref_i2t
    assert i2t[12].item() == 40


def test_retrieval_several_captions_per_image_hand_built():
    # 3 images on the axes; image 0 has 2 captions, the second of which describes image 1 exactly
    img = torch.eye(3)
    txt = torch.tensor([[1.0, 0, 0], [0, 1.0, 0], [0, 1.0, 0], [0, 0, 1.0]])
    owner = [0, 0, 1, 2]
    t2i, i2t = M.retrieval_ranks(img, txt, owner)
    # caption 1 scores 0 with its own image: image 1 is ahead and image 2 ties -> rank 2
    assert t2i.tolist() == [0, 2, 0, 0]
    # image 0's best own caption (caption 0) wins, its other caption never counts against it;
    # image 1's own caption ties with caption 1 (of image 0) -> rank 1
    assert i2t.tolist() == [0, 1, 0]
    out = M.retrieval_metrics(img, txt, owner, ks=(1, 2))
    assert out["t2i_R@1"] == pytest.approx(0.75)
    assert out["i2t_R@1"] == pytest.approx(2 / 3) and out["i2t_R@2"] == 1.0
    assert out["t2i_median_rank"] == 1.0 and out["num_images"] == 3 and out["num_texts"] == 4


def test_retrieval_oracle_and_constant():
    n_img, per = 20, 5
    img = torch.eye(n_img)
    owner = torch.arange(n_img).repeat_interleave(per)
    oracle = M.retrieval_metrics(img, img[owner] + 0.01 * torch.rand(n_img * per, n_img), owner)
    assert oracle["t2i_R@1"] == oracle["i2t_R@1"] == 1.0
    constant = M.retrieval_metrics(torch.ones(n_img, 4), torch.ones(n_img * per, 4), owner, ks=(1, 5, 10))
    for k in (1, 5, 10):
        assert constant[f"t2i_R@{k}"] <= k / n_img
        assert constant[f"i2t_R@{k}"] <= k / n_img


def test_retrieval_input_errors():
    with pytest.raises(ValueError, match="text_to_image"):
        M.retrieval_ranks(torch.ones(2, 3), torch.ones(4, 3), [0, 1])
    with pytest.raises(ValueError, match=r"\[0, 2\)"):
        M.retrieval_ranks(torch.ones(2, 3), torch.ones(2, 3), [0, 5])
    with pytest.raises(ValueError, match="embeddings"):
        M.retrieval_ranks(torch.ones(2, 3), torch.ones(2, 4), [0, 1])


def test_recall_at_k_empty_is_nan():
    assert all(math.isnan(v) for v in M.recall_at_k(torch.zeros(0, dtype=torch.long)).values())


# ---------------------------------------------------------------- zero-shot
def test_zero_shot_oracle_constant_and_ties():
    classes = torch.eye(10)
    labels = torch.arange(10).repeat(3)
    oracle = M.zero_shot_accuracy(classes[labels], classes, labels)
    assert oracle["top1"] == 1.0 and oracle["top5"] == 1.0 and oracle["count"] == 30
    constant = M.zero_shot_accuracy(torch.ones(30, 10), classes, labels)
    assert constant["top1"] <= 0.1 and constant["top5"] <= 0.5
    # two identical class embeddings can never be told apart: both classes are always wrong
    dup = classes.clone()
    dup[1] = dup[0]
    out = M.zero_shot_accuracy(classes[labels], dup, labels)
    assert out["top1"] == pytest.approx(0.8)


# ---------------------------------------------------------------- aggregation
def test_grouped_accuracy_and_averages():
    correct = torch.tensor([1, 1, 1, 0, 0, 1], dtype=torch.bool)
    groups = ["a", "a", "a", "a", "b", "b"]
    per = M.grouped_accuracy(correct, groups)
    assert per == {"a": {"accuracy": 0.75, "count": 4}, "b": {"accuracy": 0.5, "count": 2}}
    out = M.add_averages(per)
    assert out["micro_average"]["accuracy"] == pytest.approx(4 / 6)
    assert out["macro_average"]["accuracy"] == pytest.approx(0.625)
    assert out["micro_average"]["count"] == 6 and out["macro_average"]["num_groups"] == 2
    with pytest.raises(ValueError, match="group labels"):
        M.grouped_accuracy(correct, groups[:-1])


def test_default_tie_tolerance_grows_with_lower_precision():
    assert M.default_tie_tolerance(torch.float32) < M.default_tie_tolerance(torch.float16) \
        < M.default_tie_tolerance(torch.bfloat16)
    assert M.default_tie_tolerance(None) == M.DEFAULT_TIE_TOLERANCE


# ---------------------------------------------------------------- evaluate wrappers
def test_evaluate_wrappers():
    pytest.importorskip("evaluate")
    from hf_hardneg.evaluation import candidate_ranking_metric, paired_matching_metric

    metric = candidate_ranking_metric()
    metric.add_batch(predictions=[[0.9, 0.1, 0.3], [0.2, 0.2]], references=[0, 1])
    metric.add_batch(predictions=[[0.1, 0.5]], references=[1])
    assert metric.compute() == {"accuracy": pytest.approx(2 / 3), "count": 3}

    pairs = paired_matching_metric()
    out = pairs.compute(predictions=[[0.9, 0.1, 0.2, 0.8], [0.5, 0.5, 0.5, 0.5]])
    assert out == {"text_score": 0.5, "image_score": 0.5, "group_score": 0.5, "count": 2}
