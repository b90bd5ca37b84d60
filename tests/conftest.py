"""Shared fixtures: the real COCO slice in ../shared and tiny offline models."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
if "PYTEST_XDIST_WORKER" in os.environ:
    # `make test` runs one worker per core: more torch threads per worker only oversubscribe the CPU.
    # Subprocesses (2-process tests, notebook kernels) inherit the setting.
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import torch

    torch.set_num_threads(1)

REPO_ROOT = Path(__file__).resolve().parents[1]
COCO_MINI = Path(os.environ.get("HF_HARDNEG_COCO_MINI", REPO_ROOT.parent / "shared" / "data" / "coco-mini"))

TINY_CAPTIONS = [
    "a white cat sits under a black umbrella",
    "a large red bus on the left side of the street",
    "two dogs play with a frisbee in the background",
    "a small brown teddy bear on a bed",
    "a man holding a hot dog in front of a truck",
    "a tall giraffe behind a green tree",
    "a yellow banana and an orange on a table",
    "a gray elephant walking over a little bridge",
]


@pytest.fixture(scope="session")
def coco_mini() -> Path:
    """Path of ../shared/data/coco-mini; skips tests that need it on a fresh clone without it."""
    if not (COCO_MINI / "annotations" / "captions_val2017.json").is_file():
        pytest.skip(f"real COCO slice not found at {COCO_MINI} (it ships in ../shared beside the repo; "
                    "set HF_HARDNEG_COCO_MINI to its path)")
    return COCO_MINI


@pytest.fixture(scope="session")
def tiny_captions() -> list[str]:
    return list(TINY_CAPTIONS)


@pytest.fixture(scope="session")
def tiny_clip_dir(tmp_path_factory, tiny_captions) -> Path:
    """A tiny random CLIPModel + tokenizer + image processor saved with save_pretrained."""
    from hf_hardneg.testing import make_tiny_model

    path = tmp_path_factory.mktemp("tiny_clip")
    make_tiny_model(tiny_captions, path, kind="clip")
    return path


@pytest.fixture(scope="session")
def train_script():
    """The top-level train.py imported as a module (it is a script, not part of the package)."""
    import importlib.util
    import sys

    spec = importlib.util.spec_from_file_location("hf_hardneg_train_script", REPO_ROOT / "train.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve string annotations through sys.modules
    spec.loader.exec_module(module)
    return module
