"""Results files and Markdown tables.

A results dict (what :func:`~hf_hardneg.evaluation.evaluate_model` returns and
writes as ``results.json``) looks like::

    {
      "model": "openai/clip-vit-base-patch32",
      "created": "2025-01-01T12:00:00+00:00",
      "hf_hardneg_version": "0.1.0",
      "settings": {"device": "cuda", "autocast_dtype": null, "tie_tolerance": 1e-05, ...},
      "tasks": {
        "concept":   {"dataset": "COCO val2017", "kind": "multiple_choice",
                      "metrics": {"color": {"accuracy": 0.81, "count": 3907, "chance": 0.11}, ...,
                                  "micro_average": {...}, "macro_average": {...}}},
        "retrieval": {"dataset": "COCO val2017", "kind": "retrieval",
                      "metrics": {"t2i_R@5": 0.68, "i2t_R@1": 0.52, ...}},
        ...
      },
      "errors": {"winoground": "RuntimeError: ..."}      # only for tasks skipped on error
    }

:func:`summary_rows` turns it into flat ``(task, row, metric, value)`` rows --
the headline numbers of each task, e.g. one accuracy per concept -- which the
Markdown tables and the model card's ``model-index`` are built from.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

__all__ = ["SummaryRow", "compare_table", "history_table", "load_results", "results_table", "save_results",
           "summary_rows", "text_only_rows"]

_AVERAGES = ("micro_average", "macro_average")
_PAIR_METRICS = ("image_score", "text_score", "group_score")
_TRIPLET_METRICS = ("itt_score", "tot_score")
_GROUP_METRICS = {"multiple_choice": ("accuracy",), "paired": _PAIR_METRICS, "triplet": _TRIPLET_METRICS}
_NOT_GROUPS = ("skipped",)


@dataclass(frozen=True)
class SummaryRow:
    """One headline number: ``task`` (e.g. "concept"), ``row`` (e.g. "color"), ``metric`` (e.g. "accuracy")."""

    task: str
    row: str
    metric: str
    value: float
    count: int | None = None

    @property
    def key(self) -> str:
        return f"{self.task}/{self.row}/{self.metric}"


def summary_rows(results: Mapping[str, Any]) -> list[SummaryRow]:
    """Headline metrics of every task, groups first, then micro and macro averages."""
    rows: list[SummaryRow] = []
    for task, entry in results.get("tasks", {}).items():
        kind, metrics = entry.get("kind"), entry.get("metrics", {})
        if kind == "retrieval":
            for direction in ("t2i", "i2t"):
                for name in sorted((k for k in metrics if k.startswith(f"{direction}_R@")),
                                   key=lambda k: int(k.split("@")[1])):
                    rows.append(SummaryRow(task, direction, name.split("_", 1)[1], metrics[name],
                                           metrics.get("num_texts" if direction == "t2i" else "num_images")))
        elif kind == "classification":
            for name in ("top1", "top5", "mean_per_class_top1"):
                if name in metrics:
                    rows.append(SummaryRow(task, "all", name, metrics[name], metrics.get("count")))
        elif kind in _GROUP_METRICS:
            rows += _group_rows(task, kind, metrics)
    return rows


def _group_rows(task: str, kind: str, metrics: Mapping[str, Any]) -> list[SummaryRow]:
    """Per-group rows (and the averages when there are several groups) of a grouped task's metrics."""
    rows: list[SummaryRow] = []
    groups = [g for g in metrics if isinstance(metrics[g], Mapping) and g not in _AVERAGES and g not in _NOT_GROUPS]
    multi = len(groups) > 1
    for g in groups + ([a for a in _AVERAGES if a in metrics] if multi else []):
        for name in _GROUP_METRICS[kind]:
            if name in metrics[g]:
                rows.append(SummaryRow(task, g, name, metrics[g][name], metrics[g].get("count")))
        if "category_macro_average" in metrics[g]:
            rows.append(SummaryRow(task, g, "category_macro_average", metrics[g]["category_macro_average"]))
    return rows


def text_only_rows(results: Mapping[str, Any]) -> list[tuple[SummaryRow, float | None]]:
    """``(text-only control row, the model's value for the same row)`` for every task that has a control."""
    out = []
    for task, entry in results.get("tasks", {}).items():
        control = entry.get("text_only_control")
        if not control or entry.get("kind") not in _GROUP_METRICS:
            continue
        model = {r.key: r.value for r in _group_rows(task, entry["kind"], entry.get("metrics", {}))}
        for row in _group_rows(task, entry["kind"], control.get("metrics", {})):
            out.append((row, model.get(row.key)))
    return out


def _fmt(value: Any, digits: int) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def results_table(results: Mapping[str, Any], digits: int = 3) -> str:
    """Markdown report of one model: one table of headline metrics, then any task errors."""
    rows = summary_rows(results)
    header = ["task", "dataset", "subset", "metric", "value", "n"]
    datasets = {t: e.get("dataset", "") for t, e in results.get("tasks", {}).items()}
    body = [[r.task, datasets.get(r.task, ""), r.row, r.metric, _fmt(r.value, digits), _fmt(r.count, digits)]
            for r in rows]
    parts = [f"# Evaluation of `{results.get('model', '?')}`", ""]
    settings = results.get("settings", {})
    if settings:
        parts.append(", ".join(f"{k}={v}" for k, v in settings.items()))
        parts.append("")
    parts.append(_table(header, body))
    notes = [(task, key, value) for task, entry in results.get("tasks", {}).items()
             for key, value in (entry.get("notes") or {}).items()]
    if notes:
        parts += ["", "How the data was read:", ""]
        parts += [f"- `{task}`: {key}: {value}" for task, key, value in notes]
    skipped = [(task, why, n) for task, entry in results.get("tasks", {}).items()
               for why, n in (entry.get("metrics", {}).get("skipped") or {}).items() if n]
    if skipped:
        parts += ["", "Examples left out:", ""]
        parts += [f"- `{task}`: {n} -- {why}" for task, why, n in skipped]
    for task, entry in results.get("tasks", {}).items():
        per_class = entry.get("metrics", {}).get("per_class") if entry.get("kind") == "classification" else None
        if per_class:
            ks = [k for k in ("top1", "top5") if any(k in v for v in per_class.values())]
            parts += ["", f"## `{task}`: accuracy per class", ""]
            parts.append(_table(["class", *ks, "n"], [[name, *(_fmt(v.get(k), digits) for k in ks),
                                                      _fmt(v.get("count"), digits)] for name, v in per_class.items()]))
    control = text_only_rows(results)
    if control:
        priors = sorted({e["text_only_control"]["prior"] for e in results["tasks"].values() if e.get("text_only_control")})
        parts += ["", "## Text-only control", "",
                  "The same items scored by a caption-only prior that never sees the image "
                  f"({'; '.join(priors)}): what a benchmark gives away through its captions alone.", ""]
        parts.append(_table(["task", "subset", "metric", "model", "text only", "n"],
                            [[r.task, r.row, r.metric, _fmt(model, digits), _fmt(r.value, digits), _fmt(r.count, digits)]
                             for r, model in control]))
    from .reference import missing_reference_tasks, reference_table

    reference = reference_table(results)
    if reference:
        parts += ["", "## Published figures for this model", "", reference.rstrip("\n")]
        missing = missing_reference_tasks(results)
        if missing:
            parts += ["", f"Published figures exist for tasks not run here: {', '.join(missing)}."]
    errors = results.get("errors") or {}
    if errors:
        parts += ["", "Tasks skipped because of an error:", ""]
        parts += [f"- `{task}`: {msg}" for task, msg in errors.items()]
    parts += ["", "Ties (and near-ties within the tie tolerance) count against the correct answer; "
              "micro = pooled over examples, macro = mean over subsets."]
    if "inpaintcoco" in results.get("tasks", {}):
        # the paper reports InpaintCOCO as "accuracy following Equation (1)": say which row that is
        parts.append("InpaintCOCO: `image_score` is the paper's Equation (1) accuracy (each caption scores its "
                     "own image above the other one).")
    return "\n".join(parts) + "\n"


def compare_table(results_by_model: Mapping[str, Mapping[str, Any]], digits: int = 3,
                  metrics: Sequence[str] | None = None) -> str:
    """One Markdown table across models (columns), like the paper's Tables 1 and 7.

    Rows are the union of every model's headline metrics, in first-seen order.
    ``metrics`` keeps only rows whose key ``task/row/metric`` starts with one of
    the given prefixes (e.g. ``["concept/", "retrieval/t2i/R@5"]``).
    """
    names = list(results_by_model)
    if not names:
        raise ValueError("no results to compare")
    values: dict[str, dict[str, float]] = {}
    order: dict[str, SummaryRow] = {}
    for name, res in results_by_model.items():
        for r in summary_rows(res):
            if metrics and not any(r.key.startswith(m) for m in metrics):
                continue
            order.setdefault(r.key, r)
            values.setdefault(r.key, {})[name] = r.value
    header = ["task", "subset", "metric", *names]
    body = [[r.task, r.row, r.metric, *(_fmt(values[k].get(n), digits) for n in names)] for k, r in order.items()]
    return _table(header, body) + "\n"


def history_table(histories: Mapping[str, Sequence[Mapping[str, Any]]], concept: str | None = None,
                  retrieval_key: str = "t2i_R@5", digits: int = 3) -> str:
    """Epoch-end checkpoints of several training runs side by side, like the paper's Table 7.

    ``histories`` are :class:`~hf_hardneg.evaluation.ConceptEvalCallback` points per
    run name. One row per epoch end (plus ``start`` for the evaluation before
    training); concept accuracy columns first, then ``retrieval_key`` columns.
    """
    from .plotting import concept_value

    rows: dict[str, dict[str, tuple[float, float]]] = {}
    for run, points in histories.items():
        for p in points:
            if p.get("step", 0) == 0:
                label = "start"
            elif p.get("epoch_end"):
                label = str(int(round(p.get("epoch", 0))))
            else:
                continue
            rows.setdefault(label, {})[run] = (concept_value(p, concept), p.get(retrieval_key))
    runs = list(histories)
    order = sorted(rows, key=lambda k: -1 if k == "start" else int(k))
    header = ["epoch", *(f"accuracy {r}" for r in runs), *(f"{retrieval_key} {r}" for r in runs)]
    body = [[label, *(_fmt(rows[label].get(r, (None, None))[0], digits) for r in runs),
             *(_fmt(rows[label].get(r, (None, None))[1], digits) for r in runs)] for label in order]
    return _table(header, body) + "\n"


def save_results(results: Mapping[str, Any], output_dir: str | os.PathLike) -> tuple[Path, Path]:
    """Write ``results.json`` and ``results.md`` into ``output_dir``; return both paths."""
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    json_path, md_path = out / "results.json", out / "results.md"
    json_path.write_text(json.dumps(results, indent=2, sort_keys=False, default=_json_default) + "\n", encoding="utf-8")
    md_path.write_text(results_table(results), encoding="utf-8")
    return json_path, md_path


def _json_default(value: Any):
    if hasattr(value, "item"):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot write {type(value).__name__} to results.json")


def load_results(path: str | os.PathLike) -> dict[str, Any]:
    """Read a ``results.json`` (or the folder holding one)."""
    p = Path(path)
    if p.is_dir():
        p = p / "results.json"
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError as err:
        raise FileNotFoundError(f"{p} not found: pass a results.json written by `hf-hardneg evaluate` "
                                "or its output folder") from err
    except json.JSONDecodeError as err:
        raise ValueError(f"{p} is not valid JSON: {err}") from err
    if not isinstance(data, dict) or "tasks" not in data:
        raise ValueError(f"{p} is not an hf_hardneg results file (no 'tasks' key)")
    return data
