"""A text-only control: how much of a benchmark a model that never looks at the image solves.

Many compositional benchmarks can be partly solved from the captions alone: a negative
made by swapping or adding words is often less fluent or less likely than the true
caption. :class:`NgramCaptionPrior` is a word n-gram language model (interpolated
Kneser-Ney) fitted on training captions; :func:`text_only_control` scores the items of a
loaded benchmark set with it, under the same rules as a model (ties count against the
true caption), so results can show, beside a model's score, what a caption-only prior
gets on the very same items.

What the prior can and cannot do, by set kind:

* multiple choice (SugarCrepe, ARO, VALSE, What'sUp, concept accuracy): it picks the
  most probable candidate;
* SugarCrepe++ triplets: the image-to-text rule with the prior's scores (both true
  captions more probable than the false one);
* paired sets (Winoground, InpaintCOCO, MMVP-VLM, ColorSwap): a score that ignores the
  image gives both images the same preference, so it solves no example; the control
  is computed all the same and comes out 0, which is what these benchmarks are built for.
"""

from __future__ import annotations

import math
import os
import re
from collections import Counter, defaultdict
from typing import Any, Iterable, Sequence

import torch

__all__ = ["NgramCaptionPrior", "text_only_control"]

_TOKEN = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")
BOS, EOS, UNK = "<s>", "</s>", "<unk>"
#: Log-probabilities (natural log, float64) closer than this count as a tie.
PRIOR_TIE_TOLERANCE = 1e-9


def tokenize(text: str) -> list[str]:
    """Lower-case words and numbers; punctuation is dropped ("A man's hat." -> ["a", "man's", "hat"])."""
    return _TOKEN.findall(text.lower())


class NgramCaptionPrior:
    """Word n-gram model with interpolated Kneser-Ney smoothing (one discount for all orders).

    ``P(w | h)`` is defined for every word of the vocabulary, the end mark and one
    unknown-word token, and sums to 1 over them for every context ``h`` (tested). The
    highest order uses raw counts, lower orders continuation counts (in how many
    distinct contexts a word follows), and the lowest interpolates with the uniform
    distribution, so an unseen word still has a probability.
    """

    def __init__(self, order: int = 3, discount: float = 0.75):
        if order < 1:
            raise ValueError(f"order must be >= 1, got {order}")
        if not 0.0 < discount < 1.0:
            raise ValueError(f"discount must lie in (0, 1), got {discount}")
        self.order, self.discount = order, discount
        # counts[n][context][word]: raw counts for n == order, continuation counts below
        self._counts: list[dict[tuple[str, ...], Counter]] = [defaultdict(Counter) for _ in range(order + 1)]
        self._totals: list[dict[tuple[str, ...], int]] = []
        self._types: list[dict[tuple[str, ...], int]] = []
        self.vocabulary: frozenset[str] = frozenset()
        self.num_captions = 0
        self.source = ""

    # -- fitting ------------------------------------------------------------------------------
    @classmethod
    def fit(cls, captions: Iterable[str], order: int = 3, discount: float = 0.75, source: str = "") -> "NgramCaptionPrior":
        """Fit on captions (strings; anything else is an error naming its position)."""
        model = cls(order, discount)
        highest: dict[tuple[str, ...], Counter] = defaultdict(Counter)
        vocabulary: set[str] = {EOS}
        n = 0
        for i, caption in enumerate(captions):
            if not isinstance(caption, str):
                raise TypeError(f"caption {i} is a {type(caption).__name__}, not a string")
            tokens = tokenize(caption)
            if not tokens:
                continue
            n += 1
            vocabulary.update(tokens)
            padded = [BOS] * (order - 1) + tokens + [EOS]
            for end in range(order - 1, len(padded)):
                highest[tuple(padded[end - order + 1:end])][padded[end]] += 1
        if n == 0:
            raise ValueError("no caption with a word to fit the prior on")
        model._counts[order] = highest
        for lower in range(order - 1, 0, -1):  # continuation counts: distinct one-word-longer contexts
            table: dict[tuple[str, ...], Counter] = defaultdict(Counter)
            for context, words in model._counts[lower + 1].items():
                for word in words:
                    table[context[1:]][word] += 1
            model._counts[lower] = table
        model._totals = [{} for _ in range(order + 1)]
        model._types = [{} for _ in range(order + 1)]
        for level in range(1, order + 1):
            for context, words in model._counts[level].items():
                model._totals[level][context] = sum(words.values())
                model._types[level][context] = len(words)
        model.vocabulary = frozenset(vocabulary)
        model.num_captions = n
        model.source = source
        return model

    @classmethod
    def from_captions_file(cls, path: str | os.PathLike, order: int = 3, discount: float = 0.75) -> "NgramCaptionPrior":
        """Fit on a captions file (COCO ``captions_*.json``, a JSON list, ``.jsonl`` or ``.txt``)."""
        from hf_hardneg.data.coco import read_captions
        from hf_hardneg.substitution import is_valid_caption

        records = read_captions(path)
        captions = [r.caption for r in records if is_valid_caption(r.caption)]
        return cls.fit(captions, order, discount, source=os.fspath(path))

    # -- probabilities ----------------------------------------------------------------------
    def _prob(self, word: str, context: tuple[str, ...]) -> float:
        uniform = 1.0 / (len(self.vocabulary) + 1)  # the vocabulary (with </s>) and <unk>
        p = uniform
        d = self.discount
        for level in range(1, self.order + 1):  # from unigrams up to the full context
            ctx = context[len(context) - (level - 1):] if level > 1 else ()
            total = self._totals[level].get(ctx, 0)
            if total == 0:
                continue  # unseen context: the lower order as it is
            count = self._counts[level][ctx].get(word, 0)
            p = max(count - d, 0.0) / total + d * self._types[level][ctx] / total * p
        return p

    def prob(self, word: str, context: Sequence[str] = ()) -> float:
        """``P(word | context)``; ``context`` holds the preceding words (``<s>`` pads the start)."""
        if not self._totals:
            raise RuntimeError("the prior is not fitted; use NgramCaptionPrior.fit(captions)")
        word = word if word in self.vocabulary else UNK
        ctx = [BOS] * (self.order - 1) + [w if w in self.vocabulary or w == BOS else UNK for w in context]
        return self._prob(word, tuple(ctx[len(ctx) - (self.order - 1):]) if self.order > 1 else ())

    def log_prob(self, caption: str) -> float:
        """Natural-log probability of the whole caption, end mark included (float64)."""
        tokens = [t if t in self.vocabulary else UNK for t in tokenize(caption)] + [EOS]
        history = [BOS] * (self.order - 1)
        total = 0.0
        for token in tokens:
            context = tuple(history[len(history) - (self.order - 1):]) if self.order > 1 else ()
            total += math.log(self._prob(token, context))
            history.append(token)
        return total

    def describe(self) -> str:
        where = f" of {self.source}" if self.source else ""
        return (f"{self.order}-gram Kneser-Ney caption prior (discount {self.discount}) fitted on "
                f"{self.num_captions:,} captions{where}, {len(self.vocabulary):,} word types")


def _scores(prior: NgramCaptionPrior, texts: Sequence[str]) -> torch.Tensor:
    """float64 log-probabilities, each distinct text scored once."""
    cache: dict[str, float] = {}
    for text in texts:
        if text not in cache:
            cache[text] = prior.log_prob(text)
    return torch.tensor([cache[t] for t in texts], dtype=torch.float64)


def text_only_control(data: Any, prior: NgramCaptionPrior, tie_tolerance: float = PRIOR_TIE_TOLERANCE) -> dict | None:
    """The prior's score on a loaded set, shaped like the model's metrics; ``None`` for kinds it cannot answer.

    Multiple choice: accuracy per group (+ averages). Triplets: ``itt_score``. Paired
    sets: text/image/group scores (0 by construction, computed all the same).
    Retrieval and classification sets return ``None``.
    """
    from .metrics import add_averages, candidate_ranks, grouped_accuracy, paired_scores
    from .tasks import MultipleChoiceSet, PairedSet, TripletSet, paired_result, triplet_correct, triplet_result

    if isinstance(data, MultipleChoiceSet):
        if len(data) == 0:
            return {"count": 0}
        flat = _scores(prior, [t for cands in data.candidates for t in cands])
        width = max(len(c) for c in data.candidates)
        scores = torch.zeros(len(data), width, dtype=torch.float64)
        mask = torch.zeros(len(data), width, dtype=torch.bool)
        offset = 0
        for row, cands in enumerate(data.candidates):
            scores[row, : len(cands)] = flat[offset: offset + len(cands)]
            mask[row, : len(cands)] = True
            offset += len(cands)
        correct = candidate_ranks(scores, data.labels, mask, tie_tolerance) == 0
        return add_averages(grouped_accuracy(correct, data.groups))
    if isinstance(data, TripletSet):
        if len(data) == 0:
            return {"count": 0}
        n = len(data)
        s = _scores(prior, list(data.positive1) + list(data.positive2) + list(data.negative))
        image_sims = torch.stack([s[:n], s[n:2 * n], s[2 * n:]], dim=1)
        itt, _ = triplet_correct(image_sims, torch.zeros(n, 3, dtype=torch.float64), tie_tolerance)
        return triplet_result(itt, None, data)
    if isinstance(data, PairedSet):
        if len(data) == 0:
            return {"count": 0}
        n = len(data)
        s = _scores(prior, list(data.caption0) + list(data.caption1))
        c0, c1 = s[:n], s[n:]
        sims = torch.stack([torch.stack([c0, c1], -1), torch.stack([c0, c1], -1)], dim=1)  # same for both images
        return paired_result(paired_scores(sims, tie_tolerance), data)
    return None
