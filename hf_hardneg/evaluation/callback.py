"""A ``TrainerCallback`` that measures the paper's trade-off at every checkpoint.

At each save (the paper saves every 10% of an epoch), at each epoch end and
once before training, it evaluates the model being trained on a held-out
captioned set:

* fine-grained concept accuracy (the true caption against all its
  substitutions), per concept and macro-averaged;
* text-to-image Recall@1/5/10 (and image-to-text) over the same images.

Images are encoded once per evaluation and shared by both metrics. Points are
appended to ``<output_dir>/<run_name>.concept_eval.json``, added to the
Trainer's ``state.log_history`` (keys ``concept_accuracy/<concept>`` and
``t2i_R@5`` ...), and the Figure-4 plot is redrawn as
``<output_dir>/<run_name>.tradeoff.png``. Combine several runs' history
files into one plot with :func:`~hf_hardneg.evaluation.plot_tradeoff`.

Only the main process evaluates; the model is put in eval mode for the
evaluation and restored afterwards. Not for DeepSpeed ZeRO-3 / FSDP with
sharded parameters: evaluate the saved checkpoints with ``hf-hardneg evaluate``.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any, Sequence

from transformers import TrainerCallback

from .encoding import Embedder
from .tasks import build_concept_set, build_retrieval_set, score_multiple_choice, score_retrieval

logger = logging.getLogger(__name__)

__all__ = ["ConceptEvalCallback"]


class ConceptEvalCallback(TrainerCallback):
    """Evaluate concept accuracy and COCO-style retrieval at each checkpoint; log, save and plot.

    Args:
        eval_dataset: rows with an image and a caption (e.g. COCO val via
            :func:`hf_hardneg.data.load_coco_captions`); rows sharing
            ``image_key_column`` are one image with several captions.
        concepts: concept names or objects evaluated (each gets its own accuracy).
        tokenizer, image_processor: the model's, as for training.
        output_dir: where history and plot go; default the Trainer's ``output_dir``.
        run_name: name of this run in files and plot legends; default ``args.run_name``.
        max_examples: cap on examples per concept (seeded subset, same at every checkpoint).
        max_retrieval_images: cap on retrieval gallery images (seeded subset).
        evaluate_at_start / evaluate_on_epoch_end: extra evaluations besides saves.
        autocast_dtype: ``"fp16"``/``"bf16"`` to encode under autocast (wider tie tolerance).
    """

    def __init__(
        self,
        eval_dataset,
        concepts: Sequence[Any],
        tokenizer,
        image_processor,
        output_dir: str | os.PathLike | None = None,
        run_name: str | None = None,
        *,
        image_column: str = "image",
        caption_column: str = "caption",
        image_key_column: str | None = "image_id",
        max_examples: int | None = None,
        max_retrieval_images: int | None = None,
        batch_size: int = 64,
        autocast_dtype: str | None = None,
        tie_tolerance: float | None = None,
        evaluate_at_start: bool = True,
        evaluate_on_epoch_end: bool = True,
        plot: bool = True,
        dataset_name: str = "COCO",
        seed: int = 0,
        progress: bool = False,
    ):
        if image_key_column is not None and image_key_column not in eval_dataset.column_names:
            image_key_column = None
        self.concept_set = build_concept_set(eval_dataset, concepts, caption_column=caption_column,
                                             image_column=image_column, image_key_column=image_key_column,
                                             max_examples=max_examples, seed=seed)
        if len(self.concept_set) == 0:
            raise ValueError(f"no caption of the evaluation set contains a keyword of {list(concepts)}: "
                             "nothing to measure concept accuracy on")
        self.retrieval_set = build_retrieval_set(eval_dataset, image_column=image_column,
                                                 caption_column=caption_column, image_key_column=image_key_column,
                                                 max_images=max_retrieval_images, seed=seed)
        self._shared_images = max_retrieval_images is None  # both sets then index the same gallery
        self.tokenizer, self.image_processor = tokenizer, image_processor
        self.output_dir = None if output_dir is None else Path(output_dir)
        self.run_name = run_name
        self.batch_size, self.autocast_dtype, self.tie_tolerance = batch_size, autocast_dtype, tie_tolerance
        self.evaluate_at_start, self.evaluate_on_epoch_end, self.plot = evaluate_at_start, evaluate_on_epoch_end, plot
        self.dataset_name = dataset_name  # names the retrieval set on the plot's x axis
        self.progress = progress
        self.history: list[dict[str, Any]] = []

    # ------------------------------------------------------------------ paths
    def _resolve(self, args) -> tuple[Path, str]:
        out = self.output_dir or Path(args.output_dir)
        name = self.run_name or getattr(args, "run_name", None)
        if not name or name == args.output_dir:  # transformers defaults run_name to output_dir
            name = Path(args.output_dir).name
        return out, str(name).replace(os.sep, "_")

    def history_path(self, args) -> Path:
        out, name = self._resolve(args)
        return out / f"{name}.concept_eval.json"

    def plot_path(self, args) -> Path:
        out, name = self._resolve(args)
        return out / f"{name}.tradeoff.png"

    # ------------------------------------------------------------------ evaluation
    def evaluate(self, model) -> dict[str, Any]:
        """Concept accuracy and retrieval metrics of ``model`` now (no bookkeeping)."""
        embedder = Embedder(model, self.tokenizer, self.image_processor, device=None,
                            autocast_dtype=self.autocast_dtype, batch_size=self.batch_size, progress=self.progress)
        image_embeds = embedder.embed_images(self.retrieval_set.images, desc="eval images") if self._shared_images else None
        concept = score_multiple_choice(embedder, self.concept_set, self.tie_tolerance, desc="concept",
                                        image_embeds=image_embeds)
        retrieval = score_retrieval(embedder, self.retrieval_set, tie_tolerance=self.tie_tolerance,
                                    image_embeds=image_embeds)
        accuracy = {k: v["accuracy"] for k, v in concept.items() if isinstance(v, dict) and "accuracy" in v}
        return {"concept_accuracy": accuracy,
                "concept_count": {k: v["count"] for k, v in concept.items() if isinstance(v, dict) and "count" in v},
                **{k: v for k, v in retrieval.items() if "_R@" in k}}

    def _record(self, args, state, model, epoch_end: bool) -> None:
        if model is None or not state.is_world_process_zero:
            return
        if self.history and self.history[-1]["step"] == state.global_step:
            self.history[-1]["epoch_end"] = self.history[-1]["epoch_end"] or epoch_end
            self._write(args)
            return
        point = {"step": int(state.global_step), "epoch": float(state.epoch or 0.0), "epoch_end": epoch_end,
                 **self.evaluate(model)}
        self.history.append(point)
        logged = {"step": point["step"], "epoch": point["epoch"],
                  **{f"concept_accuracy/{k}": v for k, v in point["concept_accuracy"].items()},
                  **{k: v for k, v in point.items() if "_R@" in k}}
        state.log_history.append(logged)
        logger.info("step %d: concept accuracy %s, t2i R@5 %.4f", point["step"],
                    {k: round(v, 4) for k, v in point["concept_accuracy"].items()}, point.get("t2i_R@5", float("nan")))
        self._write(args)

    def _write(self, args) -> None:
        path = self.history_path(args)
        path.parent.mkdir(parents=True, exist_ok=True)
        _, name = self._resolve(args)
        path.write_text(json.dumps({"run_name": name, "points": self.history}, indent=2) + "\n", encoding="utf-8")
        if self.plot:
            from .plotting import plot_tradeoff

            plot_tradeoff({name: self.history}, self.plot_path(args), dataset_name=self.dataset_name)

    # ------------------------------------------------------------------ events
    def on_train_begin(self, args, state, control, model=None, **kwargs):
        path = self.history_path(args)
        if state.global_step > 0 and not self.history and path.is_file():
            # resumed from a checkpoint: keep the points measured up to it
            from .plotting import load_history

            self.history = [p for p in load_history(path)[1] if p["step"] <= state.global_step]
        if self.evaluate_at_start and state.global_step == 0:
            self._record(args, state, model, epoch_end=False)

    def on_epoch_end(self, args, state, control, model=None, **kwargs):
        if self.evaluate_on_epoch_end:
            self._record(args, state, model, epoch_end=True)

    def on_save(self, args, state, control, model=None, **kwargs):
        epoch = float(state.epoch or 0.0)
        at_epoch_end = epoch > 0 and abs(epoch - round(epoch)) < 1e-6
        self._record(args, state, model, epoch_end=at_epoch_end)
