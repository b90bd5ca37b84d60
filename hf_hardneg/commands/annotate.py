"""`hf-hardneg annotate`: the InpaintCOCO annotation tool as a local web app (paper section 4, appendix A).

A thin wrapper: the workflow is :class:`hf_hardneg.inpaint.session.AnnotationSession`, the page
is :mod:`hf_hardneg.inpaint.webapp`.
"""

from __future__ import annotations

import argparse

from hf_hardneg.commands import _inpaint_options as options
from hf_hardneg.commands import add_command


def register(subparsers) -> None:
    parser = add_command(
        subparsers,
        "annotate",
        run,
        help="web app to make your own InpaintCOCO: CLIPSeg mask, inpainting candidates, rating, new caption",
        description=(
            "Serve the annotation tool on http://HOST:PORT. It offers COCO 2017 val photographs whose captions "
            "hold a keyword of the concept (never NoDerivs licences), and writes each saved sample to the export "
            "folder in the format `hf-hardneg build-inpaintcoco` reads. Stop it any time: a restart continues "
            "with the next unannotated photograph."
        ),
    )
    options.add_coco_arguments(parser)
    add = parser.add_argument
    add("--concept", required=True, choices=["object", "color", "size"], help="the InpaintCOCO subset to annotate")
    add("--annotator", required=True, help="your annotator id (e.g. initials); saved with every sample")
    add("--keywords", metavar="CONCEPT",
        help="concept whose keywords select the photographs (default: object_coco for object, else the concept); "
             "a name from --concept-file for your own list")
    add("--concept-file", metavar="FILE", help="YAML or JSON file of your own keyword concepts (for --keywords)")
    add("--seed", type=int, default=0, help="order of the photographs (fixed for an export once chosen)")
    add("--candidates", type=int, default=3, help="candidates per inpainting run (default %(default)s)")
    options.add_model_arguments(parser)
    add("--host", default="127.0.0.1", help="address to serve on (default %(default)s: this machine only)")
    add("--port", type=int, default=7860, help="port (default %(default)s)")


def _keywords(args: argparse.Namespace):
    from hf_hardneg.concepts import get_concept, load_concepts

    if args.concept_file:
        user = {c.name: c for c in load_concepts(args.concept_file)}
        if args.keywords is None and len(user) == 1:
            return next(iter(user.values()))
        if args.keywords in user:
            return user[args.keywords]
        raise ValueError(f"--keywords {args.keywords!r} is not a concept of {args.concept_file} "
                         f"(it defines {', '.join(user)})")
    return get_concept(args.keywords) if args.keywords else None


@options.reports_missing_extra("annotate")
def run(args: argparse.Namespace) -> int:
    from hf_hardneg.inpaint.export import ExportFolder
    from hf_hardneg.inpaint.session import AnnotationSession, GenerationSettings
    from hf_hardneg.inpaint.webapp import require_web_framework, serve

    require_web_framework()
    if args.candidates < 1 or args.steps < 1:
        raise ValueError("--candidates and --steps must be at least 1")
    catalog = options.load_catalog(args)
    keywords = _keywords(args)
    with ExportFolder(args.export, coco_dir=args.coco_dir) as export:
        masker, inpainter = options.load_models(args)
        settings = GenerationSettings(num_candidates=args.candidates, guidance_scale=args.guidance_scale,
                                      num_inference_steps=args.steps, resolution=args.resolution,
                                      negative_prompt=args.negative_prompt)
        session = AnnotationSession(catalog, export, args.concept, args.annotator, masker, inpainter,
                                    keywords=keywords, seed=args.seed, settings=settings)
        progress = session.progress()
        print(session.pool.describe())
        print(f"{progress['saved']} saved, {progress['skipped']} skipped, {progress['remaining']} to go; "
              f"export: {export.root}")
        print(f"annotate at http://{args.host}:{args.port}  (Ctrl+C stops; a restart continues)")
        serve(session, host=args.host, port=args.port)
        print(f"publish with: {export.build_command()}")
    return 0
