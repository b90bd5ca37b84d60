"""`hf-hardneg build-inpaintcoco`: raw InpaintCOCO export -> Parquet + dataset card (-> Hub).

A thin wrapper: the options and the work live in :mod:`hf_hardneg.data.inpaintcoco_builder`,
which ``dataset_scripts/inpaintcoco/build.py`` runs too.
"""

from __future__ import annotations

import argparse

from hf_hardneg.commands import add_command


def register(subparsers) -> None:
    from hf_hardneg.data.inpaintcoco_builder import add_build_arguments

    parser = add_command(
        subparsers,
        "build-inpaintcoco",
        run,
        help="build the InpaintCOCO dataset (Parquet shards + card) from a raw annotation export",
        description=(
            "Check a raw InpaintCOCO export (annotation table, inpainted images, COCO 2017 val), write "
            "Parquet shards with configs all/object/color/size and a dataset card, and optionally push "
            "them to the Hugging Face Hub. See dataset_scripts/inpaintcoco/README.md for the input format."
        ),
    )
    add_build_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from hf_hardneg.data.inpaintcoco_builder import run as build

    return build(args)
