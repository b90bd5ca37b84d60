"""Published figures to check a harness against: is ``openai/clip-vit-base-patch32`` scored as others scored it?

A user who evaluates the original CLIP weights should see at once whether this
harness reproduces the published numbers; :func:`reference_table` puts them beside
the user's own results (``results.md`` and the ``evaluate`` command's output).

Source of the figures: published evaluation-harness results for
``openai/clip-vit-base-patch32`` on ARO (Yuksekgonul et al., ICLR 2023), SugarCrepe
(Hsieh et al., NeurIPS 2023) and Winoground (Thrush et al., CVPR 2022), as quoted in
this project's issue 18. They were not measured here (the weights cannot be downloaded
in this project's test environment).

How each figure maps onto our results: ARO's VG-Relation and VG-Attribution are means
over relations / attribute pairs (our ``category_macro_average``); the Order sets are
plain accuracies; SugarCrepe's replace / swap / add are means over their subsets
(replace: att, obj, rel; swap: att, obj; add: att, obj); Winoground's scores are over
all 400 examples (our micro average).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

__all__ = ["REFERENCE_FIGURES", "ReferenceFigure", "reference_rows", "reference_table"]

SOURCE = ("published harness figures for openai/clip-vit-base-patch32 (ARO: Yuksekgonul et al. 2023; "
          "SugarCrepe: Hsieh et al. 2023; Winoground: Thrush et al. 2022), as quoted in issue 18; "
          "not measured by hf_hardneg")


@dataclass(frozen=True)
class ReferenceFigure:
    """One published number (in percent) and where our results hold the same quantity.

    ``groups``: the result rows whose ``metric`` values are averaged (unweighted) to give ours.
    """

    task: str
    name: str
    value: float
    groups: tuple[str, ...]
    metric: str


#: model id -> its published figures
REFERENCE_FIGURES: dict[str, tuple[ReferenceFigure, ...]] = {
    "openai/clip-vit-base-patch32": (
        ReferenceFigure("aro", "VG-Relation", 59.9, ("VG-Relation",), "category_macro_average"),
        ReferenceFigure("aro", "VG-Attribution", 63.2, ("VG-Attribution",), "category_macro_average"),
        ReferenceFigure("aro", "COCO-Order", 47.6, ("COCO-Order",), "accuracy"),
        ReferenceFigure("aro", "Flickr30k-Order", 59.6, ("Flickr30k-Order",), "accuracy"),
        ReferenceFigure("sugarcrepe", "replace", 80.1, ("replace_att", "replace_obj", "replace_rel"), "accuracy"),
        ReferenceFigure("sugarcrepe", "swap", 62.6, ("swap_att", "swap_obj"), "accuracy"),
        ReferenceFigure("sugarcrepe", "add", 73.0, ("add_att", "add_obj"), "accuracy"),
        ReferenceFigure("winoground", "text", 31.3, ("micro_average",), "text_score"),
        ReferenceFigure("winoground", "image", 11.0, ("micro_average",), "image_score"),
        ReferenceFigure("winoground", "group", 8.8, ("micro_average",), "group_score"),
    ),
}


def reference_model(model: str | None) -> str | None:
    """The key of :data:`REFERENCE_FIGURES` that ``model`` (a Hub id or a folder named like it) is, if any."""
    if not model:
        return None
    name = str(model).rstrip("/").lower()
    for key in REFERENCE_FIGURES:
        if name == key or name.endswith("/" + key.split("/")[-1]) or name == key.split("/")[-1]:
            return key
    return None


def _ours(metrics: Mapping[str, Any], figure: ReferenceFigure) -> float | None:
    values = []
    for group in figure.groups:
        entry = metrics.get(group)
        if not isinstance(entry, Mapping) or figure.metric not in entry:
            return None
        values.append(float(entry[figure.metric]))
    return 100.0 * sum(values) / len(values)


def reference_rows(results: Mapping[str, Any], model: str | None = None) -> list[tuple[ReferenceFigure, float | None]]:
    """``(figure, our value in percent or None)`` for the tasks the results hold; [] for other models."""
    key = reference_model(model or results.get("model"))
    if key is None:
        return []
    tasks = results.get("tasks", {})
    return [(f, _ours(tasks[f.task].get("metrics", {}), f)) for f in REFERENCE_FIGURES[key] if f.task in tasks]


def reference_table(results: Mapping[str, Any], model: str | None = None, digits: int = 1) -> str | None:
    """Markdown: published figure, ours, difference, per figure; ``None`` when none applies."""
    rows = reference_rows(results, model)
    if not rows:
        return None

    def fmt(value: float | None) -> str:
        return "–" if value is None or math.isnan(value) else f"{value:.{digits}f}"

    lines = ["| task | figure | published | this run | difference |", "| --- | --- | --- | --- | --- |"]
    for figure, ours in rows:
        diff = None if ours is None else ours - figure.value
        lines.append(f"| {figure.task} | {figure.name} | {fmt(figure.value)} | {fmt(ours)} | "
                     f"{'–' if diff is None else f'{diff:+.{digits}f}'} |")
    return "\n".join(lines) + f"\n\nPublished figures: {SOURCE}. A run on a `--max-examples` subset is not comparable.\n"


def missing_reference_tasks(results: Mapping[str, Any], model: str | None = None) -> Sequence[str]:
    """Tasks with published figures for this model that the results do not hold."""
    key = reference_model(model or results.get("model"))
    if key is None:
        return []
    tasks = results.get("tasks", {})
    return sorted({f.task for f in REFERENCE_FIGURES[key] if f.task not in tasks})
