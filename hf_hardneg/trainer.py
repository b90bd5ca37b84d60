"""`HardNegCLIPTrainer`: the transformers `Trainer` for dual encoders with hard-negative captions.

The Trainer runs the loop (devices, mixed precision, accumulation, checkpoints,
resuming, logging integrations); this class only adds what it cannot guess:

* the loss -- a module from :mod:`hf_hardneg.loss`, picked for the model family
  by ``build_loss_for`` (InfoNCE for CLIP-like models, sigmoid for SigLIP);
  ``compute_loss`` encodes the batch in ONE forward call (so DDP syncs the
  gradients) and hands the embeddings to it;
* gradient-accumulation scaling -- the loss of a micro-batch is a mean over
  that micro-batch, so the Trainer divides it by the number of micro-batches.
  Accumulating m micro-batches of size b therefore gives the gradient of the
  MEAN of m contrastive losses over b images each; it is not the loss of one
  batch of m*b images (each micro-batch only sees its own b-1 in-batch
  negatives). Increase the per-device batch or the number of devices to add
  negatives;
* reproducible randomness -- in ``replace`` mode the columns that hard
  negatives take over are drawn from a generator seeded by
  (``substitution_seed``, optimizer step, micro-batch), identical on every
  process and again after ``resume_from_checkpoint``;
* metrics -- logit scale, hard-negative accuracy, samples/s, the share of
  wall time spent waiting for data, and skipped corrupt images, summed over
  processes and flushed in :meth:`log`;
* the image processor is saved next to the weights and tokenizer in every
  checkpoint and in ``save_model``, so each checkpoint loads with
  ``AutoModel``/``AutoTokenizer``/``AutoImageProcessor``; ``push_to_hub``
  uploads the hard-negative model card of :mod:`hf_hardneg.model_card`.

``torch.compile`` (``torch_compile=True``, optionally ``torch_compile_backend`` /
``torch_compile_mode``): the Trainer compiles the model, and ``compute_loss``
calls it through its ``forward``, so the towers run compiled (tests/test_trainer.py
checks that the compiled path trains). The loss and the metric bookkeeping run eagerly after it: a few kernels
next to the towers. The loss compiles on its own without graph breaks when the
replaced columns are drawn beforehand (``hf_hardneg.loss.draw_replacement_columns``);
drawing them from a generator inside it, as this trainer does, breaks the graph
there. Dynamic text padding (multiples of 8, capped at the model maximum) keeps
the number of distinct text shapes -- hence recompilations -- small;
``dataloader_drop_last=True`` avoids one more for a short last batch.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import math
import os
import time
from functools import partial
from typing import Any, Callable

import torch
from torch import nn
from transformers import Trainer
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

from hf_hardneg.collator import HardNegativeCollator
from hf_hardneg.data.image_pipeline import finish_images
from hf_hardneg.config import HardNegCLIPConfig
from hf_hardneg.data.prepare import prepare_dataset
from hf_hardneg.gradient_cache import gradient_cached_loss
from hf_hardneg.loss import build_loss_for, replacement_generator, split_text_embeds
from hf_hardneg.models import encode_batch, family_of, max_text_length

logger = logging.getLogger(__name__)

__all__ = ["HardNegCLIPTrainer"]

# parameters never decayed besides the Trainer's (biases, norms): decaying the temperature or the
# sigmoid bias pulls the learned calibration toward 0, which is not regularisation
_NO_DECAY_SUFFIXES = ("logit_scale", "logit_bias")
# TrainingArguments' own save_steps default: any other value is the user's explicit choice
_DEFAULT_SAVE_STEPS = next(f.default for f in dataclasses.fields(HardNegCLIPConfig) if f.name == "save_steps")



@dataclasses.dataclass
class _MetricSums:
    """One logging window's sums for one mode (train/eval), summed over processes only when logged.

    What is computed on the device (logit scale, rows won) stays there, so recording a
    micro-batch costs no host sync; counts known on the host stay Python numbers.
    """

    scale: torch.Tensor  # sum of the logit scale over micro-batches (0-d, float64, on the device)
    correct: torch.Tensor  # rows whose positive beat each of their hard negatives
    image_correct: torch.Tensor  # captions whose image beat each of their hard-negative images
    micro_batches: float = 0.0
    rows_with_negatives: float = 0.0
    rows_with_negative_images: float = 0.0
    rows: float = 0.0
    skipped: float = 0.0

    _DEVICE = ("scale", "correct", "image_correct")
    _HOST = ("micro_batches", "rows_with_negatives", "rows_with_negative_images", "rows", "skipped")

    def __add__(self, other: "_MetricSums") -> "_MetricSums":
        return _MetricSums(*(getattr(self, f) + getattr(other, f) for f in (*self._DEVICE, *self._HOST)))

    def reduce(self, accelerator) -> dict[str, float]:
        """Every field summed over all processes (one collective)."""
        host = torch.tensor([getattr(self, f) for f in self._HOST], dtype=torch.float64, device=self.scale.device)
        device = torch.stack([getattr(self, f) for f in self._DEVICE])
        totals = accelerator.reduce(torch.cat([device, host]), reduction="sum")
        return dict(zip((*self._DEVICE, *self._HOST), totals.tolist()))


def _is_stream(dataset: Any) -> bool:
    """A ``datasets.IterableDataset`` (``--streaming``): trained as a :class:`~hf_hardneg.data.streaming.ResumableStream`."""
    try:
        import datasets
    except ImportError:  # pragma: no cover
        return False
    return isinstance(dataset, datasets.IterableDataset)


def _merged_results(evaluators: list, step: int) -> dict[str, Any] | None:
    """The ``last_results`` of the evaluators that keep them, as one results dict measured at ``step``."""
    tasks: dict[str, Any] = {}
    for evaluator in evaluators:
        results = getattr(evaluator, "last_results", None)
        if results:
            results.setdefault("settings", {})["measured_at_step"] = step
            tasks.update(results.get("tasks", {}))
    return {"settings": {"measured_at_step": step}, "tasks": tasks} if tasks else None


def _split_processing(processing_class: Any, image_processor: Any) -> tuple[Any, Any]:
    """(tokenizer, image processor) from a processor object or a tokenizer plus ``image_processor``."""
    tokenizer = getattr(processing_class, "tokenizer", processing_class)
    if image_processor is None:
        image_processor = getattr(processing_class, "image_processor", None)
    return tokenizer, image_processor


class HardNegCLIPTrainer(Trainer):
    """Train a CLIP-style dual encoder with hard-negative captions.

    Args:
        model: a ``CLIPModel``, ``SiglipModel``, ``VisionTextDualEncoderModel`` (or
            Siglip2) instance.
        args: a :class:`~hf_hardneg.config.HardNegCLIPConfig` (the paper's recipe by default).
        data_collator: defaults to a :class:`~hf_hardneg.collator.HardNegativeCollator`
            built from the tokenizer, image processor and ``args``.
        train_dataset / eval_dataset: rows with an image, a caption and, for
            ``num_hard_negatives=k > 0``, the columns ``negative_1..negative_k``
            (see :func:`hf_hardneg.substitution.add_hard_negatives`). When they lack
            those columns and ``args.concepts`` is set, they are added (and only rows
            with a keyword kept); a ``datasets`` Image column is switched to
            ``decode=False`` (see :mod:`hf_hardneg.data.prepare`).
        processing_class: the tokenizer, or a processor holding ``tokenizer`` and
            ``image_processor`` (e.g. ``CLIPProcessor``).
        image_processor: the image processor when ``processing_class`` is a tokenizer;
            it is saved with every checkpoint.
        loss: a loss module to use instead of ``build_loss_for(model, args.hard_negative_mode)``.
        evaluator: a callable ``model -> {name: value}`` (or a list of them), e.g. a
            :class:`~hf_hardneg.evaluation.evaluator.ConceptRetrievalEvaluator`, run in every
            ``evaluate``: its metrics are logged with the ``eval_`` prefix, so any
            ``report_to`` sees them and ``metric_for_best_model`` (e.g.
            ``"concept_accuracy/color"``) with ``load_best_model_at_end`` keeps the best
            checkpoint. The evaluator of a :class:`~hf_hardneg.evaluation.ConceptEvalCallback`
            among the callbacks is run this way too.
        image_column / caption_column: dataset columns for the default collator.
        **kwargs: anything else ``Trainer`` accepts (callbacks, compute_metrics, ...).

    Example::

        args = HardNegCLIPConfig(output_dir="out", num_hard_negatives=1, concepts=["color"])
        trainer = HardNegCLIPTrainer(model, args, train_dataset=ds, processing_class=tokenizer,
                                     image_processor=image_processor)
        trainer.train()
    """

    # compute_loss returns a per-micro-batch mean: the Trainer divides it by the accumulation steps
    loss_is_scaled_for_ga = False

    def __init__(
        self,
        model: nn.Module,
        args: HardNegCLIPConfig | None = None,
        data_collator: Any = None,
        train_dataset: Any = None,
        eval_dataset: Any = None,
        processing_class: Any = None,
        image_processor: Any = None,
        loss: nn.Module | None = None,
        evaluator: Callable[[nn.Module], dict[str, float]] | list | None = None,
        image_column: str = "image",
        caption_column: str = "caption",
        **kwargs: Any,
    ):
        if args is None:
            args = HardNegCLIPConfig(output_dir="hardneg_clip_output")
        if not isinstance(args, HardNegCLIPConfig):
            raise TypeError(
                f"args must be a HardNegCLIPConfig (got {type(args).__name__}); it carries the hard-negative "
                "fields and the paper's defaults: HardNegCLIPConfig(output_dir=..., **your_training_arguments)"
            )
        args = copy.copy(args)  # schedules derived below (save_steps from save_fraction_of_data) stay ours
        from hf_hardneg.parameter_efficient import prepare_trainable_parameters

        model = prepare_trainable_parameters(model, args)  # freezing preset or LoRA adapters (train_parameters)
        tokenizer, image_processor = _split_processing(processing_class, image_processor)
        if data_collator is None:
            if tokenizer is None or image_processor is None:
                raise ValueError(
                    "pass processing_class (the tokenizer, or a processor with tokenizer and image_processor) "
                    "and image_processor, or a ready data_collator"
                )
            data_collator = HardNegativeCollator(
                tokenizer=tokenizer,
                image_processor=image_processor,
                image_column=image_column,
                caption_column=caption_column,
                num_hard_negatives=args.num_hard_negatives,
                num_hard_negative_images=args.num_hard_negative_images,
                pad_to_multiple_of=args.text_pad_to_multiple_of,
                max_length=max_text_length(model, tokenizer),
                padding=family_of(model).text_padding,
                skip_corrupt_images=args.skip_corrupt_images,
                image_preprocessing=args.image_preprocessing,
            )
        image_column = getattr(data_collator, "image_column", image_column)
        caption_column = getattr(data_collator, "caption_column", caption_column)

        def prepare(dataset):
            # columns known up front fail here, not in a DataLoader worker at step 1; a custom collator may read others
            check = isinstance(data_collator, HardNegativeCollator)
            return prepare_dataset(dataset, args, image_column=image_column if check else None,
                                   caption_column=caption_column, role="the", name_flags=False)

        train_dataset = prepare(train_dataset)
        if isinstance(eval_dataset, dict):
            eval_dataset = {name: prepare(dataset) for name, dataset in eval_dataset.items()}
        else:
            eval_dataset = prepare(eval_dataset)

        # Evaluators need no eval_dataset, but the Trainer refuses an evaluation strategy without one: let it
        # check the arguments without the strategy, then put the strategy back.
        from hf_hardneg.evaluation.callback import ConceptEvalCallback

        eval_strategy = args.eval_strategy
        evaluates_anyway = evaluator is not None or any(
            isinstance(cb, ConceptEvalCallback) for cb in kwargs.get("callbacks") or [])
        if eval_dataset is None and evaluates_anyway:
            args.eval_strategy = "no"
        super().__init__(
            model=model,
            args=args,
            data_collator=data_collator,
            train_dataset=train_dataset,
            eval_dataset=eval_dataset,
            processing_class=processing_class,
            **kwargs,
        )
        self.args.eval_strategy = eval_strategy
        # CLIP-like forwards take **kwargs, which would make the Trainer think the model normalises the
        # loss over the whole accumulated batch (num_items_in_batch) and skip the division.
        self.model_accepts_loss_kwargs = False
        # every checkpoint folder gets a model card, written after any evaluation callback of that save
        from hf_hardneg.model_card import ModelCardCallback, find_model_card_callback

        if find_model_card_callback(self) is None:
            self.add_callback(ModelCardCallback())
        if isinstance(self.data_collator, HardNegativeCollator):  # "auto" images: the device tier on a GPU
            if self.data_collator.image_preprocessing == "auto":
                self.data_collator.image_preprocessing = args.image_preprocessing
            self.data_collator.for_device(self.args.device)
        self.image_processor = image_processor if image_processor is not getattr(
            processing_class, "image_processor", None) else None
        if self.is_fsdp_enabled:  # FSDP2 refuses 0-dim parameters (CLIP's logit_scale); checkpoints keep the shape
            from hf_hardneg.fsdp import make_fsdp2_ready

            make_fsdp2_ready(self.model)
        if args.gradient_cache_chunk_size and (self.is_fsdp_enabled or self.is_deepspeed_enabled):
            raise ValueError("gradient_cache_chunk_size is not supported with FSDP or DeepSpeed yet (the cached "
                             "logit-scale gradient needs the whole parameter); use DDP, or leave it unset")
        self.loss_fn = loss if loss is not None else build_loss_for(self.model, args.hard_negative_mode)
        self.evaluators = list(evaluator) if isinstance(evaluator, (list, tuple)) else \
            ([evaluator] if evaluator is not None else [])
        self._adopt_evaluation_callbacks()
        self._apply_save_fraction()
        self._evaluators_pending = False
        self._stream_skip_batches = 0
        # mode -> (device sums, host sums) of the logging window; see _MetricSums
        self._metric_sums: dict[str, _MetricSums] = {}
        self._window_start: float | None = None
        self._data_seconds = 0.0
        self._micro_step = (-1, 0)  # (global step, micro-batch index within it)
        self._eval_batch_index = 0
        self._skipped_images: dict[str, int] = {}

    # -- set-up ------------------------------------------------------------------------------

    def _adopt_evaluation_callbacks(self) -> None:
        """Run the evaluators of ConceptEvalCallbacks inside Trainer.evaluate, so their metrics reach Trainer.log."""
        from hf_hardneg.evaluation.callback import ConceptEvalCallback

        for callback in self.callback_handler.callbacks:
            if isinstance(callback, ConceptEvalCallback) and not callback.evaluated_by_trainer:
                callback.evaluated_by_trainer = True
                self.evaluators.append(callback.evaluator)
                if callback.evaluate_at_start:
                    self.args.eval_on_start = True

    def _apply_save_fraction(self) -> None:
        """Turn ``save_fraction_of_data`` into ``save_steps`` (optimizer steps per that share of one epoch).

        A ``save_steps`` other than ``TrainingArguments``' default (500) was chosen by the
        user and is kept: silently saving on another schedule than the one asked for
        surprises more than it helps.
        """
        fraction = self.args.save_fraction_of_data
        if not fraction or self.args.save_strategy != "steps" or self.train_dataset is None:
            return
        if self.args.save_steps != _DEFAULT_SAVE_STEPS:
            logger.info("save_steps=%s was set, so it applies instead of save_fraction_of_data=%s",
                        self.args.save_steps, fraction)
            return
        try:
            num_rows = len(self.train_dataset)
        except TypeError:
            logger.info("training data has no length (streaming); save_fraction_of_data does not apply, "
                        "saving every save_steps=%s steps", self.args.save_steps)
            return
        rows_per_step = self.args.train_batch_size * self.args.world_size * self.args.gradient_accumulation_steps
        batches = num_rows / (self.args.train_batch_size * self.args.world_size)
        batches = math.floor(batches) if self.args.dataloader_drop_last else math.ceil(batches)
        steps_per_epoch = max(1, math.ceil(batches / self.args.gradient_accumulation_steps))
        self.args.save_steps = max(1, round(fraction * steps_per_epoch))
        if self.args.load_best_model_at_end and self.args.eval_strategy == "steps" \
                and (self.args.eval_steps or 0) >= 1 and self.args.save_steps % self.args.eval_steps:
            # picking the best checkpoint needs an evaluation at every save
            self.args.eval_steps = self.args.save_steps
        logger.info("saving a checkpoint every %d steps (%.0f%% of %d rows at %d rows per step)",
                    self.args.save_steps, 100 * fraction, num_rows, rows_per_step)

    def _get_dataloader(self, dataset, description, batch_size, sampler_fn=None, is_training=False,
                        dataloader_key=None):
        """Training batches cut from the global batch, so W processes see what one process at W*n sees.

        accelerate would hand out whole per-process batches and pad an epoch's last
        round with rows from the start of the epoch (``even_batches``): extra
        negatives that change a contrastive loss. :class:`GlobalBatchSampler` gives
        each process its slice of the one-process order instead, possibly short or
        empty at the epoch end (the collator then sends a placeholder the loss leaves
        out). Evaluation, streaming and ``batch_rebalance`` sampling stay the Trainer's.
        """
        from torch.utils.data import DataLoader, IterableDataset
        from transformers.trainer_utils import has_length, seed_worker

        from hf_hardneg.data.sampling import GlobalBatchSampler

        if is_training and _is_stream(dataset):
            return self._stream_dataloader(dataset, batch_size)
        sampler = None
        if is_training and not isinstance(dataset, IterableDataset) and has_length(dataset) and sampler_fn:
            sampler = sampler_fn(dataset)
        if sampler is None or isinstance(sampler, torch.utils.data.BatchSampler) \
                or type(sampler).__name__ == "BatchRebalanceSampler":
            return super()._get_dataloader(dataset, description, batch_size, sampler_fn=sampler_fn,
                                           is_training=is_training, dataloader_key=dataloader_key)
        batch_sampler = GlobalBatchSampler(sampler, batch_size, self.accelerator.num_processes,
                                           self.accelerator.process_index, self.args.dataloader_drop_last)
        dataloader = DataLoader(
            dataset, batch_sampler=batch_sampler, collate_fn=self.data_collator,
            num_workers=self.args.dataloader_num_workers, pin_memory=self.args.dataloader_pin_memory,
            persistent_workers=self.args.dataloader_persistent_workers and self.args.dataloader_num_workers > 0,
            multiprocessing_context=self.args.dataloader_multiprocessing_context,
            prefetch_factor=self.args.dataloader_prefetch_factor, in_order=self.args.dataloader_in_order,
            worker_init_fn=partial(seed_worker, num_workers=self.args.dataloader_num_workers,
                                   rank=self.args.process_index))
        dataloader = self.accelerator.prepare(dataloader)
        # accelerate wraps the batch sampler to shard it again; it is rank-aware already: make that a pass-through
        shard = getattr(dataloader, "batch_sampler", None)
        if shard is not None and getattr(shard, "batch_sampler", None) is batch_sampler:
            shard.num_processes, shard.process_index = 1, 0
        return dataloader

    def _stream_dataloader(self, dataset, batch_size: int):
        """A streamed training set as one endless, exactly resumable stream (:mod:`hf_hardneg.data.streaming`)."""
        from accelerate.data_loader import prepare_data_loader
        from torch.utils.data import DataLoader
        from transformers.trainer_utils import seed_worker

        from hf_hardneg.data.streaming import ResumableStream

        stream = ResumableStream(dataset, self.accelerator.process_index, self.accelerator.num_processes, batch_size,
                                 skip_batches=self._stream_skip_batches)
        stream.check_workers(self.args.dataloader_num_workers)
        workers = self.args.dataloader_num_workers
        dataloader = DataLoader(
            stream, batch_size=batch_size, collate_fn=self.data_collator, num_workers=workers,
            pin_memory=self.args.dataloader_pin_memory, persistent_workers=workers > 0,
            prefetch_factor=self.args.dataloader_prefetch_factor, in_order=True,
            worker_init_fn=partial(seed_worker, num_workers=workers, rank=self.args.process_index))
        # the stream is this process's already: placed on the device, not sharded again
        return prepare_data_loader(dataloader, self.accelerator.device, num_processes=1, process_index=0,
                                   put_on_device=True, dispatch_batches=False)

    def _stream_position(self) -> "StreamPosition":
        from hf_hardneg.data.streaming import StreamPosition

        return StreamPosition(self.state.global_step, self.accelerator.num_processes, self.args.dataloader_num_workers,
                              self._train_batch_size, self.args.gradient_accumulation_steps)

    def get_decay_parameter_names(self, model: nn.Module) -> list[str]:
        """The Trainer's choice (no biases, no norms), also without the logit scale and bias."""
        names = super().get_decay_parameter_names(model)
        return [name for name in names if not name.endswith(_NO_DECAY_SUFFIXES)]

    # -- loss --------------------------------------------------------------------------------

    def _generator(self, training: bool) -> torch.Generator | None:
        """Generator for the replaced columns of this micro-batch; a pure function of the run's position."""
        if self.args.num_hard_negatives == 0 or getattr(self.loss_fn, "mode", None) != "replace":
            return None
        if training:
            step, micro = self._micro_step
            micro = micro + 1 if step == self.state.global_step else 0
            self._micro_step = (self.state.global_step, micro)
            position = self.state.global_step * self.args.gradient_accumulation_steps + micro
        else:
            position = -1 - self._eval_batch_index  # a separate, repeatable stream per evaluation batch
            self._eval_batch_index += 1
        return replacement_generator(self.args.substitution_seed, position)

    def compute_loss(
        self,
        model: nn.Module,
        inputs: dict[str, Any],
        return_outputs: bool = False,
        num_items_in_batch: torch.Tensor | int | None = None,
    ):
        """The hard-negative loss of one micro-batch (a mean over its images).

        ``num_items_in_batch`` is accepted for the Trainer's signature and unused:
        a contrastive loss has no per-token normalisation to spread over micro-batches.
        """
        k = int(inputs.get("num_hard_negatives", 0))
        if k != self.args.num_hard_negatives:
            raise ValueError(
                f"the batch has {k} hard negatives per image but the config says num_hard_negatives="
                f"{self.args.num_hard_negatives}; build the collator with num_hard_negatives="
                f"{self.args.num_hard_negatives} or change the config"
            )
        m = int(inputs.get("num_hard_negative_images", 0))
        if m != self.args.num_hard_negative_images:
            raise ValueError(f"the batch has {m} hard-negative images per caption but the config says "
                             f"num_hard_negative_images={self.args.num_hard_negative_images}")
        pixel_values, negative_pixels = inputs["pixel_values"], inputs.get("negative_pixel_values")
        chunk_size = self.args.gradient_cache_chunk_size
        if chunk_size and model.training and torch.is_grad_enabled() and not inputs.get("num_placeholder_images"):
            # the whole batch as one contrastive problem, encoded chunk by chunk (hf_hardneg/gradient_cache.py)
            output, scale = gradient_cached_loss(model, pixel_values, inputs["input_ids"], inputs.get("attention_mask"),
                                                 k, chunk_size, self.loss_fn, generator=self._generator(True),
                                                 negative_pixel_values=negative_pixels)
            self._record(True, scale, output, pixel_values.shape[0], inputs.get("num_skipped_images", 0))
            return (output.loss, output) if return_outputs else output.loss
        num_images = pixel_values.shape[0]
        all_pixels = torch.cat([pixel_values, negative_pixels]) if m else pixel_values
        image_embeds, text_embeds, scale, bias = encode_batch(model, all_pixels, inputs["input_ids"],
                                                             inputs.get("attention_mask"), with_logit_scale=True)
        negative_images = image_embeds[num_images:].reshape(num_images, m, -1) if m else None
        image_embeds = image_embeds[:num_images]
        # A placeholder (this process's share of an epoch's last global batch is empty) runs through the model
        # so that DDP sees every parameter used, and joins the loss's gathers with zero rows; it adds nothing.
        untouched = None
        if inputs.get("num_placeholder_images"):
            untouched = 0.0 * (image_embeds.sum() + text_embeds.sum() + (negative_images.sum() if m else 0.0))
            image_embeds, text_embeds = image_embeds[:0], text_embeds[:0]
            negative_images = negative_images[:0] if m else None
        num_images = image_embeds.shape[0]
        positives, negatives = split_text_embeds(text_embeds, num_images, k)
        extra = {"hard_negative_image_embeds": negative_images} if m else {}
        output = self.loss_fn(image_embeds, positives, negatives, scale, bias,
                              generator=self._generator(model.training), **extra)
        if untouched is not None:
            output.loss = output.loss + untouched
        self._record(model.training, scale, output, num_images, inputs.get("num_skipped_images", 0))
        return (output.loss, output) if return_outputs else output.loss

    def _prepare_inputs(self, inputs: dict[str, Any]) -> dict[str, Any]:
        """Move the batch to the device, then finish device-tier images there (resize, crop, normalise, batched)."""
        inputs = super()._prepare_inputs(inputs)
        if "image_recipe" in inputs:
            inputs = self._prepare_input(finish_images(inputs))  # DeepSpeed's dtype for the new pixel values
        return inputs

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
        """Evaluation loss only: a batch's similarity matrix has no fixed shape to concatenate across batches.

        Retrieval and concept accuracy belong to :mod:`hf_hardneg.evaluation`
        (e.g. its ``ConceptEvalCallback``), which encodes whole datasets.
        """
        inputs = self._prepare_inputs(inputs)
        with torch.no_grad(), self.compute_loss_context_manager():
            loss = self.compute_loss(model, inputs)
        return loss.detach(), None, None

    def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix: str = "eval"):
        """The Trainer's evaluation loss (when there is evaluation data) plus every evaluator's metrics.

        Both are logged together through :meth:`log` and returned with the
        ``metric_key_prefix`` prefix, which is how ``metric_for_best_model`` and the
        ``report_to`` integrations see them. Without evaluation data only the evaluators run.
        """
        self._eval_batch_index = 0  # every evaluation draws the same replaced columns
        start = time.perf_counter()
        try:
            if eval_dataset is None and self.eval_dataset is None and self.evaluators:
                metrics = self._evaluator_metrics(metric_key_prefix)
                metrics[f"{metric_key_prefix}_runtime"] = round(time.perf_counter() - start, 4)
                self.log(metrics)
                self.control = self.callback_handler.on_evaluate(self.args, self.state, self.control, metrics)
                return metrics
            self._evaluators_pending = bool(self.evaluators)
            return super().evaluate(eval_dataset, ignore_keys, metric_key_prefix)
        finally:
            self._evaluators_pending = False
            if self._window_start is not None:  # keep evaluation time out of the training samples/s
                self._window_start += time.perf_counter() - start

    def evaluation_loop(self, dataloader, description, prediction_loss_only=None, ignore_keys=None,
                        metric_key_prefix: str = "eval"):
        """The Trainer's loop; during :meth:`evaluate` the evaluators' metrics join its output (logged once)."""
        output = super().evaluation_loop(dataloader, description, prediction_loss_only, ignore_keys,
                                         metric_key_prefix)
        if self._evaluators_pending:
            self._evaluators_pending = False
            output.metrics.update(self._evaluator_metrics(metric_key_prefix))
        return output

    def _evaluator_metrics(self, prefix: str) -> dict[str, float]:
        """Run the evaluators on the main process; every process gets the metrics (``metric_for_best_model``).

        The evaluators' full results (per-concept counts, every recall) go to the model-card
        callback, so each checkpoint's card shows that checkpoint's evaluation.
        """
        from accelerate.utils import broadcast_object_list

        metrics: dict[str, float] = {}
        if self.is_world_process_zero():
            model = self.accelerator.unwrap_model(self.model)
            for evaluator in self.evaluators:
                metrics.update(evaluator(model))
            results = _merged_results(self.evaluators, self.state.global_step)
            from hf_hardneg.model_card import find_model_card_callback

            card = find_model_card_callback(self)
            if card is not None and results is not None:
                card.training_results = results
        if self.args.world_size > 1:
            metrics = broadcast_object_list([metrics], from_process=0)[0]
        return {f"{prefix}_{name}": value for name, value in metrics.items()}

    # -- metrics -----------------------------------------------------------------------------

    def _record(self, training: bool, scale, output, num_images: int, skipped) -> None:
        """Accumulate one micro-batch's metrics without a host sync.

        Values computed on the device (logit scale, correct hard-negative rows) stay
        there; counts known on the host stay Python numbers. Both are combined and
        summed over processes only when logging.
        """
        mode = "train" if training else "eval"
        if training and self._window_start is None:
            self._window_start = time.perf_counter()
        accuracy = getattr(output, "hard_negative_accuracy", None)
        image_accuracy = getattr(output, "image_hard_negative_accuracy", None)
        with torch.no_grad():
            scale = scale.detach().reshape(()).double()

            def won(share):  # rows won, from a mean over this process's rows
                return share.detach().reshape(()).double() * num_images if share is not None else torch.zeros_like(scale)

            correct, image_correct = won(accuracy), won(image_accuracy)
        sums = _MetricSums(scale, correct, image_correct, 1.0, float(num_images) if accuracy is not None else 0.0,
                           float(num_images) if image_accuracy is not None else 0.0, float(num_images), float(skipped))
        self._metric_sums[mode] = self._metric_sums[mode] + sums if mode in self._metric_sums else sums

    def get_batch_samples(self, *args, **kwargs):
        """The Trainer's batch fetch, timed: the time spent here is time the step waited for data."""
        start = time.perf_counter()
        if self._window_start is None:
            self._window_start = start
        try:
            return super().get_batch_samples(*args, **kwargs)
        finally:
            self._data_seconds += time.perf_counter() - start

    def log(self, logs: dict[str, float], *args, **kwargs) -> None:
        """Add this logging window's metrics, summed over all processes, then log as usual.

        Called by the Trainer on every process; the one collective here relies on that.
        """
        prefix = "eval_" if any(key.startswith("eval_") for key in logs) else ""
        sums = self._metric_sums.pop("eval" if prefix else "train", None)
        if sums is not None:
            totals = sums.reduce(self.accelerator)
            if totals["micro_batches"]:
                logs[f"{prefix}logit_scale"] = round(totals["scale"] / totals["micro_batches"], 4)
            if totals["rows_with_negatives"]:
                logs[f"{prefix}hard_negative_accuracy"] = round(totals["correct"] / totals["rows_with_negatives"], 4)
            if totals["rows_with_negative_images"]:
                logs[f"{prefix}image_hard_negative_accuracy"] = round(
                    totals["image_correct"] / totals["rows_with_negative_images"], 4)
            if self.args.skip_corrupt_images:
                self._skipped_images[prefix] = self._skipped_images.get(prefix, 0) + int(totals["skipped"])
                logs[f"{prefix}skipped_images"] = self._skipped_images[prefix]  # running total
            if not prefix and self._window_start is not None:
                elapsed = max(time.perf_counter() - self._window_start, 1e-9)
                logs["samples_per_second"] = round(totals["rows"] / elapsed, 2)
                logs["data_time_fraction"] = round(min(1.0, self._data_seconds / elapsed), 4)
        if not prefix and sums is not None:
            self._window_start, self._data_seconds = time.perf_counter(), 0.0
        super().log(logs, *args, **kwargs)

    # -- resuming and checkpoints ------------------------------------------------------------

    def train(self, resume_from_checkpoint: str | bool | None = None, trial=None, ignore_keys_for_eval=None,
              **kwargs):
        """``Trainer.train``, with checkpoints that count only once complete (:mod:`hf_hardneg.checkpoints`).

        ``resume_from_checkpoint=True`` (or ``"last"``) resumes the newest *complete*
        checkpoint and names the newer folders it passed over and why; a folder given
        by path must be complete. Without resuming, an ``output_dir`` that already holds
        checkpoints is refused unless ``overwrite_output_dir`` is set, so two runs never mix.
        """
        resume_from_checkpoint = self._checkpoint_to_resume(resume_from_checkpoint)
        self._stream_skip_batches = 0
        if resume_from_checkpoint and _is_stream(self.train_dataset):
            self._resume_stream(resume_from_checkpoint)
        return super().train(resume_from_checkpoint=resume_from_checkpoint, trial=trial,
                             ignore_keys_for_eval=ignore_keys_for_eval, **kwargs)

    def _resume_stream(self, checkpoint: str) -> None:
        """Skip, in the stream itself, the batches the checkpoint's run trained on (the Trainer's skip is off)."""
        from transformers.trainer_callback import TrainerState

        from hf_hardneg.data.streaming import StreamPosition

        recorded = StreamPosition.load(checkpoint)
        step = TrainerState.load_from_json(os.path.join(checkpoint, "trainer_state.json")).global_step
        here = StreamPosition(step, self.accelerator.num_processes, self.args.dataloader_num_workers,
                              self._train_batch_size, self.args.gradient_accumulation_steps)
        if recorded is not None:
            recorded.check_resumable_as(here, checkpoint)
        self._stream_skip_batches = step * self.args.gradient_accumulation_steps
        self.args.ignore_data_skip = True

    def _checkpoint_to_resume(self, resume: str | bool | None) -> str | None:
        from hf_hardneg.checkpoints import checkpoint_problem, list_checkpoints, newest_complete_checkpoint

        output_dir = self.args.output_dir
        if isinstance(resume, str) and resume.strip().lower() in {"last", "true", "latest"}:
            resume = True
        if resume is True:
            newest, skipped = newest_complete_checkpoint(output_dir)
            if self.is_world_process_zero():
                for folder, problem in skipped:
                    logger.warning("not resuming from %s: %s", folder, problem)
            if newest is None:
                found = "; ".join(f"{folder.name}: {problem}" for folder, problem in skipped)
                raise ValueError(
                    f"--resume_from_checkpoint last: no checkpoint in {output_dir} can be resumed"
                    + (f" ({found})" if found else " (it has no checkpoint-* folder)")
                    + "; start without --resume_from_checkpoint (add --overwrite_output_dir if old folders remain)")
            if self.is_world_process_zero():
                logger.warning("resuming from %s", newest)
            return str(newest)
        if resume:
            problem = checkpoint_problem(resume)
            if problem is not None:
                newest, _ = newest_complete_checkpoint(os.path.dirname(os.path.normpath(resume)) or ".")
                hint = f"; the newest complete checkpoint beside it is {newest}" if newest is not None else ""
                raise ValueError(f"--resume_from_checkpoint {resume}: cannot resume, {problem}{hint}")
            return resume
        existing = list_checkpoints(output_dir)
        if existing:
            names = ", ".join(folder.name for folder in existing)
            if not self.args.overwrite_output_dir:
                raise ValueError(
                    f"--output_dir {output_dir} already holds checkpoints of an earlier run ({names}); a new run "
                    "would mix its checkpoints with them. Continue that run with --resume_from_checkpoint last, "
                    "use a new --output_dir, or pass --overwrite_output_dir to delete them first")
            if self.is_world_process_zero():
                import shutil

                logger.warning("--overwrite_output_dir: deleting %s in %s", names, output_dir)
                for folder in existing:
                    shutil.rmtree(folder)
            self.accelerator.wait_for_everyone()
        return None

    def _save_checkpoint(self, model, trial) -> None:
        """The Trainer's checkpoint, marked complete only after every process has written its part.

        A folder of the same name left by an interrupted save is removed first, so no
        stale file of it can pass for part of this save.
        """
        from hf_hardneg.checkpoints import mark_complete, remove_incomplete

        folder = os.path.join(self._get_output_dir(trial=trial), f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}")
        if self.args.should_save and remove_incomplete(folder):
            logger.warning("removed %s, left incomplete by an interrupted save", folder)
        self.accelerator.wait_for_everyone()
        super()._save_checkpoint(model, trial)
        self.accelerator.wait_for_everyone()  # rng states, sharded optimizer states: every process writes
        if self.args.should_save and os.path.isdir(folder):
            if _is_stream(self.train_dataset):
                self._stream_position().save(folder)
            mark_complete(folder)

    # -- saving ------------------------------------------------------------------------------

    def create_model_card(self, language=None, license=None, tags=None, model_name=None, finetuned_from=None,
                          tasks=None, dataset_tags=None, dataset=None, dataset_args=None, **kwargs):
        """Write the hard-negative model card (:mod:`hf_hardneg.model_card`) into ``output_dir``.

        ``Trainer.push_to_hub`` calls this right before uploading; the base method would
        replace the card with transformers' generic one.
        """
        from hf_hardneg.model_card import write_trainer_model_card

        return write_trainer_model_card(
            self, language=language, license=license, tags=tags, model_name=model_name,
            finetuned_from=finetuned_from, tasks=tasks, dataset_tags=dataset_tags, dataset=dataset,
            dataset_args=dataset_args, **kwargs)

    def end_distributed_run(self) -> None:
        """Wait for every process, drop the DDP wrapper, then destroy the process group (call it last).

        Why this order: a gloo process group joins its worker threads when its last reference goes. If that
        reference is the DDP wrapper's reducer, freed while the main thread holds the GIL, and a worker thread
        still needs the GIL to release a finished collective's tensors, the process hangs; a group left to
        interpreter shutdown can instead abort it ("terminate called without an active exception") after a good
        run. So accelerate forgets the prepared objects, the wrapper is dropped and collected, and the group is
        destroyed while the interpreter is alive. Without a process group this only releases references. The
        trainer can still save and evaluate on one process afterwards, not train.
        """
        import gc

        self.accelerator.wait_for_everyone()
        self.accelerator.free_memory()
        self.model_wrapped = self.model
        gc.collect()
        self.accelerator.end_training()

    def _save(self, output_dir: str | None = None, state_dict=None) -> None:
        """Save weights (safetensors) and tokenizer as the Trainer does, plus the image processor.

        With LoRA adapters, checkpoints hold the adapters (to resume); any other folder gets the
        merged model as a plain checkpoint and the adapters in its ``adapter/`` sub-folder.
        """
        from hf_hardneg.parameter_efficient import ADAPTER_FOLDER, is_peft_model, save_merged_model

        folder = output_dir if output_dir is not None else self.args.output_dir
        is_checkpoint = os.path.basename(os.path.normpath(folder)).startswith(PREFIX_CHECKPOINT_DIR)
        if is_peft_model(self.model) and not is_checkpoint:
            super()._save(os.path.join(folder, ADAPTER_FOLDER), state_dict=state_dict)
            if self.args.should_save:
                save_merged_model(self.model, folder)
                if self.processing_class is not None:
                    self.processing_class.save_pretrained(folder)
        else:
            super()._save(output_dir, state_dict=state_dict)
        if self.args.should_save:
            if self.image_processor is not None:
                self.image_processor.save_pretrained(folder)
            # checkpoints get theirs from ModelCardCallback once that save's evaluation has run
            if not os.path.basename(os.path.normpath(folder)).startswith(PREFIX_CHECKPOINT_DIR):
                from hf_hardneg.model_card import write_trainer_model_card

                write_trainer_model_card(self, folder)
