"""Evaluation as the Trainer sees it: evaluator metrics go through Trainer.log and pick the best checkpoint."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file
from transformers import TrainerCallback

from hf_hardneg.config import HardNegCLIPConfig
from hf_hardneg.evaluation import ConceptEvalCallback
from hf_hardneg.evaluation.evaluator import ConceptRetrievalEvaluator, results_from_metrics
from hf_hardneg.synthetic import make_synthetic_dataset
from hf_hardneg.testing import make_tiny_model
from hf_hardneg.trainer import HardNegCLIPTrainer

torch.set_num_threads(1)


class SeenByIntegrations(TrainerCallback):
    """What a report_to integration (TensorBoard, W&B: callbacks with on_log) receives."""

    def __init__(self):
        self.logs = []

    def on_log(self, args, state, control, logs=None, **kwargs):
        self.logs.append(dict(logs or {}))


@pytest.fixture(scope="module")
def world():
    train = make_synthetic_dataset(48, seed=0)
    held_out = make_synthetic_dataset(24, seed=0, start=10_000)
    texts = list(train["caption"]) + list(held_out["caption"])
    _, tokenizer, image_processor = make_tiny_model(texts)
    return train, held_out, texts, tokenizer, image_processor


def _model(world):
    return make_tiny_model(world[2])[0]  # seeded: the same random start for every test


def _args(tmp_path, **overrides):
    values = dict(output_dir=str(tmp_path / "out"), concepts=["color"], num_hard_negatives=1,
                  per_device_train_batch_size=8, max_steps=12, learning_rate=3e-3, logging_steps=1,
                  save_strategy="steps", save_steps=3, save_fraction_of_data=0, eval_strategy="steps", eval_steps=3,
                  use_cpu=True, report_to="none", disable_tqdm=True, dataloader_num_workers=0, seed=0)
    values.update(overrides)
    return HardNegCLIPConfig(**values)


def test_best_checkpoint_by_concept_accuracy_is_kept_and_loaded(tmp_path, world):
    train, held_out, _, tokenizer, image_processor = world
    evaluator = ConceptRetrievalEvaluator(held_out, ["color", "size"], tokenizer, image_processor,
                                          dataset_name="synthetic held-out")
    seen = SeenByIntegrations()
    args = _args(tmp_path, metric_for_best_model="concept_accuracy/color", greater_is_better=True,
                 load_best_model_at_end=True)
    trainer = HardNegCLIPTrainer(_model(world), args, train_dataset=train, processing_class=tokenizer,
                                 image_processor=image_processor, evaluator=evaluator, callbacks=[seen])
    trainer.train()

    evaluations = [log for log in trainer.state.log_history if "eval_concept_accuracy/color" in log]
    assert [log["step"] for log in evaluations] == [3, 6, 9, 12]
    assert all({"eval_concept_accuracy/size", "eval_concept_accuracy/macro_average", "eval_t2i_R@5"} <= set(log)
               for log in evaluations)
    # the integrations get the same metrics through Trainer.log
    assert [log for log in seen.logs if "eval_concept_accuracy/color" in log] == [
        {k: v for k, v in log.items() if k != "step"} for log in evaluations]  # the history adds the step
    values = [log["eval_concept_accuracy/color"] for log in evaluations]
    assert len(set(values)) > 1, f"training did not move the metric, the choice would be arbitrary: {values}"
    best_step = evaluations[values.index(max(values))]["step"]  # the first maximum, as the Trainer keeps it
    assert trainer.state.best_model_checkpoint.endswith(f"checkpoint-{best_step}")
    assert trainer.state.best_metric == max(values)
    kept = load_file(f"{trainer.state.best_model_checkpoint}/model.safetensors")
    for name, param in trainer.model.state_dict().items():  # load_best_model_at_end put those weights back
        torch.testing.assert_close(param, kept[name], rtol=0, atol=0, msg=name)

    # each checkpoint's card shows that checkpoint's own evaluation, from the results object
    card = json.loads((tmp_path / "out" / f"checkpoint-{best_step}" / "hardneg_card.json").read_text())
    assert card["eval_results"]["settings"]["measured_at_step"] == best_step
    concept = card["eval_results"]["tasks"]["concept"]
    assert concept["dataset"] == "synthetic held-out" and concept["metrics"]["color"]["accuracy"] == max(values)
    assert concept["metrics"]["color"]["count"] > 0  # the full results, not just the logged numbers


def test_evaluator_without_an_eval_dataset_and_a_callback_share_one_evaluation(tmp_path, world):
    train, held_out, _, tokenizer, image_processor = world
    callback = ConceptEvalCallback(held_out, ["color"], tokenizer, image_processor, run_name="hn1", plot=False)
    args = _args(tmp_path, eval_strategy="no", max_steps=6)
    trainer = HardNegCLIPTrainer(_model(world), args, train_dataset=train, processing_class=tokenizer,
                                 image_processor=image_processor, callbacks=[callback])
    assert trainer.evaluators == [callback.evaluator] and trainer.args.eval_on_start
    assert args.eval_on_start is False  # the caller's arguments are left as they were
    trainer.train()
    # 48 rows at batch 8: an epoch every 6 steps; points before training, at the saves and at the epoch end
    assert [p["step"] for p in callback.history] == [0, 3, 6]
    assert [p["epoch_end"] for p in callback.history] == [False, False, True]
    logged = [log for log in trainer.state.log_history if "eval_concept_accuracy/color" in log]
    assert [log["step"] for log in logged] == [0, 3, 6]  # evaluated once per point, through Trainer.log
    for point, log in zip(callback.history, logged):
        assert point["concept_accuracy"]["color"] == log["eval_concept_accuracy/color"]
        assert point["t2i_R@5"] == log["eval_t2i_R@5"]
    # a folder's trainer_state.json gives the same results back (hf-hardneg push of a card-less folder)
    rebuilt = results_from_metrics(logged[-1], "eval_", step=6)
    assert rebuilt["tasks"]["concept"]["metrics"]["color"]["accuracy"] == logged[-1]["eval_concept_accuracy/color"]
