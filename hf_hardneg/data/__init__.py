"""Datasets: COCO captions (:func:`load_coco_captions`) and InpaintCOCO (:func:`load_inpaintcoco`).

``load_inpaintcoco`` and the other submodules are imported on first use, so that importing
this package stays cheap and does not fail when an optional part is missing.
"""

from __future__ import annotations

from hf_hardneg._lazy import lazy_exports
from hf_hardneg.data.coco import EXAMPLE_CAPTIONS, load_coco_captions, load_example_captions, read_captions

__all__ = [
    "load_coco_captions",
    "read_captions",
    "load_example_captions",
    "EXAMPLE_CAPTIONS",
    "load_inpaintcoco",
]

# public name -> submodule that defines it, imported on first access
_LAZY = {"load_inpaintcoco": "hf_hardneg.data.inpaintcoco"}
__getattr__ = lazy_exports(__name__, _LAZY, globals())


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
