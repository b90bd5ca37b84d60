"""Fixtures of the annotation-tool tests: tiny random CLIPSeg / inpainting checkpoints and the real COCO slice.

Import the fixtures a test module uses by name (pytest finds imported fixtures).
"""

from __future__ import annotations

import pytest

# Tiny models make noise, fast: 64 pixels on the longer side and 2 denoising steps.
RESOLUTION = 64
STEPS = 2


def needs_diffusers():
    return pytest.importorskip("diffusers", reason='inpainting needs the optional extra: pip install "hf_hardneg[inpaint]"')


@pytest.fixture(scope="session")
def tiny_clipseg_dir(tmp_path_factory):
    from hf_hardneg.inpaint.testing import make_tiny_clipseg

    return make_tiny_clipseg(tmp_path_factory.mktemp("tiny_clipseg"))


@pytest.fixture(scope="session")
def tiny_inpaint_dir(tmp_path_factory):
    needs_diffusers()
    from hf_hardneg.inpaint.testing import make_tiny_inpaint_pipeline

    return make_tiny_inpaint_pipeline(tmp_path_factory.mktemp("tiny_inpaint"))


@pytest.fixture(scope="session")
def masker(tiny_clipseg_dir):
    from hf_hardneg.inpaint.models import ClipSegMasker

    return ClipSegMasker.from_pretrained(tiny_clipseg_dir, device="cpu")


@pytest.fixture(scope="session")
def inpainter(tiny_inpaint_dir):
    from hf_hardneg.inpaint.models import Inpainter

    return Inpainter.from_pretrained(tiny_inpaint_dir, device="cpu")


@pytest.fixture(scope="session")
def catalog(coco_mini):
    from hf_hardneg.inpaint.catalog import CocoCatalog

    return CocoCatalog.load(coco_mini)
