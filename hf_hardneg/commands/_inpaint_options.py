"""Options shared by `hf-hardneg annotate` and `hf-hardneg inpaint`: COCO paths, the two models, generation."""

from __future__ import annotations

import argparse
import functools
import sys
from pathlib import Path
from typing import Callable


def add_coco_arguments(parser: argparse.ArgumentParser) -> None:
    add = parser.add_argument
    add("--export", required=True, type=Path, metavar="DIR",
        help="export folder to fill (annotations.jsonl, inpainted/, masks/); created if absent, continued if not")
    add("--coco-dir", type=Path, metavar="DIR",
        help="COCO 2017 folder holding annotations/ and val2017/ (or images/val2017/); linked as EXPORT/coco")
    add("--coco-captions", type=Path, metavar="FILE", help="captions_val2017.json, if not under --coco-dir")
    add("--coco-images", type=Path, metavar="DIR", help="folder of the val2017 JPEGs, if not under --coco-dir")
    add("--instances", type=Path, metavar="FILE",
        help="instances_val2017.json (objects and super-categories), if not under --coco-dir")


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    from hf_hardneg.inpaint import DEFAULT_INPAINT_MODEL, DEFAULT_MASK_MODEL

    add = parser.add_argument
    add("--mask-model", default=DEFAULT_MASK_MODEL, metavar="ID_OR_DIR",
        help="CLIPSeg checkpoint (Hub id or folder; default %(default)s)")
    add("--inpaint-model", default=DEFAULT_INPAINT_MODEL, metavar="ID_OR_DIR",
        help="diffusers inpainting checkpoint (Hub id or folder; default %(default)s)")
    add("--device", help="torch device (default: cuda if available, else cpu)")
    add("--guidance-scale", type=float, default=7.5, help="classifier-free guidance (default %(default)s)")
    add("--steps", type=int, default=50, help="denoising steps (default %(default)s)")
    add("--resolution", type=int, default=512,
        help="longer side, in pixels, at which the inpainting model works (default %(default)s)")
    add("--negative-prompt", help="negative prompt for every inpainting run")


def load_catalog(args: argparse.Namespace):
    from hf_hardneg.inpaint.catalog import CocoCatalog

    return CocoCatalog.load(args.coco_dir, captions_json=args.coco_captions, images_dir=args.coco_images,
                            instances_json=args.instances)


def load_models(args: argparse.Namespace):
    """(masker, inpainter) from the command's model options."""
    from hf_hardneg.inpaint.models import ClipSegMasker, Inpainter

    print(f"loading {args.mask_model} and {args.inpaint_model} ...", flush=True)
    return (ClipSegMasker.from_pretrained(args.mask_model, device=args.device),
            Inpainter.from_pretrained(args.inpaint_model, device=args.device))


def reports_missing_extra(command: str) -> Callable:
    """Wrap a command's ``run`` so that a missing optional extra is one error line (exit 2), not a traceback."""

    def wrap(run: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
        @functools.wraps(run)
        def guarded(args: argparse.Namespace) -> int:
            try:
                return run(args)
            except ImportError as err:
                print(f"hf-hardneg {command}: error: {err}", file=sys.stderr)
                return 2

        return guarded

    return wrap
