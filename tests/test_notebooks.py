"""The notebooks in notebooks/ run top to bottom offline, and are stored without outputs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
NAMES = ["quickstart.ipynb", "inpaintcoco.ipynb"]


@pytest.mark.parametrize("name", NAMES)
def test_stored_notebook_has_no_outputs(name):
    """Outputs (images, paths, timings) change at every run and bloat diffs: the repository keeps code only."""
    nb = json.loads((NOTEBOOKS / name).read_text(encoding="utf-8"))
    assert nb["metadata"]["kernelspec"]["name"] == "python3"
    dirty = [i for i, cell in enumerate(nb["cells"]) if cell["cell_type"] == "code"
             and (cell.get("outputs") or cell.get("execution_count") is not None)]
    assert not dirty, (f"{name}: code cells {dirty} carry outputs; clear them before committing "
                       f"(jupyter nbconvert --clear-output --inplace notebooks/{name})")
    assert "widgets" not in nb["metadata"]


def _run(name: str, tmp_path: Path, coco_mini: Path, monkeypatch) -> dict:
    import nbformat
    from nbclient import NotebookClient

    # the kernel inherits this environment (offline flags come from conftest.py)
    monkeypatch.setenv("HF_HARDNEG_COCO_MINI", str(coco_mini))
    monkeypatch.setenv("HF_HARDNEG_NOTEBOOK_OUTPUT", str(tmp_path / "outputs"))
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf-datasets-cache"))
    monkeypatch.delenv("HF_HARDNEG_MODEL", raising=False)
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    return nb


def _outputs(nb, mime: str) -> list[str]:
    found = []
    for cell in nb.cells:
        for output in cell.get("outputs", []):
            if output.get("output_type") == "stream" and mime == "text/plain":
                found.append(output["text"])
            data = output.get("data", {})
            if mime in data:
                found.append(data[mime])
    return found


@pytest.mark.slow
def test_quickstart_runs_offline(tmp_path, coco_mini, monkeypatch):
    nb = _run("quickstart.ipynb", tmp_path, coco_mini, monkeypatch)
    out = tmp_path / "outputs"
    assert (out / "tradeoff.png").stat().st_size > 0
    assert _outputs(nb, "image/png"), "the trade-off plot is shown"
    checkpoints = sorted((out / "hn1").glob("checkpoint-*"))
    assert checkpoints and all((c / "README.md").is_file() for c in checkpoints)
    results = json.loads((out / "eval-hn1" / "results.json").read_text(encoding="utf-8"))
    assert {"concept", "retrieval"} <= set(results["tasks"])
    text = "\n".join(_outputs(nb, "text/plain") + _outputs(nb, "text/markdown"))
    assert "dry run: nothing was uploaded" in text and "- optimizer.pt" in text
    assert "## Evaluation" in text and "| concept | COCO val2017 | color | accuracy |" in text


@pytest.mark.slow
def test_inpaintcoco_runs_offline(tmp_path, coco_mini, monkeypatch):
    nb = _run("inpaintcoco.ipynb", tmp_path, coco_mini, monkeypatch)
    built = tmp_path / "outputs" / "inpaintcoco-mini"
    assert (built / "README.md").is_file() and list(built.glob("data/color/*.parquet"))
    assert len(_outputs(nb, "image/png")) >= 1, "the pairs are shown side by side"
    text = "\n".join(_outputs(nb, "text/plain") + _outputs(nb, "text/markdown"))
    assert "Equation (1) accuracy:" in text and "| inpaintcoco |" in text
