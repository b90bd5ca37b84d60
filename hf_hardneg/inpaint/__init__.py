"""Make your own InpaintCOCO: the paper's annotation tool (CLIPSeg mask, diffusion inpainting, new caption).

Modules, one idea each:

* :mod:`~hf_hardneg.inpaint.models`: CLIPSeg masks and ``diffusers`` inpainting candidates
* :mod:`~hf_hardneg.inpaint.catalog`: which COCO photographs may be offered, with captions and objects
* :mod:`~hf_hardneg.inpaint.rules`: licence, super-category and caption rules, with their messages
* :mod:`~hf_hardneg.inpaint.export`: the raw export that ``hf-hardneg build-inpaintcoco`` reads
* :mod:`~hf_hardneg.inpaint.session`: one annotator's resumable session (the workflow as state)
* :mod:`~hf_hardneg.inpaint.webapp`: the local web app (``hf-hardneg annotate``)
* :mod:`~hf_hardneg.inpaint.batch`: unattended plans (``hf-hardneg inpaint --plan plan.jsonl``)
* :mod:`~hf_hardneg.inpaint.testing`: tiny random checkpoints of both models, for tests

Importing this package loads nothing heavy; ``diffusers`` and the web framework are the
optional ``inpaint`` extra (``pip install "hf_hardneg[inpaint]"``).
"""

DEFAULT_MASK_MODEL = "CIDAS/clipseg-rd64-refined"
DEFAULT_INPAINT_MODEL = "stabilityai/stable-diffusion-2-inpainting"

__all__ = ["DEFAULT_INPAINT_MODEL", "DEFAULT_MASK_MODEL"]
