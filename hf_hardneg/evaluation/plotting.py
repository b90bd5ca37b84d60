"""The trade-off plot of the paper's Figure 4: concept accuracy against text-to-image Recall@5.

Each run (classic, HN1, HN2, ...) is one line through its checkpoints, in
training order; checkpoints at the end of an epoch are labelled with the
epoch number and the evaluation before training (the starting model) is drawn
as a black dot. matplotlib is optional (``pip install hf_hardneg[plot]``) and
imported only here, through its object-oriented API so that the caller's
pyplot backend is left alone.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

__all__ = ["concept_value", "load_history", "plot_tradeoff"]


def _figure_class():
    try:
        from matplotlib.figure import Figure
    except ImportError as err:  # pragma: no cover - exercised only without matplotlib
        raise ImportError("plotting needs matplotlib: `pip install 'hf_hardneg[plot]'` (or `pip install matplotlib`)") from err
    return Figure


def concept_value(point: Mapping[str, Any], concept: str | None = None) -> float:
    """The concept accuracy of one history point: ``concept``, else the only concept, else the macro average."""
    acc = point["concept_accuracy"]
    if concept is not None:
        if concept not in acc:
            raise KeyError(f"concept {concept!r} not in this history; it has {sorted(acc)}")
        return acc[concept]
    per_concept = [k for k in acc if k not in ("micro_average", "macro_average")]
    if len(per_concept) == 1:
        return acc[per_concept[0]]
    return acc["macro_average"]


def load_history(path: str | os.PathLike) -> tuple[str, list[dict]]:
    """Read a history file written by :class:`~hf_hardneg.evaluation.ConceptEvalCallback`: ``(run_name, points)``."""
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    if not isinstance(data, dict) or "points" not in data:
        raise ValueError(f"{path} is not a concept-evaluation history (expected keys 'run_name' and 'points')")
    return str(data.get("run_name") or Path(path).stem), list(data["points"])


def plot_tradeoff(
    histories: Mapping[str, Sequence[Mapping[str, Any]]],
    path: str | os.PathLike,
    concept: str | None = None,
    retrieval_key: str = "t2i_R@5",
    title: str | None = None,
    dpi: int = 150,
    dataset_name: str = "COCO",
) -> Path:
    """Draw concept accuracy (y) against retrieval ``retrieval_key`` (x), one line per run; save as PNG.

    ``histories`` maps a run name to its points, each a dict with ``step``,
    ``epoch``, ``epoch_end``, ``concept_accuracy`` (per concept) and the
    retrieval metric -- what the callback records. ``dataset_name`` names the
    retrieval set on the x axis. Returns the written path.
    """
    if not histories:
        raise ValueError("no histories to plot")
    Figure = _figure_class()
    fig = Figure(figsize=(6.0, 4.5))
    ax = fig.add_subplot(1, 1, 1)
    start_drawn = False
    for run_name, points in histories.items():
        points = sorted(points, key=lambda p: p.get("step", 0))
        if not points:
            continue
        xs = [p[retrieval_key] for p in points]
        ys = [concept_value(p, concept) for p in points]
        (line,) = ax.plot(xs, ys, marker="o", markersize=4, linewidth=1.2, label=run_name)
        for p, x, y in zip(points, xs, ys):
            if p.get("step", 0) == 0:
                ax.plot([x], [y], marker="o", color="black", markersize=7, zorder=3,
                        label=None if start_drawn else "before training")
                start_drawn = True
            elif p.get("epoch_end"):
                ax.plot([x], [y], marker="o", markersize=8, markerfacecolor="none",
                        markeredgecolor=line.get_color(), zorder=3)
                ax.annotate(str(int(round(p.get("epoch", 0)))), (x, y), textcoords="offset points",
                            xytext=(5, 5), fontsize=8, color=line.get_color())
    ax.set_xlabel(f"general retrieval: {dataset_name} {retrieval_key.replace('_', ' ')}")
    ax.set_ylabel(f"concept accuracy ({concept})" if concept else "concept accuracy")
    ax.set_title(title or "Concept understanding vs. general retrieval")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=dpi, format="png")
    return out
