"""resume_from_checkpoint continues exactly: same batches, same replaced columns, same losses."""

from __future__ import annotations

import pytest
import torch
from transformers import TrainerCallback

from _float_tolerance import FLOAT32_EPS
from hf_hardneg.trainer import HardNegCLIPTrainer

from test_trainer import load_tiny, make_args, make_rows

torch.set_num_threads(1)


class StopAfter(TrainerCallback):
    """Simulates an interrupted job: stop right after the checkpoint of step `step` is written."""

    def __init__(self, step: int):
        self.step = step

    def on_save(self, args, state, control, **kwargs):
        if state.global_step >= self.step:
            control.should_training_stop = True
        return control


def _losses(trainer) -> dict[int, float]:
    return {log["step"]: log["loss"] for log in trainer.state.log_history if "loss" in log}


def test_resumed_run_reproduces_the_uninterrupted_losses(tmp_path, tiny_clip_dir, tiny_captions):
    # replace mode: the randomly replaced columns must come back the same after resuming
    # 12 rows at 4 per step = 3 steps per epoch: the resume point (step 4) lies inside the second epoch
    rows = make_rows(tiny_captions, num_rows=12, k=2)

    def run(output_dir, resume=None, callbacks=()):
        # float64: the resumed run reloads weights and optimizer state, and its losses then agree with the
        # uninterrupted run's to float64 rounding, whatever the CPU's kernels
        model, tokenizer, image_processor = load_tiny(tiny_clip_dir, torch.float64)
        args = make_args(output_dir, num_hard_negatives=2, hard_negative_mode="replace", max_steps=7,
                         save_strategy="steps", save_steps=4, save_fraction_of_data=0, substitution_seed=11)
        trainer = HardNegCLIPTrainer(model, args, train_dataset=rows, processing_class=tokenizer,
                                     image_processor=image_processor, callbacks=list(callbacks))
        trainer.train(resume_from_checkpoint=resume)
        return trainer

    full = _losses(run(tmp_path / "full"))
    assert sorted(full) == list(range(1, 8))

    interrupted = run(tmp_path / "job", callbacks=[StopAfter(4)])
    assert sorted(_losses(interrupted)) == [1, 2, 3, 4]
    checkpoint = tmp_path / "job" / "out" / "checkpoint-4"
    assert (checkpoint / "model.safetensors").is_file() and (checkpoint / "preprocessor_config.json").is_file()

    resumed = _losses(run(tmp_path / "job", resume=str(checkpoint)))  # history of steps 1-4 comes back too
    assert sorted(resumed) == list(range(1, 8))
    assert all(resumed[step] == full[step] for step in (1, 2, 3, 4))
    for step in (5, 6, 7):
        # logged losses pass through the Trainer's float32 sum: equal up to one float32 rounding
        assert resumed[step] == pytest.approx(full[step], rel=4 * FLOAT32_EPS), f"step {step}"
