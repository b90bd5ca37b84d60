"""Hard-negative images in the losses: values and gradients against a reference written entry by entry.

The reference builds every row of every matrix from single dot products, in float64
with autograd, so it gives both the loss and the gradient of every input; the library's
float64 result must agree to rounding (1e-12).
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from hf_hardneg.loss import HardNegativeContrastiveLoss, HardNegativeSigmoidLoss, draw_replacement_columns

torch.set_num_threads(1)


def _inputs(n=5, k=2, m=2, d=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    img = torch.randn(n, d, generator=g, dtype=torch.float64)
    txt = img + 0.8 * torch.randn(n, d, generator=g, dtype=torch.float64)
    hn = txt[:, None] + 0.5 * torch.randn(n, k, d, generator=g, dtype=torch.float64) if k else None
    nimg = img[:, None] + 0.5 * torch.randn(n, m, d, generator=g, dtype=torch.float64)
    return [t.clone().requires_grad_() if t is not None else None for t in (img, txt, hn, nimg)]


def _unit(x):
    return x / x.norm(dim=-1, keepdim=True)


def _cross_entropy(row: list[torch.Tensor], target: int) -> torch.Tensor:
    row = torch.stack(row)
    return torch.logsumexp(row, 0) - row[target]


def reference_contrastive(img, txt, hn, nimg, s, mode, cols, image_cols):
    img, txt, nimg = _unit(img), _unit(txt), _unit(nimg)
    hn = _unit(hn) if hn is not None else None
    n, k, m = img.shape[0], 0 if hn is None else hn.shape[1], nimg.shape[1]
    image_rows, caption_rows = [], []
    for g in range(n):  # image g against captions
        row = []
        for c in range(n):
            if mode == "replace" and k and c in cols[g]:
                row.append(s * (img[g] @ hn[g][cols[g].index(c)]))
            else:
                row.append(s * (img[g] @ txt[c]))
        if mode == "append":
            row += [s * (img[g] @ hn[h][j]) for h in range(n) for j in range(k)]
        image_rows.append(_cross_entropy(row, g))
    for c in range(n):  # caption c against images: its own hard-negative images enter here
        row = []
        for i in range(n):
            if mode == "replace" and i in image_cols[c]:
                row.append(s * (txt[c] @ nimg[c][image_cols[c].index(i)]))
            else:
                row.append(s * (txt[c] @ img[i]))
        if mode == "append":
            row += [s * (txt[c] @ nimg[h][j]) for h in range(n) for j in range(m)]
        caption_rows.append(_cross_entropy(row, c))
    return 0.5 * (torch.stack(image_rows).mean() + torch.stack(caption_rows).mean())


def reference_sigmoid(img, txt, hn, nimg, s, bias, mode, cols, dropped):
    img, txt, nimg = _unit(img), _unit(txt), _unit(nimg)
    hn = _unit(hn) if hn is not None else None
    n, k, m = img.shape[0], 0 if hn is None else hn.shape[1], nimg.shape[1]

    def term(score, positive):
        return -F.logsigmoid(score + bias if positive else -(score + bias))

    total = []
    for g in range(n):
        for c in range(n):
            if mode == "replace" and k and c in cols[g]:
                total.append(term(s * (img[g] @ hn[g][cols[g].index(c)]), False))
            elif g in dropped[c]:  # pair (image g, caption c) given up for one of caption c's own images
                continue
            else:
                total.append(term(s * (img[g] @ txt[c]), g == c))
        if mode == "append":
            total += [term(s * (img[g] @ hn[h][j]), False) for h in range(n) for j in range(k)]
    for c in range(n):
        if mode == "replace":
            total += [term(s * (nimg[c][j] @ txt[c]), False) for j in range(m)]
        else:
            total += [term(s * (nimg[h][j] @ txt[c]), False) for h in range(n) for j in range(m)]
    return torch.stack(total).sum() / n


def _compare(ours, reference, leaves):
    assert ours.item() == pytest.approx(reference.item(), rel=1e-12, abs=1e-12)
    got = torch.autograd.grad(ours, [t for t in leaves if t is not None])
    expected = torch.autograd.grad(reference, [t for t in leaves if t is not None])
    for a, b in zip(got, expected):
        torch.testing.assert_close(a, b, atol=1e-12, rtol=1e-10)


@pytest.mark.parametrize("k", [0, 2])
@pytest.mark.parametrize("m", [1, 2])
@pytest.mark.parametrize("mode", ["replace", "append"])
def test_contrastive_with_image_negatives_matches_the_reference(mode, m, k):
    img, txt, hn, nimg = _inputs(k=k, m=m, seed=m + 3 * k)
    cols = draw_replacement_columns(5, k, torch.Generator().manual_seed(1))
    image_cols = draw_replacement_columns(5, m, torch.Generator().manual_seed(2))
    out = HardNegativeContrastiveLoss(mode)(img, txt, hn, 3.0, replace_columns=cols, hard_negative_image_embeds=nimg,
                                            replace_image_columns=image_cols)
    reference = reference_contrastive(img, txt, hn, nimg, 3.0, mode, cols.tolist(), image_cols.tolist())
    _compare(out.loss, reference, [img, txt, hn, nimg])
    width = 5 if mode == "replace" else 5 + 5 * m
    assert out.logits_per_text.shape == (5, width)  # hard-negative images are columns, never rows
    assert 0.0 <= out.image_hard_negative_accuracy.item() <= 1.0


@pytest.mark.parametrize("m", [1, 2])
@pytest.mark.parametrize("mode", ["replace", "append"])
def test_sigmoid_with_image_negatives_matches_the_reference(mode, m):
    img, txt, hn, nimg = _inputs(k=2, m=m, seed=7 + m)
    cols = draw_replacement_columns(5, 2, torch.Generator().manual_seed(3))
    # pairs (image r, caption g) that caption g's own images replace: never its own image, never a pair the
    # text side already replaced
    text_pairs = {(r, c) for r in range(5) for c in cols[r].tolist()} if mode == "replace" else set()
    dropped = [[r for r in range(5) if r != g and (r, g) not in text_pairs][:m] for g in range(5)]
    # where fewer than m pairs are left, the own index marks "none" (the caption's images are then added only)
    fixed = torch.tensor([picks + [g] * (m - len(picks)) for g, picks in enumerate(dropped)])
    kwargs = dict(replace_image_columns=fixed) if mode == "replace" else {}
    out = HardNegativeSigmoidLoss(mode)(img, txt, hn, 4.0, torch.tensor(-2.0, dtype=torch.float64),
                                        replace_columns=cols, hard_negative_image_embeds=nimg, **kwargs)
    reference = reference_sigmoid(img, txt, hn, nimg, 4.0, -2.0, mode, cols.tolist(),
                                  dropped if mode == "replace" else [[]] * 5)
    _compare(out.loss, reference, [img, txt, hn, nimg])


def test_drawn_image_pairs_avoid_the_own_image_and_the_text_sides_pairs():
    img, txt, hn, nimg = _inputs(n=6, k=3, m=2)
    loss = HardNegativeSigmoidLoss("replace")
    generator = torch.Generator().manual_seed(9)
    out = loss(img, txt, hn, 4.0, -1.0, generator=generator, hard_negative_image_embeds=nimg)
    assert torch.isfinite(out.loss)
    # replay the same draws: the text side's columns first, then the image side's pairs
    from hf_hardneg.loss import _Scored

    generator = torch.Generator().manual_seed(9)
    cols = draw_replacement_columns(6, 3, generator)
    b = _Scored(_unit(img), _unit(txt), _unit(hn), _unit(img), _unit(txt), None, torch.tensor(4.0), None, 3, [6], 0,
                torch.arange(6), generator, None, _unit(nimg), None, 2, None, cols)
    picks, valid = loss._dropped_pairs(6, b)
    dropped = [[r for r, ok in zip(picks[g].tolist(), valid[g].tolist()) if ok] for g in range(6)]
    for g in range(6):
        available = [r for r in range(6) if r != g and g not in cols[r].tolist()]
        assert len(dropped[g]) == min(2, len(available))  # as many as there are, up to m
        assert set(dropped[g]) <= set(available)
    reference = reference_sigmoid(img, txt, hn, nimg, 4.0, -1.0, "replace", cols.tolist(), dropped)
    assert out.loss.item() == pytest.approx(reference.item(), rel=1e-12)


@pytest.mark.parametrize("cls", [HardNegativeContrastiveLoss, HardNegativeSigmoidLoss])
@pytest.mark.parametrize("mode", ["replace", "append"])
def test_no_image_negatives_is_todays_loss_exactly(cls, mode):
    img, txt, hn, _ = _inputs(k=2, m=1)
    cols = draw_replacement_columns(5, 2, torch.Generator().manual_seed(4))
    plain = cls(mode)(img, txt, hn, 3.0, -1.0, replace_columns=cols)
    empty = cls(mode)(img, txt, hn, 3.0, -1.0, replace_columns=cols,
                      hard_negative_image_embeds=torch.zeros(5, 0, 6, dtype=torch.float64))
    assert torch.equal(plain.loss, empty.loss) and empty.image_hard_negative_accuracy is None


def test_bad_image_negative_shapes_are_named():
    img, txt, hn, nimg = _inputs()
    with pytest.raises(ValueError, match=r"hard_negative_image_embeds must be \(n, m, d\) = \(5, m, 6\)"):
        HardNegativeContrastiveLoss()(img, txt, hn, 1.0, hard_negative_image_embeds=nimg[:3])
