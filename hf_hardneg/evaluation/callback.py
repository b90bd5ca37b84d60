"""A ``TrainerCallback`` that keeps the paper's trade-off history: a point per checkpoint, and the plot.

At each save (the paper saves every 10% of an epoch), at each epoch end and once
before training, the model is evaluated by a
:class:`~hf_hardneg.evaluation.evaluator.ConceptRetrievalEvaluator` (concept accuracy
per concept, text-to-image and image-to-text Recall@1/5/10). Points are appended to
``<output_dir>/<run_name>.concept_eval.json`` and the Figure-4 plot is redrawn as
``<output_dir>/<run_name>.tradeoff.png``; :func:`~hf_hardneg.evaluation.plot_tradeoff`
combines several runs' files into one plot.

Who runs the evaluation:

* with :class:`~hf_hardneg.trainer.HardNegCLIPTrainer`, the trainer does, inside
  ``Trainer.evaluate`` (this callback asks for an evaluation at those moments): the
  metrics pass through ``Trainer.log`` as ``eval_concept_accuracy/<concept>``,
  ``eval_t2i_R@5``..., so ``report_to`` integrations see them and
  ``metric_for_best_model`` can use them;
* with any other ``Trainer``, the callback evaluates by itself and adds the points to
  ``state.log_history`` (keys without the ``eval_`` prefix).

Only the main process evaluates; the model is put in eval mode and restored. Not for
DeepSpeed ZeRO-3 / FSDP with sharded parameters: evaluate the saved checkpoints with
``hf-hardneg evaluate``.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any, Sequence

from transformers import TrainerCallback

from .evaluator import ConceptRetrievalEvaluator, metrics_from_results

logger = logging.getLogger(__name__)

__all__ = ["ConceptEvalCallback"]


class ConceptEvalCallback(TrainerCallback):
    """Measure concept accuracy and retrieval at each checkpoint; keep the history file and the plot.

    Args:
        eval_dataset: rows with an image and a caption (e.g. COCO val via
            :func:`hf_hardneg.data.load_coco_captions`); rows sharing
            ``image_key_column`` are one image with several captions.
        concepts: concept names or objects evaluated (each gets its own accuracy).
        tokenizer, image_processor: the model's, as for training.
        output_dir: where history and plot go; default the Trainer's ``output_dir``.
        run_name: name of this run in files and plot legends; default ``args.run_name``.
        evaluate_at_start / evaluate_on_epoch_end: extra evaluations besides saves.
        plot: redraw the trade-off plot at every point (needs matplotlib).
        **evaluator_options: for the :class:`ConceptRetrievalEvaluator` (``max_examples``,
            ``max_retrieval_images``, ``dataset_name``, ``autocast_dtype``, ``batch_size``, columns...).
    """

    def __init__(self, eval_dataset, concepts: Sequence[Any], tokenizer, image_processor,
                 output_dir: str | os.PathLike | None = None, run_name: str | None = None, *,
                 evaluate_at_start: bool = True, evaluate_on_epoch_end: bool = True, plot: bool = True,
                 **evaluator_options: Any):
        self.evaluator = ConceptRetrievalEvaluator(eval_dataset, concepts, tokenizer, image_processor,
                                                   **evaluator_options)
        self.output_dir = None if output_dir is None else Path(output_dir)
        self.run_name = run_name
        self.evaluate_at_start, self.evaluate_on_epoch_end, self.plot = evaluate_at_start, evaluate_on_epoch_end, plot
        self.history: list[dict[str, Any]] = []
        #: set by HardNegCLIPTrainer, which then runs :attr:`evaluator` inside Trainer.evaluate
        self.evaluated_by_trainer = False
        self._epoch_end_pending = False

    @property
    def dataset_name(self) -> str:
        """Names the retrieval set on the plot's x axis."""
        return self.evaluator.dataset_name

    @property
    def concept_set(self):
        return self.evaluator.concept_set

    @property
    def retrieval_set(self):
        return self.evaluator.retrieval_set

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
        """Concept accuracy and retrieval metrics of ``model`` now, as a history point (no bookkeeping)."""
        return self._point_from(self.evaluator.evaluate(model))

    @staticmethod
    def _point_from(results: dict[str, Any]) -> dict[str, Any]:
        concept = results["tasks"]["concept"]["metrics"]
        return {"concept_accuracy": {k: v["accuracy"] for k, v in concept.items() if isinstance(v, dict) and "accuracy" in v},
                "concept_count": {k: v["count"] for k, v in concept.items() if isinstance(v, dict) and "count" in v},
                **{k: v for k, v in metrics_from_results(results).items() if "_R@" in k}}

    def _add_point(self, args, state, measured: dict[str, Any], epoch_end: bool) -> bool:
        """Append a point (or mark the one of this step as an epoch end); False when this step has one already."""
        if self.history and self.history[-1]["step"] == state.global_step:
            self.history[-1]["epoch_end"] = self.history[-1]["epoch_end"] or epoch_end
            self._write(args)
            return False
        point = {"step": int(state.global_step), "epoch": float(state.epoch or 0.0), "epoch_end": epoch_end, **measured}
        self.history.append(point)
        logger.info("step %d: concept accuracy %s, t2i R@5 %.4f", point["step"],
                    {k: round(v, 4) for k, v in point["concept_accuracy"].items()}, point.get("t2i_R@5", float("nan")))
        self._write(args)
        return True

    def _record(self, args, state, model, epoch_end: bool) -> None:
        """Evaluate by ourselves (a plain Trainer) and add the point to the Trainer's log history."""
        if model is None or not state.is_world_process_zero:
            return
        if self.history and self.history[-1]["step"] == state.global_step:
            self._add_point(args, state, {}, epoch_end)
            return
        self._add_point(args, state, self.evaluate(model), epoch_end)
        point = self.history[-1]
        state.log_history.append({"step": point["step"], "epoch": point["epoch"],
                                  **metrics_from_results(self.evaluator.last_results)})

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
        if self.evaluate_at_start and state.global_step == 0 and not self.evaluated_by_trainer:
            self._record(args, state, model, epoch_end=False)  # the trainer's eval_on_start does it otherwise

    def on_step_end(self, args, state, control, **kwargs):
        if self.evaluated_by_trainer and control.should_save:
            control.should_evaluate = True  # every checkpoint gets its point
        return control

    def on_epoch_end(self, args, state, control, model=None, **kwargs):
        if not self.evaluate_on_epoch_end:
            return control
        if not self.evaluated_by_trainer:
            self._record(args, state, model, epoch_end=True)
        elif self.history and self.history[-1]["step"] == state.global_step:
            self._add_point(args, state, {}, epoch_end=True)  # measured at this step's save already
        else:
            self._epoch_end_pending = True
            control.should_evaluate = True
        return control

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        """Under HardNegCLIPTrainer: the evaluation just logged included our evaluator's; record its point."""
        results = self.evaluator.last_results
        if not self.evaluated_by_trainer or not state.is_world_process_zero or results is None:
            return control
        if results.get("settings", {}).get("measured_at_step") != state.global_step:
            return control  # an evaluation without our evaluator (it did not run at this step)
        epoch = float(state.epoch or 0.0)
        epoch_end = self._epoch_end_pending or (epoch > 0 and abs(epoch - round(epoch)) < 1e-6)
        self._epoch_end_pending = False
        self._add_point(args, state, self._point_from(results), epoch_end)
        return control

    def on_save(self, args, state, control, model=None, **kwargs):
        if self.evaluated_by_trainer:
            return control
        epoch = float(state.epoch or 0.0)
        at_epoch_end = epoch > 0 and abs(epoch - round(epoch)) < 1e-6
        self._record(args, state, model, epoch_end=at_epoch_end)
        return control
