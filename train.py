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
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

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
class DataArguments:
    """Where the image-caption pairs come from and how they are turned into training rows."""

    coco_captions_json: str | None = field(
        default=None, metadata={"help": "COCO captions annotation file, e.g. annotations/captions_train2017.json."})
    coco_images_dir: str | None = field(
        default=None, metadata={"help": "Folder with the COCO images named in --coco_captions_json."})
    eval_coco_captions_json: str | None = field(
        default=None, metadata={"help": "COCO captions file for the evaluation loss (e.g. captions_val2017.json)."})
    eval_coco_images_dir: str | None = field(
        default=None, metadata={"help": "Folder with the images of --eval_coco_captions_json."})
    dataset_name: str | None = field(
        default=None, metadata={"help": "A Hub dataset id (or a local folder/script-free dataset load_dataset reads)."})
    dataset_config_name: str | None = field(default=None, metadata={"help": "Configuration of --dataset_name."})
    dataset_path: str | None = field(
        default=None, metadata={"help": "A dataset saved with save_to_disk, or local data files load_dataset reads."})
    train_split: str = field(default="train", metadata={"help": "Split to train on."})
    eval_split: str | None = field(default=None, metadata={"help": "Split for the evaluation loss (none by default)."})
    image_column: str = field(
        default="image", metadata={"help": "Column with the images (datasets Image feature or file paths)."})
    caption_column: str = field(default="caption", metadata={"help": "Column with the (positive) captions."})
    streaming: bool = field(
        default=False, metadata={"help": "Stream the dataset instead of downloading it; needs --max_steps."})
    max_train_samples: int | None = field(
        default=None, metadata={"help": "Keep only the first N training rows (after concept filtering)."})
    max_eval_samples: int | None = field(
        default=None, metadata={"help": "Keep only the first N evaluation rows (after concept filtering)."})
    preprocessing_num_workers: int | None = field(
        default=None, metadata={"help": "Processes for the substitution pass over a non-streaming dataset."})


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
        values = yaml.safe_load(path.read_text()) or {}
        if not isinstance(values, dict):
            raise ValueError(f"{path}: expected a mapping of argument names to values, got {type(values).__name__}")
        known_names = {action.dest for action in parser._actions}
        unknown = sorted(set(values) - known_names - {"config"})
        if unknown:
            raise ValueError(f"{path}: unknown argument(s) {unknown}; see `python train.py --help`")
        parser.set_defaults(**values)  # flags parsed below still override these
    model_args, data_args, config, *_ = parser.parse_args_into_dataclasses(args=argv, look_for_args_file=False)
    return model_args, data_args, config


# -- data ------------------------------------------------------------------------------------


def _load_raw(data_args: DataArguments):
    """(train, eval-or-None) before concept filtering."""
    import datasets

    from hf_hardneg.data import load_coco_captions

    if data_args.coco_captions_json or data_args.coco_images_dir:
        if not (data_args.coco_captions_json and data_args.coco_images_dir):
            raise ValueError("a COCO layout needs both --coco_captions_json and --coco_images_dir")
        train = load_coco_captions(data_args.coco_captions_json, data_args.coco_images_dir)
        evaluation = None
        if data_args.eval_coco_captions_json:
            if not data_args.eval_coco_images_dir:
                raise ValueError("--eval_coco_captions_json needs --eval_coco_images_dir")
            evaluation = load_coco_captions(data_args.eval_coco_captions_json, data_args.eval_coco_images_dir)
        return train, evaluation

    source = data_args.dataset_name or data_args.dataset_path
    if not source:
        raise ValueError("no training data: pass --coco_captions_json and --coco_images_dir, "
                         "or --dataset_name / --dataset_path")
    saved_to_disk = data_args.dataset_path and any(
        Path(data_args.dataset_path, marker).is_file() for marker in ("dataset_dict.json", "state.json"))
    if saved_to_disk:
        loaded = datasets.load_from_disk(data_args.dataset_path)
        if data_args.streaming:
            loaded = (loaded.to_iterable_dataset() if isinstance(loaded, datasets.Dataset)
                      else datasets.IterableDatasetDict({k: v.to_iterable_dataset() for k, v in loaded.items()}))
    else:
        loaded = datasets.load_dataset(source, data_args.dataset_config_name, streaming=data_args.streaming)
    if isinstance(loaded, (datasets.Dataset, datasets.IterableDataset)):
        if data_args.eval_split:
            raise ValueError(f"{source} has no splits, so --eval_split {data_args.eval_split!r} cannot be used")
        return loaded, None

    def split(name):
        if name not in loaded:
            raise ValueError(f"{source} has no split {name!r}; its splits are {list(loaded)}")
        return loaded[name]

    return split(data_args.train_split), (split(data_args.eval_split) if data_args.eval_split else None)


def _prepare(dataset, data_args: DataArguments, config, limit: int | None, role: str):
    """Check columns, apply the concepts (subset + hard negatives), cap the size."""
    import datasets

    from hf_hardneg.collator import count_negative_columns
    from hf_hardneg.trainer import apply_concepts

    columns = dataset.column_names
    if columns is not None:
        for flag, column in (("--image_column", data_args.image_column), ("--caption_column", data_args.caption_column)):
            if column not in columns:
                raise ValueError(f"{role} data has no column {column!r} ({flag}); its columns are {columns}")
        k = config.num_hard_negatives
        if k > 0 and not config.concepts and count_negative_columns(columns) < k:
            raise ValueError(
                f"--num_hard_negatives {k} but the {role} data has {count_negative_columns(columns)} negative_* "
                "columns; pass --concepts to generate them"
            )
    num_proc = None if data_args.streaming else data_args.preprocessing_num_workers
    dataset = apply_concepts(dataset, config, data_args.caption_column, num_proc=num_proc)
    if limit is not None:
        if isinstance(dataset, datasets.IterableDataset):
            dataset = dataset.take(limit)
        else:
            dataset = dataset.select(range(min(limit, len(dataset))))
    return dataset


def load_training_data(data_args: DataArguments, config):
    """``(train_dataset, eval_dataset_or_None)`` ready for :class:`~hf_hardneg.trainer.HardNegCLIPTrainer`."""
    train, evaluation = _load_raw(data_args)
    # substitutions are computed once, on the main process first; the others then read the cache
    with config.main_process_first(desc="hard negatives"):
        train = _prepare(train, data_args, config, data_args.max_train_samples, "training")
        if evaluation is not None:
            evaluation = _prepare(evaluation, data_args, config, data_args.max_eval_samples, "evaluation")
    return train, evaluation


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


def main(argv: Sequence[str] | None = None) -> int:
    model_args, data_args, config = parse_args(argv)
    _setup_logging(config)
    if data_args.streaming and config.max_steps <= 0:
        raise ValueError("--streaming gives a dataset without a length; set --max_steps")

    from transformers import AutoImageProcessor, AutoModel, AutoTokenizer

    from hf_hardneg.trainer import HardNegCLIPTrainer

    train_dataset, eval_dataset = load_training_data(data_args, config)
    load = dict(revision=model_args.model_revision, cache_dir=model_args.cache_dir)
    model = AutoModel.from_pretrained(model_args.model_name_or_path, **load)
    tokenizer = AutoTokenizer.from_pretrained(model_args.model_name_or_path, **load)
    image_processor = AutoImageProcessor.from_pretrained(model_args.model_name_or_path, **load)

    trainer = HardNegCLIPTrainer(
        model=model,
        args=config,
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        processing_class=tokenizer,
        image_processor=image_processor,
        image_column=data_args.image_column,
        caption_column=data_args.caption_column,
    )
    resume = config.resume_from_checkpoint
    if isinstance(resume, str) and resume.lower() in {"last", "true"}:
        resume = True  # the newest checkpoint in output_dir
    result = trainer.train(resume_from_checkpoint=resume)
    trainer.save_model()
    trainer.log_metrics("train", result.metrics)
    trainer.save_metrics("train", result.metrics)
    trainer.save_state()
    if eval_dataset is not None:
        metrics = trainer.evaluate()
        trainer.log_metrics("eval", metrics)
        trainer.save_metrics("eval", metrics)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # tokenising happens in DataLoader workers
    sys.exit(main())
