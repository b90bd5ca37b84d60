"""`HardNegCLIPConfig`: `TrainingArguments` with the paper's recipe as defaults.

The paper continues the pretraining of CLIP on COCO with Adam(W), weight decay
0.1, a constant learning rate of 5e-6 (no scheduler: the two towers are already
aligned), batch 64, 3 epochs, and a checkpoint after every 10% of the training
data. Those values live here, not in scripts, so ``HardNegCLIPConfig()`` alone
reproduces the recipe and every script or YAML file only states what differs.

Fields added to ``TrainingArguments``, by group:

* loss: ``num_hard_negatives``, ``hard_negative_mode``, ``num_hard_negative_images``, ``gradient_cache_chunk_size``
* data: ``concepts``, ``substitution_seed``, ``skip_corrupt_images``, ``text_pad_to_multiple_of``
* checkpoints: ``save_fraction_of_data``, ``overwrite_output_dir``
* what trains: ``train_parameters``, ``lora_towers``, ``lora_rank``, ``lora_alpha``, ``lora_dropout``,
  ``lora_target_modules`` (see :mod:`hf_hardneg.parameter_efficient`)

Memory and speed use the stock ``TrainingArguments`` switches: ``bf16``/``fp16``
(autocast with fp32 master weights -- never cast the model itself to half, Adam
then produces NaNs), ``gradient_checkpointing``, ``gradient_accumulation_steps``
(note: accumulation does NOT add in-batch negatives, each micro-batch is its own
contrastive problem), ``torch_compile``, and the ``dataloader_*`` options
(decode images in ``dataloader_num_workers`` workers with pinned memory and
``dataloader_persistent_workers``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from transformers import TrainingArguments

__all__ = ["HARD_NEGATIVE_MODES", "HardNegCLIPConfig"]

HARD_NEGATIVE_MODES = ("replace", "append")


@dataclass
class HardNegCLIPConfig(TrainingArguments):
    """Configuration of :class:`~hf_hardneg.trainer.HardNegCLIPTrainer`.

    All ``TrainingArguments`` fields are accepted; the defaults below differ from
    theirs to match the paper (learning rate 5e-6, weight decay 0.1, constant
    schedule, 3 epochs, per-device batch 64, a checkpoint every 10% of the data)
    and to keep the image and caption columns for the collator
    (``remove_unused_columns=False``).
    """

    # -- paper defaults that differ from TrainingArguments' ------------------------------
    learning_rate: float = field(
        default=5e-6, metadata={"help": "Peak learning rate. The paper's choice for continued pretraining of CLIP."}
    )
    weight_decay: float = field(
        default=0.1,
        metadata={"help": "AdamW weight decay (the paper's 0.1). Not applied to biases, norms, logit scale/bias."},
    )
    lr_scheduler_type: str = field(
        default="constant",
        metadata={"help": "Learning-rate schedule. 'constant' as in the paper: the towers are already aligned."},
    )
    num_train_epochs: float = field(default=3.0, metadata={"help": "Passes over the training data (paper: 3)."})
    per_device_train_batch_size: int = field(
        default=64,
        metadata={"help": "Images per device and step (paper: 64). The contrastive loss sees the global batch "
                          "(all devices) as negatives; gradient accumulation does not add negatives."},
    )
    per_device_eval_batch_size: int = field(default=64, metadata={"help": "Images per device for evaluation loss."})
    logging_steps: float = field(
        default=50, metadata={"help": "Log loss, logit scale, hard-negative accuracy and samples/s every N steps."}
    )
    remove_unused_columns: bool = field(
        default=False,
        metadata={"help": "Must stay False: the collator needs the image, caption and negative_* columns, "
                          "which the model's forward signature does not name."},
    )

    # -- loss -----------------------------------------------------------------------------
    num_hard_negatives: int = field(
        default=0,
        metadata={"help": "Hard-negative captions per image (the paper's HN1/HN2/HN3). 0 trains the classic "
                          "CLIP (or SigLIP) loss."},
    )
    hard_negative_mode: str = field(
        default="replace",
        metadata={"help": "'replace' (the paper): each image's k hard negatives take the place of k random "
                          "in-batch negatives in its row, the row keeps its width. 'append' (NegCLIP style): "
                          "they are added as extra columns.",
                  "choices": list(HARD_NEGATIVE_MODES)},
    )

    num_hard_negative_images: int = field(
        default=0,
        metadata={"help": "Hard-negative images per caption (columns negative_image_1..m: images that do not "
                          "match the caption, e.g. an edited copy of its image; see train.py --paired_edits). "
                          "They enter each caption's side of the loss as its hard negatives (replace or append, "
                          "as hard_negative_mode says) and are never anchors. 0: text-side negatives only."},
    )
    gradient_cache_chunk_size: int | None = field(
        default=None,
        metadata={"help": "Gradient caching (GradCache): encode each batch in chunks of this many images per "
                          "device, so a contrastive batch far larger than the activations that fit trains as ONE "
                          "problem (all its in-batch negatives), with the gradients of the uncached step. Costs "
                          "about one extra forward pass. Unlike gradient_accumulation_steps it keeps the "
                          "negatives; the two combine (each accumulated micro-batch is then chunked)."},
    )

    # -- data -----------------------------------------------------------------------------
    concepts: list[str] | None = field(
        default=None,
        metadata={"help": "Concepts whose keywords are substituted to make hard negatives: built-in names "
                          "(object, color, location, size) or paths to YAML/JSON concept files. Rows whose "
                          "caption has none of the keywords are dropped, as in the paper. Applied by train.py, "
                          "and by the trainer to data that has no negative_* columns yet."},
    )
    substitution_seed: int = field(
        default=0,
        metadata={"help": "Seed of the keyword substitutions (deterministic per row) and of the per-step choice "
                          "of replaced columns, so a resumed run reproduces the uninterrupted one."},
    )
    skip_corrupt_images: bool = field(
        default=False,
        metadata={"help": "Skip rows whose image cannot be decoded (each is logged, and the count is logged as "
                          "skipped_images) instead of stopping with an error naming the file."},
    )
    image_preprocessing: str = field(
        default="auto",
        metadata={"help": "Where images are resized and normalised (hf_hardneg.data.image_pipeline): 'device' "
                          "(DataLoader workers only decode; the GPU finishes the batch), 'cpu' (workers resize and "
                          "crop in uint8, normalise per batch), 'processor' (the image processor per image), or "
                          "'auto': device on a GPU, cpu otherwise.",
                  "choices": ["auto", "device", "cpu", "processor"]},
    )
    text_pad_to_multiple_of: int = field(
        default=8,
        metadata={"help": "Pad texts dynamically to the longest of the batch rounded up to this multiple "
                          "(positives and negatives together, capped at the model's maximum length)."},
    )

    # -- what trains ----------------------------------------------------------------------
    train_parameters: str = field(
        default="all",
        metadata={"help": "Which parameters train: 'all', 'text' (text tower and its projection), 'vision' (image "
                          "tower and its projection) or 'projections' (the two projections only); the logit scale "
                          "trains in every preset. Freezing a tower keeps more of what the model knew.",
                  "choices": ["all", "text", "vision", "projections"]},
    )
    lora_towers: str | None = field(
        default=None,
        metadata={"help": "Train LoRA adapters (peft; pip install 'hf_hardneg[peft]') on the attention projections "
                          "of the 'text' tower, the 'vision' tower or 'both', and nothing else. Checkpoints hold the "
                          "adapters; output_dir gets the merged model as a plain checkpoint (adapters in adapter/).",
                  "choices": ["text", "vision", "both"]},
    )
    lora_rank: int = field(default=8, metadata={"help": "Rank of the LoRA adapters (lora_towers)."})
    lora_alpha: float = field(default=16.0, metadata={"help": "LoRA scaling numerator: updates scale by alpha/rank."})
    lora_dropout: float = field(default=0.0, metadata={"help": "Dropout on the LoRA adapters' input."})
    lora_target_modules: list[str] | None = field(
        default=None,
        metadata={"help": "Names of the linear layers LoRA adapts inside the chosen towers (default: q_proj k_proj "
                          "v_proj out_proj, and query key value for ViT/BERT towers)."},
    )

    # -- checkpoints ----------------------------------------------------------------------
    overwrite_output_dir: bool = field(
        default=False,
        metadata={"help": "Start a new run in an output_dir that holds checkpoint-* folders of an earlier run, "
                          "deleting those folders first. Without it such a run is refused (a new run's "
                          "checkpoints would mix with the old ones, and resuming 'last' would pick the old run's); "
                          "use a new output_dir or --resume_from_checkpoint instead."},
    )
    save_fraction_of_data: float = field(
        default=0.1,
        metadata={"help": "Save a checkpoint after every such fraction of one pass over the training data "
                          "(paper: 0.1), when the dataset has a length and save_steps is left at its default; "
                          "an explicit save_steps wins. 0 disables it and save_steps/save_strategy apply as usual."},
    )

    def __post_init__(self):
        super().__post_init__()
        if self.num_hard_negatives < 0:
            raise ValueError(f"num_hard_negatives must be >= 0 (0 = classic training), got {self.num_hard_negatives}")
        if self.hard_negative_mode not in HARD_NEGATIVE_MODES:
            raise ValueError(f"hard_negative_mode must be one of {HARD_NEGATIVE_MODES}, got {self.hard_negative_mode!r}")
        if self.num_hard_negative_images < 0:
            raise ValueError(f"num_hard_negative_images must be >= 0, got {self.num_hard_negative_images}")
        if self.gradient_cache_chunk_size is not None and self.gradient_cache_chunk_size < 1:
            raise ValueError(f"gradient_cache_chunk_size must be >= 1 (or unset), got {self.gradient_cache_chunk_size}")
        from hf_hardneg.parameter_efficient import LORA_TOWERS, TRAIN_PARAMETER_PRESETS

        if self.train_parameters not in TRAIN_PARAMETER_PRESETS:
            raise ValueError(f"train_parameters must be one of {TRAIN_PARAMETER_PRESETS}, got {self.train_parameters!r}")
        if self.lora_towers is not None:
            if self.lora_towers not in LORA_TOWERS:
                raise ValueError(f"lora_towers must be one of {LORA_TOWERS} (or unset), got {self.lora_towers!r}")
            if self.train_parameters != "all":
                raise ValueError(f"train_parameters={self.train_parameters!r} with lora_towers={self.lora_towers!r}: "
                                 "LoRA trains its adapters only; choose a freezing preset or LoRA")
            if self.lora_rank < 1 or not 0 <= self.lora_dropout < 1:
                raise ValueError(f"lora_rank must be >= 1 and lora_dropout in [0, 1), got {self.lora_rank} and "
                                 f"{self.lora_dropout}")
        if isinstance(self.lora_target_modules, str):
            self.lora_target_modules = [self.lora_target_modules]
        if not 0 <= self.save_fraction_of_data <= 1:
            raise ValueError(f"save_fraction_of_data must be in [0, 1] (0 disables it), got {self.save_fraction_of_data}")
        if self.remove_unused_columns:
            raise ValueError(
                "remove_unused_columns=True would drop the image, caption and negative_* columns before the "
                "collator sees them; leave it False"
            )
        if isinstance(self.concepts, str):  # a single name from Python code or a YAML scalar
            self.concepts = [self.concepts]
        accelerator_config = getattr(self, "accelerator_config", None)
        if accelerator_config is not None and hasattr(accelerator_config, "dispatch_batches"):
            # With dispatch_batches (accelerate's default for IterableDataset, i.e. --streaming), process 0
            # reads each batch and cuts EVERY tensor to the per-process batch size along dim 0. The
            # collator's input_ids hold n*(1+k) texts for n images, so that cut drops the hard negatives
            # (and under several processes hands out the wrong captions). Each process reads its own
            # share of the stream instead.
            if accelerator_config.dispatch_batches:
                raise ValueError(
                    "accelerator_config dispatch_batches=True cuts each batch tensor to the per-process image "
                    "count, which drops the hard-negative captions (input_ids holds n*(1+k) texts); leave it unset"
                )
            accelerator_config.dispatch_batches = False
