"""`hf-hardneg interpolate`: WiSE-FT checkpoints between a base model and its fine-tuned copy, and their sweep.

    hf-hardneg interpolate --base openai/clip-vit-base-patch32 --finetuned runs/hn1 \\
        --alpha 0 0.25 0.5 0.75 1 --output wiseft/
    hf-hardneg interpolate --base ... --finetuned runs/hn1 --alpha 0 0.5 1 --output wiseft/ \\
        --evaluate --tasks concept,retrieval,zeroshot --coco-dir data/coco --source zeroshot=imagenet_val/

Each alpha gets ``<output>/alpha_<alpha>/`` (safetensors weights, tokenizer, image processor,
model card), loadable with ``from_pretrained``. With ``--evaluate`` every alpha is evaluated as
``hf-hardneg evaluate`` would, and ``sweep.json``, ``sweep.md`` and ``sweep.png`` (concept
accuracy against zero-shot accuracy and against retrieval) go into ``--output``.
"""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path

from hf_hardneg.commands import add_command, add_evaluation_arguments, evaluation_options, finite_float


def register(subparsers) -> None:
    p = add_command(subparsers, "interpolate", run,
                    help="WiSE-FT: checkpoints interpolating a base model and its fine-tuned copy, optionally evaluated")
    p.add_argument("--base", required=True, metavar="PATH_OR_ID", help="the model fine-tuning started from (alpha 0)")
    p.add_argument("--finetuned", required=True, metavar="PATH_OR_ID", help="the fine-tuned model (alpha 1)")
    p.add_argument("--alpha", type=finite_float, nargs="+", default=[0.0, 0.25, 0.5, 0.75, 1.0],
                   help="weights of the fine-tuned model, theta = (1-alpha)*base + alpha*finetuned "
                        "(default: %(default)s; values outside [0, 1] extrapolate)")
    p.add_argument("--output", required=True, help="folder for alpha_<alpha>/ checkpoints and the sweep files")
    p.add_argument("--evaluate", action="store_true",
                   help="evaluate every alpha on --tasks and write sweep.json, sweep.md and sweep.png")
    add_evaluation_arguments(p, default_tasks="concept,retrieval,zeroshot")  # as hf-hardneg evaluate reads them


def _load(name: str, what: str):
    from transformers import AutoModel

    from hf_hardneg.models import check_local_model_path

    check_local_model_path(name, what)
    return AutoModel.from_pretrained(name)


def run(args) -> int:
    import torch
    from transformers import AutoImageProcessor, AutoTokenizer

    from hf_hardneg.interpolation import check_compatible, save_interpolations
    from hf_hardneg.evaluation.encoding import resolve_device

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    output = Path(args.output)
    if output.exists() and not output.is_dir():
        raise NotADirectoryError(f"--output {output} is a file; pass a folder (it is created if missing)")
    evaluate = None
    if args.evaluate:
        evaluate = {**evaluation_options(args), "device": resolve_device(args.device)}  # resolved once for all alphas
    base, finetuned = _load(args.base, "--base"), _load(args.finetuned, "--finetuned")
    check_compatible(base, finetuned)  # before anything is written
    # fine-tuning does not change the preprocessing: the fine-tuned model's tokenizer and image processor go along
    tokenizer, image_processor = AutoTokenizer.from_pretrained(args.finetuned), AutoImageProcessor.from_pretrained(args.finetuned)
    plot = importlib.util.find_spec("matplotlib") is not None
    if args.evaluate and not plot:
        print("matplotlib is not installed (pip install 'hf_hardneg[plot]'): no sweep.png")
    with torch.no_grad():
        points = save_interpolations(base, finetuned, args.alpha, output, tokenizer, image_processor,
                                     base_name=args.base, finetuned_name=args.finetuned, finetuned_path=args.finetuned,
                                     evaluate=evaluate, plot=plot)
    for p in points:
        print(f"alpha {p.alpha:g}: {p.path}" + (f"  {p.metrics}" if p.metrics else ""))
    if args.evaluate:
        print((output / "sweep.md").read_text(encoding="utf-8"))
    return 0
