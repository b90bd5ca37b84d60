"""WiSE-FT: weight-space interpolation between a pretrained dual encoder and its fine-tuned copy.

Fine-tuning for fine-grained concepts costs zero-shot accuracy. Averaging the weights,
``theta(alpha) = (1 - alpha) * theta_base + alpha * theta_finetuned``, recovers much of
it while keeping much of the gain (Wortsman et al., "Robust fine-tuning of zero-shot
models", 2022): the sweep over ``alpha`` traces the trade-off, and needs no training.

:func:`interpolate_state_dicts` builds one interpolated model in memory;
:func:`save_interpolations` writes one loadable checkpoint (safetensors, tokenizer, image
processor, model card) per ``alpha``, optionally evaluates each and writes the sweep's
table and plot. ``hf-hardneg interpolate`` is its command line.
"""

from __future__ import annotations

import copy
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch
from torch import nn

__all__ = [
    "IncompatibleModelsError",
    "SweepPoint",
    "check_compatible",
    "headline_metrics",
    "interpolate_state_dicts",
    "plot_sweep",
    "save_interpolations",
    "sweep_table",
]


class IncompatibleModelsError(ValueError):
    """The two models cannot be interpolated (different family, keys, shapes or dtypes)."""


def check_compatible(base: nn.Module, finetuned: nn.Module) -> None:
    """Raise :class:`IncompatibleModelsError` (one line, naming the first difference) unless the models are two
    states of the same architecture: same family and class, same parameter names, shapes and dtypes."""
    from hf_hardneg.models import family_of, unwrap_model

    base, finetuned = unwrap_model(base), unwrap_model(finetuned)
    try:
        families = family_of(base).model_class, family_of(finetuned).model_class
    except TypeError as err:
        raise IncompatibleModelsError(str(err)) from None
    if families[0] != families[1] or type(base) is not type(finetuned):
        raise IncompatibleModelsError(f"cannot interpolate a {type(base).__name__} with a "
                                      f"{type(finetuned).__name__}: both must be the same model family")
    a, b = base.state_dict(), finetuned.state_dict()
    only_a, only_b = sorted(set(a) - set(b)), sorted(set(b) - set(a))
    if only_a or only_b:
        where = f"{len(only_a)} only in the base (e.g. {only_a[0]!r})" if only_a else \
            f"{len(only_b)} only in the fine-tuned model (e.g. {only_b[0]!r})"
        raise IncompatibleModelsError(f"the models have different weights: {where}; interpolate a model with its "
                                      "own fine-tuned copy (merge LoRA adapters first)")
    for name, tensor in a.items():
        other = b[name]
        if tensor.shape != other.shape:
            raise IncompatibleModelsError(f"weight {name!r} has shape {tuple(tensor.shape)} in the base but "
                                          f"{tuple(other.shape)} in the fine-tuned model: not the same architecture")
        if tensor.dtype != other.dtype:
            raise IncompatibleModelsError(f"weight {name!r} is {tensor.dtype} in the base but {other.dtype} in the "
                                          "fine-tuned model; load both in one dtype")


def interpolate_state_dicts(base_model: nn.Module, finetuned_model: nn.Module, alpha: float) -> nn.Module:
    """A new model (a copy of ``base_model``) with weights ``(1 - alpha) * base + alpha * finetuned``.

    ``alpha = 0`` gives the base weights and ``alpha = 1`` the fine-tuned ones, bit for bit; other
    values are computed in float64 and rounded once to the weights' dtype. Integer buffers
    (position ids) must agree and are copied. A model with LoRA adapters (``peft``) takes part
    with its adapters merged in. Neither input is modified. Raises
    :class:`IncompatibleModelsError` for models of different families, names or shapes.

    Example::

        halfway = interpolate_state_dicts(clip, hn1_clip, 0.5)
    """
    from hf_hardneg.models import unwrap_model

    alpha = float(alpha)
    if not math.isfinite(alpha):
        raise ValueError(f"alpha must be a finite number, got {alpha}")
    from hf_hardneg.parameter_efficient import merge_adapters

    base_model, finetuned_model = (unwrap_model(merge_adapters(m)) for m in (base_model, finetuned_model))
    check_compatible(base_model, finetuned_model)
    a, b = base_model.state_dict(), finetuned_model.state_dict()
    merged: dict[str, torch.Tensor] = {}
    for name, x in a.items():
        y = b[name]
        if not torch.is_floating_point(x):
            if not torch.equal(x, y.to(x.device)):
                raise IncompatibleModelsError(f"non-float buffer {name!r} differs between the models; they are not "
                                              "two states of one architecture")
            merged[name] = x.clone()
        elif alpha == 0.0:
            merged[name] = x.clone()
        elif alpha == 1.0:
            merged[name] = y.detach().to(x.device).clone()
        else:
            x64, y64 = x.detach().double(), y.detach().to(x.device).double()
            merged[name] = ((1.0 - alpha) * x64 + alpha * y64).to(x.dtype)
    model = copy.deepcopy(base_model)
    model.load_state_dict(merged, strict=True)
    return model


def headline_metrics(results: Mapping[str, Any]) -> dict[str, float]:
    """The numbers a sweep plots: concept accuracy (macro over concepts, or the one concept), zero-shot top-1,
    text-to-image and image-to-text Recall@5, from an ``evaluate_model`` results dict (missing tasks left out)."""
    tasks = results.get("tasks", {})
    out: dict[str, float] = {}
    concept = tasks.get("concept", {}).get("metrics", {})
    if "macro_average" in concept:
        out["concept_accuracy"] = float(concept["macro_average"]["accuracy"])
    else:
        groups = [v for v in concept.values() if isinstance(v, Mapping) and "accuracy" in v]
        if len(groups) == 1:
            out["concept_accuracy"] = float(groups[0]["accuracy"])
    zeroshot = tasks.get("zeroshot", {}).get("metrics", {})
    if "top1" in zeroshot:
        out["zeroshot_top1"] = float(zeroshot["top1"])
    retrieval = tasks.get("retrieval", {}).get("metrics", {})
    for key in ("t2i_R@5", "i2t_R@5"):
        if key in retrieval:
            out[key] = float(retrieval[key])
    return out


@dataclass
class SweepPoint:
    """One ``alpha`` of a sweep: where its checkpoint went and, when evaluated, its results."""

    alpha: float
    path: Path
    results: dict[str, Any] | None = None

    @property
    def metrics(self) -> dict[str, float]:
        return headline_metrics(self.results) if self.results else {}


def alpha_folder_name(alpha: float) -> str:
    """``alpha_0.25``: the folder of one interpolation (``repr`` of the float, so 0.1 stays 0.1)."""
    return f"alpha_{float(alpha)!r}"


def _card_inputs(alpha: float, model: nn.Module, base_name: str, finetuned_name: str, finetuned_path: str | None,
                 results: Mapping[str, Any] | None):
    from hf_hardneg.model_card import (
        ModelCardInputs,
        _from_model,
        _library_versions,
        _model_source,
        load_model_card_inputs,
    )

    base_name, finetuned_name = _model_source(base_name), _model_source(finetuned_name)  # no local paths in a card
    recorded = load_model_card_inputs(finetuned_path) if finetuned_path and Path(finetuned_path).is_dir() else None
    keep = {}
    if recorded is not None:  # how the fine-tuned end point was trained still describes this model's origin
        keep = {k: getattr(recorded, k) for k in ("datasets", "concepts", "num_hard_negatives", "hard_negative_mode",
                                                    "substitution_seed", "license")}
    described = (f"WiSE-FT weight-space interpolation, theta = (1 - alpha) * base + alpha * fine-tuned with "
                 f"alpha = {alpha:g}: base `{base_name}`, fine-tuned `{finetuned_name}` (made with "
                 "`hf-hardneg interpolate`; no training of its own).")
    fields = _from_model(model)
    fields["base_model"] = base_name
    inputs = ModelCardInputs(model_name=f"{Path(finetuned_name).name}-wiseft-{alpha:g}", training_data=described,
                             tags=["wise-ft"], versions=_library_versions(), **fields, **keep)
    inputs.eval_results = dict(results) if results else None
    return inputs


def save_interpolations(
    base_model: nn.Module,
    finetuned_model: nn.Module,
    alphas: Sequence[float],
    output_dir: str | os.PathLike,
    tokenizer: Any,
    image_processor: Any,
    *,
    base_name: str = "base",
    finetuned_name: str = "fine-tuned",
    finetuned_path: str | None = None,
    evaluate: Mapping[str, Any] | None = None,
    plot: bool = True,
) -> list[SweepPoint]:
    """Save ``output_dir/alpha_<a>/`` for every alpha (weights as safetensors, tokenizer, image processor,
    model card); with ``evaluate`` (keyword arguments of :func:`~hf_hardneg.evaluation.evaluate_model`, e.g.
    ``{"tasks": "concept,zeroshot", "sources": {...}}``) also evaluate each, put the results in its card and
    ``eval/``, and write ``sweep.json``, ``sweep.md`` and (with matplotlib) ``sweep.png``."""
    if not alphas:
        raise ValueError("give at least one alpha")
    check_compatible(base_model, finetuned_model)
    output = Path(output_dir)
    output.mkdir(parents=True, exist_ok=True)
    from hf_hardneg.model_card import write_model_card

    points: list[SweepPoint] = []
    for alpha in dict.fromkeys(float(a) for a in alphas):
        model = interpolate_state_dicts(base_model, finetuned_model, alpha)
        folder = output / alpha_folder_name(alpha)
        model.save_pretrained(folder, safe_serialization=True)
        tokenizer.save_pretrained(folder)
        image_processor.save_pretrained(folder)
        results = None
        if evaluate is not None:
            from hf_hardneg.evaluation.runner import evaluate_model

            options = dict(evaluate)
            options.setdefault("name", f"alpha={alpha:g}")
            results = evaluate_model(model, output_dir=folder / "eval", tokenizer=tokenizer,
                                     image_processor=image_processor, **options)
        write_model_card(folder, _card_inputs(alpha, model, base_name, finetuned_name, finetuned_path, results))
        points.append(SweepPoint(alpha, folder, results))
        del model
    if evaluate is not None:
        (output / "sweep.json").write_text(json.dumps(
            {"base": base_name, "finetuned": finetuned_name,
             "points": [{"alpha": p.alpha, "path": p.path.name, "metrics": p.metrics} for p in points]},
            indent=2) + "\n", encoding="utf-8")
        (output / "sweep.md").write_text(sweep_table(points, base_name, finetuned_name), encoding="utf-8")
        if plot:
            plot_sweep(points, output / "sweep.png", title=f"{Path(finetuned_name).name} vs {Path(base_name).name}")
    return points


_COLUMNS = (("concept_accuracy", "concept accuracy"), ("zeroshot_top1", "zero-shot top-1"),
            ("t2i_R@5", "t2i R@5"), ("i2t_R@5", "i2t R@5"))


def sweep_table(points: Sequence[SweepPoint], base_name: str = "base", finetuned_name: str = "fine-tuned") -> str:
    """Markdown: one row per alpha with its headline numbers, then every metric across alphas."""
    from hf_hardneg.evaluation.report import compare_table

    present = [(k, label) for k, label in _COLUMNS if any(k in p.metrics for p in points)]
    lines = [f"# WiSE-FT sweep: `{base_name}` (alpha 0) to `{finetuned_name}` (alpha 1)", "",
             "| alpha | " + " | ".join(label for _, label in present) + " |",
             "| ---: |" + " ---: |" * len(present)]
    for p in points:
        m = p.metrics
        lines.append(f"| {p.alpha:g} | " + " | ".join(f"{m[k]:.3f}" if k in m else "–" for k, _ in present) + " |")
    evaluated = {f"alpha={p.alpha:g}": p.results for p in points if p.results}
    if evaluated:
        lines += ["", "## Every metric", "", compare_table(evaluated).rstrip("\n")]
    return "\n".join(lines) + "\n"


def plot_sweep(points: Sequence[SweepPoint], path: str | os.PathLike, title: str | None = None) -> Path | None:
    """Concept accuracy against zero-shot top-1 and against t2i Recall@5, one labelled point per alpha.

    Needs matplotlib (``pip install 'hf_hardneg[plot]'``); returns ``None`` (and draws nothing) when
    no evaluated point has concept accuracy and one of the other two.
    """
    panels = [(k, label) for k, label in (("zeroshot_top1", "zero-shot top-1"), ("t2i_R@5", "text-to-image R@5"))
              if any("concept_accuracy" in p.metrics and k in p.metrics for p in points)]
    if not panels:
        return None
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as err:
        raise ImportError("the sweep plot needs matplotlib: pip install 'hf_hardneg[plot]'") from err
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 4), squeeze=False)
    for ax, (key, label) in zip(axes[0], panels):
        shown = [p for p in points if "concept_accuracy" in p.metrics and key in p.metrics]
        xs, ys = [p.metrics[key] for p in shown], [p.metrics["concept_accuracy"] for p in shown]
        ax.plot(xs, ys, "o-")
        for p, x, y in zip(shown, xs, ys):
            ax.annotate(f"α={p.alpha:g}", (x, y), textcoords="offset points", xytext=(4, 4), fontsize=8)
        ax.set_xlabel(label)
        ax.set_ylabel("concept accuracy")
        ax.grid(alpha=0.3)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
