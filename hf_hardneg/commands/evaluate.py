"""`hf-hardneg evaluate`: run evaluation tasks on one or more models, write results.json and Markdown.

    hf-hardneg evaluate --model openai/clip-vit-base-patch32 --model runs/hn1 \\
        --tasks concept,retrieval,inpaintcoco,sugarcrepe --coco-dir data/coco --output eval/

With one ``--model`` the results go to ``--output``; with several, each model
gets ``<output>/<name>/`` and ``<output>/comparison.md`` holds one table across
them (the layout of the paper's Tables 1 and 7).
"""

from __future__ import annotations

import argparse
import logging
import re
from pathlib import Path

from hf_hardneg.commands import add_command, add_evaluation_arguments, evaluation_options, non_negative_float


def _tie_tolerance(value: str) -> float:
    try:
        return non_negative_float(value)
    except argparse.ArgumentTypeError as err:
        raise argparse.ArgumentTypeError(f"{err} (a negative margin would let ties count as correct and flatter "
                                         "a model that cannot tell candidates apart)") from None


def register(subparsers) -> None:
    p = add_command(subparsers, "evaluate", run,
                    help="evaluate dual encoders on concept accuracy, retrieval and compositional benchmarks")
    p.add_argument("--model", action="append", required=True, metavar="PATH_OR_ID",
                   help="checkpoint folder or Hub id; repeat to evaluate and compare several models")
    p.add_argument("--name", action="append", default=None,
                   help="display name per --model (default: the folder or repo name)")
    p.add_argument("--output", required=True, help="folder for results.json / results.md (and comparison.md)")
    add_evaluation_arguments(p, default_tasks="concept,retrieval")
    p.add_argument("--num-workers", type=int, default=0, help="image decoding worker processes")
    p.add_argument("--autocast", choices=["fp16", "bf16"], default=None, help="encode under torch.autocast")
    p.add_argument("--dtype", choices=["float32", "float16", "bfloat16"], default=None,
                   help="load weights in this precision")
    p.add_argument("--tie-tolerance", type=_tie_tolerance, default=None,
                   help="cosine margin within which candidates tie (ties count against the correct one); "
                        "default depends on precision")
    p.add_argument("--text-prior", metavar="CAPTIONS_FILE", default=None,
                   help="also score each task's items with a caption-only n-gram prior fitted on this captions file "
                        "(e.g. COCO captions_train2017.json): the text-only control, reported beside the model")
    p.add_argument("--skip-failed", action="store_true",
                   help="record a failing task's error in results.json and go on with the others")
    p.add_argument("--seed", type=int, default=0)


def model_names(models: list[str], names: list[str] | None) -> list[str]:
    """Display names: given ones, else the last path component, made unique."""
    if names:
        if len(names) != len(models):
            raise SystemExit(f"{len(names)} --name for {len(models)} --model; give one per model or none")
        return names
    out: list[str] = []
    for m in models:
        base = re.sub(r"[^A-Za-z0-9_.-]+", "_", Path(m.rstrip("/")).name or m) or "model"
        name, k = base, 2
        while name in out:
            name, k = f"{base}_{k}", k + 1
        out.append(name)
    return out


def run(args) -> int:
    from hf_hardneg.evaluation.reference import reference_table
    from hf_hardneg.evaluation.report import compare_table
    from hf_hardneg.evaluation.runner import evaluate_model

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    names = model_names(args.model, args.name)
    options = evaluation_options(args)
    output = Path(args.output)
    if output.exists() and not output.is_dir():  # found now, not after the whole evaluation
        raise NotADirectoryError(f"--output {output} is a file; results.json and results.md go into a folder: "
                                 "pass a folder path (it is created if missing)")
    text_prior = None
    if args.text_prior:
        from hf_hardneg.evaluation.text_prior import NgramCaptionPrior

        text_prior = NgramCaptionPrior.from_captions_file(args.text_prior)  # fitted once for every model
        print(f"text-only control: {text_prior.describe()}")
    all_results = {}
    for model, name in zip(args.model, names):
        target = output if len(args.model) == 1 else output / name
        results = evaluate_model(
            model, output_dir=target, **options, autocast_dtype=args.autocast, dtype=args.dtype,
            tie_tolerance=args.tie_tolerance, num_workers=args.num_workers,
            on_error="skip" if args.skip_failed else "raise", name=name, seed=args.seed, text_prior=text_prior,
        )
        all_results[name] = results
        print(f"{name}: wrote {target / 'results.json'} and {target / 'results.md'}")
        for task, err in (results.get("errors") or {}).items():
            print(f"  skipped {task}: {err}")
    if len(all_results) > 1:
        table = compare_table(all_results)
        (output / "comparison.md").write_text(table, encoding="utf-8")
        print(table)
        print(f"wrote {output / 'comparison.md'}")
        for name, results in all_results.items():
            reference = reference_table(results, model=dict(zip(names, args.model)).get(name))
            if reference:
                print(f"\n{name} beside the published figures for its weights:\n\n{reference}")
    else:
        print((output / "results.md").read_text(encoding="utf-8"))
    failed = any(r.get("errors") for r in all_results.values())
    return 1 if failed else 0
