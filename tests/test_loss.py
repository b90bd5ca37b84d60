"""Hard-negative losses against plain-Python references and against the models' own losses."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from _float_tolerance import f32_loss_tolerance
from hf_hardneg.loss import (
    HardNegativeContrastiveLoss,
    HardNegativeSigmoidLoss,
    build_loss_for,
    draw_replacement_columns,
    replacement_generator,
    split_text_embeds,
)

torch.set_num_threads(1)


# ----------------------------------------------------------------------------- references
def _unit(rows):
    rows = np.asarray(rows, dtype=np.float64)
    return rows / np.linalg.norm(rows, axis=-1, keepdims=True)


def _dot(a, b) -> float:
    return float(sum(float(x) * float(y) for x, y in zip(a, b)))


def _logsumexp(values) -> float:
    top = max(values)
    return top + math.log(sum(math.exp(v - top) for v in values))


def _image_row(g, img, txt, hn, scale, mode, cols):
    """Scores of image g against its columns, entry by entry."""
    n, k = len(img), (0 if hn is None else hn.shape[1])
    row = []
    for c in range(n):
        if mode == "replace" and k and c in list(cols[g]):
            row.append(scale * _dot(img[g], hn[g][list(cols[g]).index(c)]))
        else:
            row.append(scale * _dot(img[g], txt[c]))
    if mode == "append":
        for h in range(n):
            for j in range(k):
                row.append(scale * _dot(img[g], hn[h][j]))
    return row


def reference_contrastive(img, txt, hn, scale, mode, cols=None) -> float:
    img, txt = _unit(img), _unit(txt)
    hn = None if hn is None else _unit(hn)
    n = len(img)
    image_to_text = 0.0
    for g in range(n):
        row = _image_row(g, img, txt, hn, scale, mode, cols)
        image_to_text += _logsumexp(row) - row[g]
    text_to_image = 0.0
    for c in range(n):
        row = [scale * _dot(txt[c], img[g]) for g in range(n)]
        text_to_image += _logsumexp(row) - row[c]
    return 0.5 * (image_to_text / n + text_to_image / n)


def reference_sigmoid(img, txt, hn, scale, bias, mode, cols=None) -> float:
    img, txt = _unit(img), _unit(txt)
    hn = None if hn is None else _unit(hn)
    n = len(img)
    total = 0.0
    for g in range(n):
        for c, score in enumerate(_image_row(g, img, txt, hn, scale, mode, cols)):
            z = (score + bias) * (1.0 if c == g else -1.0)
            total += math.log1p(math.exp(-z))  # -log(sigmoid(z))
    return total / n


def _batch(n=6, k=2, d=5, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    img = torch.randn(n, d, generator=g, dtype=dtype)
    txt = img + 0.8 * torch.randn(n, d, generator=g, dtype=dtype)  # positives correlate, as after pretraining
    hn = txt[:, None] + 0.5 * torch.randn(n, k, d, generator=g, dtype=dtype) if k else None
    return img, txt, hn


# ----------------------------------------------------------------------------- values
def _tolerance(dtype, scale, dim=5) -> float:
    """float64: the loss computes in float64 and matches the float64 reference to rounding; float32: the
    rounding bound of float32 dot products (see tests/_float_tolerance.py), which holds on every CPU."""
    return 1e-12 if dtype == torch.float64 else f32_loss_tolerance(scale, dim)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("mode", ["replace", "append"])
@pytest.mark.parametrize("k", [1, 2, 3])
def test_contrastive_matches_reference(mode, k, dtype):
    img, txt, hn = _batch(n=6, k=k, seed=k, dtype=dtype)
    cols = draw_replacement_columns(6, k, torch.Generator().manual_seed(7))
    out = HardNegativeContrastiveLoss(mode)(img, txt, hn, 3.5, replace_columns=cols)
    expected = reference_contrastive(img.numpy(), txt.numpy(), hn.numpy(), 3.5, mode, cols.tolist())
    assert out.loss.item() == pytest.approx(expected, abs=_tolerance(dtype, 3.5))
    assert out.logits_per_image.shape == (6, 6 if mode == "replace" else 6 + 6 * k)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("mode", ["replace", "append"])
@pytest.mark.parametrize("k", [1, 2, 3])
def test_sigmoid_matches_reference(mode, k, dtype):
    img, txt, hn = _batch(n=5, k=k, seed=10 + k, dtype=dtype)
    cols = draw_replacement_columns(5, k, torch.Generator().manual_seed(3))
    out = HardNegativeSigmoidLoss(mode)(img, txt, hn, 4.0, torch.tensor([-2.0]), replace_columns=cols)
    expected = reference_sigmoid(img.numpy(), txt.numpy(), hn.numpy(), 4.0, -2.0, mode, cols.tolist())
    # a sum of 5 * width sigmoid terms divided by 5: each row's terms add their errors
    width = out.logits_per_image.shape[1]
    assert out.loss.item() == pytest.approx(expected, abs=width * _tolerance(dtype, 4.0))


def test_replace_closed_form_two_images():
    # two images, k=1: the only off-diagonal column of each row must become that image's hard negative
    img = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    txt = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    hn = torch.tensor([[[0.6, 0.8]], [[0.0, -1.0]]])
    s = 2.0
    out = HardNegativeContrastiveLoss("replace")(img, txt, hn, s, generator=torch.Generator().manual_seed(0))
    row0 = math.log(math.exp(s) + math.exp(s * 0.6)) - s
    row1 = math.log(math.exp(-s) + math.exp(s)) - s
    text_rows = math.log(math.exp(s) + 1.0) - s  # texts see images only: cos 1 and 0
    assert out.loss.item() == pytest.approx(0.5 * ((row0 + row1) / 2 + text_rows), abs=f32_loss_tolerance(s, 2))
    torch.testing.assert_close(out.logits_per_image, torch.tensor([[s, s * 0.6], [-s, s]]))
    assert out.hard_negative_accuracy.item() == 1.0
    metrics = out.metrics()
    assert set(metrics) == {"loss", "hard_negative_accuracy", "positive_similarity", "hard_negative_similarity"}
    assert metrics["positive_similarity"].item() == pytest.approx(1.0)
    assert metrics["hard_negative_similarity"].item() == pytest.approx(-0.2)
    assert not metrics["loss"].requires_grad


def test_replace_puts_each_images_own_negatives_in_the_drawn_columns():
    img, txt, hn = _batch(n=8, k=3, seed=4)
    cols = draw_replacement_columns(8, 3, torch.Generator().manual_seed(1))
    out = HardNegativeContrastiveLoss("replace")(img, txt, hn, 1.0, replace_columns=cols)
    unit = torch.nn.functional.normalize
    own = torch.einsum("nd,nkd->nk", unit(img, dim=-1), unit(hn, dim=-1))
    plain = unit(img, dim=-1) @ unit(txt, dim=-1).T
    for g in range(8):
        for c in range(8):
            expected = own[g, cols[g].tolist().index(c)] if c in cols[g].tolist() else plain[g, c]
            torch.testing.assert_close(out.logits_per_image[g, c], expected)
    # text->image rows are CLIP's, untouched by hard negatives
    torch.testing.assert_close(out.logits_per_text, plain.T)


def test_append_columns_are_image_major():
    # the softmax does not care about column order, so check the documented layout directly
    n, k = 4, 3
    img, txt, hn = _batch(n=n, k=k, seed=2)
    out = HardNegativeContrastiveLoss("append")(img, txt, hn, 2.0)
    unit = torch.nn.functional.normalize
    for g in range(n):
        for h in range(n):
            for j in range(k):
                expected = 2.0 * unit(img[g], dim=0) @ unit(hn[h, j], dim=0)
                torch.testing.assert_close(out.logits_per_image[g, n + h * k + j], expected)


@pytest.mark.parametrize("mode", ["replace", "append"])
def test_k0_is_clip_loss_and_mode_independent(mode):
    img, txt, _ = _batch(n=6, k=0, dtype=torch.float64)
    out = HardNegativeContrastiveLoss(mode)(img, txt, None, 5.0)
    empty = HardNegativeContrastiveLoss(mode)(img, txt, torch.empty(6, 0, 5, dtype=torch.float64), 5.0)
    assert out.loss.item() == pytest.approx(reference_contrastive(img.numpy(), txt.numpy(), None, 5.0, mode), abs=1e-12)
    assert torch.equal(empty.loss, out.loss)  # k=0 either way: the very same arithmetic
    assert out.hard_negative_accuracy is None and out.hard_negative_similarity is None


def test_hard_negatives_are_never_anchors():
    # the text->image half must not depend on the hard negatives at all
    img, txt, hn = _batch(n=6, k=2)
    img, hn = img.requires_grad_(True), hn.clone().requires_grad_(True)
    for mode in ("replace", "append"):
        out = HardNegativeContrastiveLoss(mode)(img, txt, hn, 2.0, generator=torch.Generator().manual_seed(0))
        labels = torch.arange(6)
        text_half = torch.nn.functional.cross_entropy(out.logits_per_text, labels)
        (grad,) = torch.autograd.grad(text_half, hn, allow_unused=True)
        assert grad is None or torch.count_nonzero(grad) == 0


def test_hard_negative_accuracy_counts_images_beating_all_their_negatives():
    img = torch.eye(3)
    txt = torch.eye(3)
    # image 0: both negatives worse; image 1: one negative better; image 2: a tie is not a win
    hn = torch.tensor([
        [[0.5, 1.0, 0.0], [0.1, 0.0, 1.0]],
        [[0.0, 0.0, 1.0], [0.0, 1.0, 0.0]],
        [[0.0, 0.0, 1.0], [1.0, 0.0, 0.0]],
    ])
    out = HardNegativeContrastiveLoss("append")(img, txt, hn, 1.0)
    assert out.hard_negative_accuracy.item() == pytest.approx(1 / 3)


def test_gradients_match_finite_differences_float64():
    img, txt, hn = _batch(n=4, k=2, d=3, dtype=torch.float64)
    cols = draw_replacement_columns(4, 2, torch.Generator().manual_seed(2))
    scale = torch.tensor(2.5, dtype=torch.float64)
    bias = torch.tensor(-1.0, dtype=torch.float64)
    leaves = [t.clone().requires_grad_(True) for t in (img, txt, hn, scale, bias)]
    for mode in ("replace", "append"):
        def contrastive(i, t, h, s, b):
            return HardNegativeContrastiveLoss(mode)(i, t, h, s, replace_columns=cols).loss

        def sigmoid(i, t, h, s, b):
            return HardNegativeSigmoidLoss(mode)(i, t, h, s, b, replace_columns=cols).loss

        assert torch.autograd.gradcheck(contrastive, leaves)
        assert torch.autograd.gradcheck(sigmoid, leaves)


# ----------------------------------------------------------------------------- replaced columns
def test_draw_replacement_columns_are_distinct_off_diagonal_and_reproducible():
    for n, k in [(2, 1), (4, 3), (9, 3), (64, 3)]:
        cols = draw_replacement_columns(n, k, torch.Generator().manual_seed(n))
        assert cols.shape == (n, k) and cols.dtype == torch.long
        for g, row in enumerate(cols.tolist()):
            assert len(set(row)) == k and g not in row and all(0 <= c < n for c in row)
        torch.testing.assert_close(cols, draw_replacement_columns(n, k, torch.Generator().manual_seed(n)))
    assert draw_replacement_columns(5, 0).shape == (5, 0)


def test_draw_replacement_columns_is_uniform():
    # n=4, k=2: each row has C(3, 2) = 3 possible sets, each should come up a third of the time
    counts: dict[tuple[int, int], int] = {}
    g = torch.Generator().manual_seed(0)
    for _ in range(1500):
        key = tuple(sorted(draw_replacement_columns(4, 2, g)[0].tolist()))
        counts[key] = counts.get(key, 0) + 1
    total = sum(counts.values())
    assert set(counts) == {(1, 2), (1, 3), (2, 3)}
    for value in counts.values():
        assert abs(value / total - 1 / 3) < 0.05


def test_generator_and_precomputed_columns_agree_and_steps_differ():
    img, txt, hn = _batch(n=6, k=2)
    loss = HardNegativeContrastiveLoss("replace")
    a = loss(img, txt, hn, 3.0, generator=replacement_generator(seed=5, step=11)).loss
    b = loss(img, txt, hn, 3.0, replace_columns=draw_replacement_columns(6, 2, replacement_generator(5, 11))).loss
    c = loss(img, txt, hn, 3.0, generator=replacement_generator(seed=5, step=12)).loss
    assert a.item() == b.item()
    assert a.item() != c.item()


# ----------------------------------------------------------------------------- precision, compile, errors
def test_autocast_bf16_computes_logits_in_float32():
    img, txt, hn = (t.bfloat16() for t in _batch(n=6, k=2))
    cols = draw_replacement_columns(6, 2, torch.Generator().manual_seed(0))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = HardNegativeContrastiveLoss("replace")(img, txt, hn, 30.0, replace_columns=cols)
    assert out.logits_per_image.dtype == torch.float32 and out.loss.dtype == torch.float32
    exact = HardNegativeContrastiveLoss("replace")(img.float(), txt.float(), hn.float(), 30.0, replace_columns=cols)
    assert out.loss.item() == pytest.approx(exact.loss.item(), abs=1e-6)


def test_large_scale_and_zero_vector_stay_finite():
    img, txt, hn = _batch(n=4, k=1)
    img[0] = 0.0
    for loss in (HardNegativeContrastiveLoss("replace"), HardNegativeSigmoidLoss("append")):
        out = loss(img.requires_grad_(), txt, hn, 1e4, -50.0, generator=torch.Generator().manual_seed(0))
        out.loss.backward()
        assert torch.isfinite(out.loss) and torch.isfinite(img.grad).all()
        img.grad = None


@pytest.mark.parametrize("mode", ["replace", "append"])
@pytest.mark.parametrize("cls", [HardNegativeContrastiveLoss, HardNegativeSigmoidLoss])
def test_compiles_without_graph_breaks(cls, mode):
    import torch._dynamo

    torch._dynamo.reset()
    img, txt, hn = _batch(n=6, k=2)
    cols = draw_replacement_columns(6, 2, torch.Generator().manual_seed(0))
    scale = torch.tensor(3.0, requires_grad=True)
    loss = cls(mode)
    compiled = torch.compile(loss, backend="eager", fullgraph=True)  # fullgraph: any graph break raises
    out = compiled(img, txt, hn, scale, torch.tensor(-1.0), replace_columns=cols)
    eager = loss(img, txt, hn, scale, torch.tensor(-1.0), replace_columns=cols)
    assert out.loss.item() == pytest.approx(eager.loss.item(), abs=1e-6)


def test_bad_inputs_raise_clear_errors():
    img, txt, hn = _batch(n=4, k=2)
    loss = HardNegativeContrastiveLoss("replace")
    with pytest.raises(ValueError, match="split_text_embeds"):
        loss(img, torch.cat([txt, hn.reshape(-1, 5)]), None, 1.0)
    with pytest.raises(ValueError, match=r"\(n, k, d\)"):
        loss(img, txt, hn.reshape(-1, 5), 1.0)
    with pytest.raises(ValueError, match="logit_scale is required"):
        loss(img, txt, hn)
    with pytest.raises(ValueError, match="at least k\\+1=4 images"):
        draw_replacement_columns(3, 3)
    with pytest.raises(ValueError, match="mode must be one of"):
        HardNegativeContrastiveLoss("swap")
    with pytest.raises(ValueError, match=r"\(global batch, k\) = \(4, 2\)"):
        loss(img, txt, hn, 1.0, replace_columns=torch.zeros(4, 3, dtype=torch.long))


def test_split_text_embeds_uses_collator_order():
    n, k, d = 3, 2, 4
    positives = torch.arange(n * d).float().reshape(n, d)
    negatives = 100 + torch.arange(n * k * d).float().reshape(n * k, d)  # img0 neg1, img0 neg2, img1 neg1, ...
    pos, hn = split_text_embeds(torch.cat([positives, negatives]), n)
    torch.testing.assert_close(pos, positives)
    torch.testing.assert_close(hn[1, 0], negatives[2])  # image 1's first negative
    torch.testing.assert_close(hn[2, 1], negatives[5])
    assert split_text_embeds(positives, n)[1] is None
    with pytest.raises(ValueError, match="n\\*\\(1\\+k\\)"):
        split_text_embeds(torch.zeros(7, d), 3)


# ----------------------------------------------------------------------------- the models' own losses
@pytest.fixture(scope="module")
def tiny_inputs(tiny_captions):
    torch.manual_seed(0)
    return tiny_captions, torch.randn(len(tiny_captions), 3, 32, 32)


def _model_loss_and_ours(kind, captions, pixels, mode="replace"):
    from hf_hardneg.models import encode_images, encode_texts, logit_scale_and_bias
    from hf_hardneg.testing import make_tiny_model

    model, tokenizer, _ = make_tiny_model(captions, kind=kind)
    # float64: the model's loss and ours are two computations of the same value; in float32 they would agree
    # only to the rounding of a whole forward pass, which differs between CPUs
    model.double().eval()
    pixels = pixels.double()
    if kind == "siglip":
        with torch.no_grad():  # SiglipModel's init draws a random scale and bias; make them typical
            model.logit_scale.fill_(math.log(10.0))
            model.logit_bias.fill_(-3.0)
    enc = tokenizer(captions, padding=True, return_tensors="pt")
    with torch.no_grad():
        theirs = model(input_ids=enc.input_ids, attention_mask=enc.attention_mask, pixel_values=pixels,
                       return_loss=True).loss
        scale, bias = logit_scale_and_bias(model)
        ours = build_loss_for(model, mode)(encode_images(model, pixels),
                                           encode_texts(model, enc.input_ids, enc.attention_mask),
                                           None, scale, bias)
    return theirs, ours


@pytest.mark.parametrize("mode", ["replace", "append"])
def test_k0_equals_clipmodel_loss(tiny_inputs, mode):
    theirs, ours = _model_loss_and_ours("clip", *tiny_inputs, mode)
    assert ours.loss.item() == pytest.approx(theirs.item(), rel=1e-10, abs=1e-12)


def test_k0_equals_dual_encoder_loss(tiny_inputs):
    theirs, ours = _model_loss_and_ours("dual_encoder", *tiny_inputs)
    assert ours.loss.item() == pytest.approx(theirs.item(), rel=1e-10, abs=1e-12)


@pytest.mark.parametrize("mode", ["replace", "append"])
def test_k0_equals_siglipmodel_loss(tiny_inputs, mode):
    theirs, ours = _model_loss_and_ours("siglip", *tiny_inputs, mode)
    assert ours.logits_per_text is None
    assert ours.loss.item() == pytest.approx(theirs.item(), rel=1e-10, abs=1e-12)
