"""`hf-hardneg inpaint`: run a plan of InpaintCOCO edits unattended (batch mode of the annotation tool).

A thin wrapper around :func:`hf_hardneg.inpaint.batch.run_plan`; the plan format is in that module.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from hf_hardneg.commands import _inpaint_options as options
from hf_hardneg.commands import add_command


def register(subparsers) -> None:
    parser = add_command(
        subparsers,
        "inpaint",
        run,
        help="inpaint a plan.jsonl of (image, mask prompt, inpainting prompt, new caption) rows into an export",
        description=(
            "Check every row of the plan against the InpaintCOCO rules, then mask (CLIPSeg), inpaint one "
            "candidate per row and save it to the export folder that `hf-hardneg build-inpaintcoco` reads. "
            "Rows already in the export are skipped, so a rerun continues an interrupted plan."
        ),
    )
    parser.add_argument("--plan", required=True, type=Path, metavar="FILE",
                        help="JSONL plan (see hf_hardneg/inpaint/batch.py for the columns)")
    options.add_coco_arguments(parser)
    options.add_model_arguments(parser)
    add = parser.add_argument
    add("--threshold", type=float, default=0.4, help="mask threshold for rows without mask_threshold (default %(default)s)")
    add("--seed", type=int, default=0, help="rows without a seed use SEED + their row number (default %(default)s)")
    add("--quality", default="okay", choices=["okay", "very good"],
        help="rating for rows without one (default %(default)s: nobody looked at the result)")
    add("--skip-invalid", action="store_true", help="leave invalid rows out (counted and listed) instead of stopping")
    add("--no-progress", action="store_true", help="no progress bar")


@options.reports_missing_extra("inpaint")
def run(args: argparse.Namespace) -> int:
    from hf_hardneg.inpaint.batch import PlanDefaults, run_plan
    from hf_hardneg.inpaint.export import ExportFolder

    defaults = PlanDefaults(quality=args.quality, mask_threshold=args.threshold, guidance_scale=args.guidance_scale,
                            num_inference_steps=args.steps, seed=args.seed, resolution=args.resolution,
                            negative_prompt=args.negative_prompt)
    catalog = options.load_catalog(args)
    with ExportFolder(args.export, coco_dir=args.coco_dir) as export:
        report = run_plan(catalog, export, args.plan, defaults=defaults, skip_invalid=args.skip_invalid,
                          load_models=lambda: options.load_models(args), progress=not args.no_progress)
        print(report.summary(export))
    return 0
