#!/usr/bin/env python
"""Continued pretraining of a CLIP-style dual encoder with hard-negative captions.

One process or many, with the same command line::

    accelerate launch train.py --config configs/hn1_color.yaml
    accelerate launch train.py --config configs/hn1_color.yaml --learning_rate 1e-5   # flags override the file
    python train.py --coco_captions_json annotations/captions_train2017.json --coco_images_dir train2017 \\
        --concepts color --num_hard_negatives 1 --output_dir runs/hn1_color

Data: a local COCO layout (``--coco_captions_json`` + ``--coco_images_dir``), or
any Hub or local dataset (``--dataset_name`` / ``--dataset_path`` with
``--image_column`` / ``--caption_column``; ``--streaming`` for corpora larger
than the disk, which then needs ``--max_steps``). With ``--concepts`` the data is
restricted to captions holding one of the concepts' keywords (the paper's
per-concept subsets) and, for ``--num_hard_negatives k > 0``, gets k hard-negative
captions per row, fixed per row by ``--substitution_seed`` (so a resumed run sees
the same negatives). Without ``--concepts``, k > 0 expects the dataset to carry
``negative_1..negative_k`` already.

Every argument of :class:`hf_hardneg.config.HardNegCLIPConfig` (hence of
``TrainingArguments``) is accepted; the paper's recipe is the default. The final
model is saved with safetensors, its tokenizer and its image processor in
``--output_dir``, loadable with ``AutoModel``/``AutoTokenizer``/``AutoImageProcessor``.

Bad flags, files or data stop the script before training with one ``train.py: error: ...``
line that names them (``HF_HARDNEG_TRACEBACK=1`` shows the traceback instead); the model
path and concept names are checked before the data pass.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from hf_hardneg.data.prepare import ImageCaptionDataArguments

logger = logging.getLogger("hf_hardneg.train")

DEFAULT_MODEL = "openai/clip-vit-base-patch32"


@dataclass
class ModelArguments:
    """Which pretrained dual encoder to continue training."""

    model_name_or_path: str = field(
        default=DEFAULT_MODEL,
        metadata={"help": "Hub id or local folder of a CLIPModel, SiglipModel or VisionTextDualEncoderModel "
                          "checkpoint with its tokenizer and image processor (loaded with AutoModel, "
                          "AutoTokenizer, AutoImageProcessor; remote code is never run)."},
    )
    model_revision: str = field(default="main", metadata={"help": "Branch, tag or commit of a Hub model."})
    cache_dir: str | None = field(default=None, metadata={"help": "Where downloaded models are cached."})


@dataclass
class DataArguments(ImageCaptionDataArguments):
    """Where the image-caption pairs come from (see hf_hardneg.data.prepare), plus training-time evaluation."""

    concept_eval: bool = field(
        default=False,
        metadata={"help": "Measure concept accuracy and text-to-image Recall@1/5/10 on the --eval_coco_* set before "
                          "training, at every checkpoint and at each epoch end (ConceptEvalCallback); writes "
                          "<output_dir>/<run_name>.concept_eval.json for `hf-hardneg compare --histories` and the "
                          "trade-off plot <run_name>.tradeoff.png (the paper's Figure 4)."})
    concept_eval_concepts: list[str] | None = field(
        default=None, metadata={"help": "Concepts measured by --concept_eval (default: object color location size)."})
    concept_eval_max_examples: int | None = field(
        default=None, metadata={"help": "Cap per concept (and on retrieval images) for --concept_eval; a seeded "
                                         "subset, the same at every checkpoint."})
    zeroshot_eval: str | None = field(
        default=None,
        metadata={"help": "Also measure zero-shot classification (top-1/top-5/per class) on this set at every "
                          "evaluation and once after training, for the card: an image folder (one subfolder per "
                          "class), a saved dataset, a data file or a Hub id with a ClassLabel column "
                          "(ZeroShotEvaluator)."})
    zeroshot_templates: str = field(
        default="default", metadata={"help": "Prompt templates of --zeroshot_eval: 'default' (7), 'imagenet' "
                                              "(CLIP's 80) or a file of one template per line."})
    zeroshot_class_names: str | None = field(
        default=None, metadata={"help": "Class names of --zeroshot_eval instead of the dataset's: 'imagenet' or a "
                                         "file of one name per line."})
    zeroshot_split: str = field(default="test", metadata={"help": "Split of a --zeroshot_eval dataset."})
    zeroshot_max_examples: int | None = field(
        default=None, metadata={"help": "Cap on --zeroshot_eval images (a seeded subset, the same every time)."})


def build_parser():
    """The HfArgumentParser over (ModelArguments, DataArguments, HardNegCLIPConfig), plus ``--config``."""
    from transformers import HfArgumentParser

    from hf_hardneg.config import HardNegCLIPConfig

    parser = HfArgumentParser((ModelArguments, DataArguments, HardNegCLIPConfig),
                              description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default=None,
                        help="YAML file of argument values (e.g. configs/hn1_color.yaml); flags given on the "
                             "command line override it.")
    return parser


def parse_args(argv: Sequence[str] | None = None):
    """``(model_args, data_args, config)`` from a YAML file (``--config``) and/or command-line flags."""
    import yaml

    argv = list(sys.argv[1:] if argv is None else argv)
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--config", default=None)
    known, _ = pre.parse_known_args(argv)
    parser = build_parser()
    if known.config:
        path = Path(known.config)
        if not path.is_file():
            raise FileNotFoundError(f"--config {path}: no such file (the paper's runs are in configs/)")
        try:
            values = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as err:
            mark = getattr(err, "problem_mark", None)
            where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
            problem = getattr(err, "problem", None) or str(err).splitlines()[0]
            raise ValueError(f"--config {path}: not valid YAML{where} ({problem}); write one `name: value` per "
                             "line, as in configs/hn1_color.yaml") from None
        if not isinstance(values, dict):
            raise ValueError(f"{path}: expected a mapping of argument names to values, got {type(values).__name__}")
        known_names = {action.dest for action in parser._actions}
        unknown = sorted(set(values) - known_names - {"config"})
        if unknown:
            raise ValueError(f"{path}: unknown argument(s) {unknown}; see `python train.py --help`")
        parser.set_defaults(**values)  # flags parsed below still override these
    model_args, data_args, config, *_, extras = parser.parse_args_into_dataclasses(
        args=argv, look_for_args_file=False, return_remaining_strings=True)
    if extras:
        from hf_hardneg.cli import redact_arguments

        raise ValueError(f"unrecognized arguments: {redact_arguments(extras)}; see `python train.py --help`")
    return model_args, data_args, config


# -- data ------------------------------------------------------------------------------------


def load_training_data(data_args: DataArguments, config):
    """``(train_dataset, eval_dataset_or_None)`` ready for the trainer (see :func:`hf_hardneg.data.prepare.load_training_data`)."""
    from hf_hardneg.data.prepare import load_training_data as load

    return load(data_args, config)


def _check_concept_eval(data_args: DataArguments) -> None:
    if data_args.concept_eval and not (data_args.eval_coco_captions_json and data_args.eval_coco_images_dir):
        raise ValueError("--concept_eval measures on a COCO-style held-out set: pass --eval_coco_captions_json and "
                         "--eval_coco_images_dir (e.g. captions_val2017.json and val2017/)")


def concept_eval_callback(data_args: DataArguments, tokenizer, image_processor):
    """The ``ConceptEvalCallback`` of ``--concept_eval``, on the raw ``--eval_coco_*`` captions (all of them)."""
    import importlib.util

    from hf_hardneg.data import load_coco_captions
    from hf_hardneg.evaluation import DEFAULT_CONCEPTS, ConceptEvalCallback

    _check_concept_eval(data_args)
    evaluation = load_coco_captions(data_args.eval_coco_captions_json, data_args.eval_coco_images_dir,
                                    on_invalid="skip" if data_args.skip_invalid_captions else "raise")
    plot = importlib.util.find_spec("matplotlib") is not None
    if not plot:
        logger.warning("matplotlib is not installed (pip install 'hf_hardneg[plot]'): --concept_eval writes the "
                       "history file but no trade-off plot")
    concepts = data_args.concept_eval_concepts or list(DEFAULT_CONCEPTS)
    from hf_hardneg.concepts import resolve_concepts

    return ConceptEvalCallback(evaluation, resolve_concepts(concepts), tokenizer, image_processor,
                               max_examples=data_args.concept_eval_max_examples,
                               max_retrieval_images=data_args.concept_eval_max_examples, plot=plot,
                               dataset_name=Path(data_args.eval_coco_captions_json).name)


def zeroshot_evaluator(data_args: DataArguments, tokenizer, image_processor):
    """The ``ZeroShotEvaluator`` of ``--zeroshot_eval``."""
    from hf_hardneg.evaluation.zeroshot import ZeroShotEvaluator

    return ZeroShotEvaluator(data_args.zeroshot_eval, tokenizer, image_processor,
                             templates=data_args.zeroshot_templates, class_names=data_args.zeroshot_class_names,
                             split=data_args.zeroshot_split, max_examples=data_args.zeroshot_max_examples)


def card_data_fields(data_args: DataArguments) -> dict:
    """What the model card says about the training data (file and folder names only, no local paths)."""
    if data_args.coco_captions_json:
        return {"training_data": f"COCO captions from `{Path(data_args.coco_captions_json).name}` with the images "
                                 f"of `{Path(data_args.coco_images_dir or '').name}`."}
    if data_args.dataset_name:
        name = data_args.dataset_name
        config = f", configuration `{data_args.dataset_config_name}`" if data_args.dataset_config_name else ""
        fields = {"training_data": f"The `{data_args.train_split}` split of `{name}`{config}."}
        if name.count("/") == 1 and not Path(name).exists():  # a Hub id, for the card's metadata
            fields["datasets"] = [name]
        return fields
    if data_args.dataset_path:
        return {"training_data": f"A local dataset, `{Path(data_args.dataset_path).name}`."}
    return {}


def load_model(model_args: ModelArguments):
    """``(model, tokenizer, image_processor)`` of ``--model_name_or_path``, with an error that says what is missing."""
    from transformers import AutoImageProcessor, AutoModel, AutoTokenizer

    from hf_hardneg.models import check_local_model_path

    name = model_args.model_name_or_path
    check_local_model_path(name, "--model_name_or_path")
    load = dict(revision=model_args.model_revision, cache_dir=model_args.cache_dir)
    try:
        return (AutoModel.from_pretrained(name, **load), AutoTokenizer.from_pretrained(name, **load),
                AutoImageProcessor.from_pretrained(name, **load))
    except OSError as err:  # transformers: missing files, unknown repo, no network
        hint = ("the folder lacks a model, tokenizer or image processor saved with save_pretrained"
                if Path(name).expanduser().is_dir() else
                "not a local folder, and as a Hub id it could not be downloaded (check the name, the network, "
                "or HF_TOKEN for a private model)")
        raise OSError(f"--model_name_or_path {name}: {hint} ({err})") from err


# -- main ------------------------------------------------------------------------------------


def _setup_logging(config) -> None:
    import datasets
    import transformers

    logging.basicConfig(format="%(asctime)s - %(levelname)s - %(name)s - %(message)s",
                        datefmt="%m/%d/%Y %H:%M:%S", handlers=[logging.StreamHandler(sys.stdout)])
    level = config.get_process_log_level()
    logging.getLogger("hf_hardneg").setLevel(level)
    datasets.utils.logging.set_verbosity(level)
    transformers.utils.logging.set_verbosity(level)


def _tear_down_process_group() -> None:
    """Destroy a process group still open after an error, so the exit code is ours and not a SIGABRT.

    A gloo group left to interpreter shutdown can abort the process ("terminate called without an active
    exception"); a run that ends well has already torn its group down in `main`.
    """
    import gc

    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        gc.collect()  # a DDP wrapper kept alive by the error's frames goes first (see HardNegCLIPTrainer.end_distributed_run)
        dist.destroy_process_group()


def main(argv: Sequence[str] | None = None) -> int:
    model_args, data_args, config = parse_args(argv)
    _setup_logging(config)
    if data_args.streaming and config.max_steps <= 0:
        raise ValueError("--streaming gives a dataset without a length; set --max_steps")

    from hf_hardneg.concepts import resolve_concepts
    from hf_hardneg.trainer import HardNegCLIPTrainer

    # the cheap checks first: a typo in a concept name or the model path must not wait for the data pass
    if config.concepts:
        resolve_concepts(config.concepts)
    if data_args.concept_eval:
        _check_concept_eval(data_args)
        if data_args.concept_eval_concepts:
            resolve_concepts(data_args.concept_eval_concepts)
    model, tokenizer, image_processor = load_model(model_args)
    train_dataset, eval_dataset = load_training_data(data_args, config)

    from hf_hardneg.model_card import ModelCardCallback

    # the evaluation callback first, so that each checkpoint's model card shows that checkpoint's numbers
    callbacks = [concept_eval_callback(data_args, tokenizer, image_processor)] if data_args.concept_eval else []
    eval_name = (Path(data_args.eval_coco_captions_json).name if data_args.concept_eval
                 else "held-out evaluation set")  # what the card's evaluation table was measured on
    callbacks.append(ModelCardCallback(eval_dataset_name=eval_name, **card_data_fields(data_args)))
    trainer = HardNegCLIPTrainer(
        model=model,
        args=config,
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        processing_class=tokenizer,
        image_processor=image_processor,
        image_column=data_args.prepared_columns[0],
        caption_column=data_args.prepared_columns[1],
        callbacks=callbacks,
        evaluator=zeroshot_evaluator(data_args, tokenizer, image_processor) if data_args.zeroshot_eval else None,
    )
    # "last" resumes the newest complete checkpoint (the trainer says which newer folders it passed over)
    result = trainer.train(resume_from_checkpoint=config.resume_from_checkpoint)
    # the final evaluation before save_model, so that the card it writes shows the final model's numbers
    metrics = trainer.evaluate() if eval_dataset is not None or data_args.zeroshot_eval else None
    trainer.save_model()
    trainer.log_metrics("train", result.metrics)
    trainer.save_metrics("train", result.metrics)
    trainer.save_state()
    if metrics is not None:
        trainer.log_metrics("eval", metrics)
        trainer.save_metrics("eval", metrics)
    trainer.end_distributed_run()  # every process waits for the main one's writes; no gloo group left to exit
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # tokenising happens in DataLoader workers
    try:
        status = main()
    except (ValueError, OSError) as error:  # bad flags, files or data: the message names them and the fix
        from hf_hardneg.cli import report_error

        status = report_error("train.py", error)
    finally:
        _tear_down_process_group()
    sys.exit(status)
