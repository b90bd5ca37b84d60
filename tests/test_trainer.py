"""HardNegCLIPTrainer on tiny models: parameters move, accumulation scales right, metrics, eval, saving."""

from __future__ import annotations

import math

import numpy as np
import PIL.Image
import pytest
import torch
from transformers import TrainerCallback

from _float_tolerance import FLOAT32_EPS
from hf_hardneg.config import HardNegCLIPConfig
from hf_hardneg.loss import HardNegativeContrastiveLoss, replacement_generator, split_text_embeds
from hf_hardneg.models import encode_batch, logit_scale_and_bias
from hf_hardneg.data.prepare import prepare_image_column
from hf_hardneg.trainer import HardNegCLIPTrainer

torch.set_num_threads(1)


def make_rows(captions: list[str], num_rows: int = 16, k: int = 1) -> "datasets.Dataset":  # noqa: F821
    """Random small images; caption i cycles through `captions`; negatives are other captions reversed."""
    from datasets import Dataset

    rng = np.random.default_rng(0)
    data = {
        "image": [PIL.Image.fromarray(rng.integers(0, 255, (36, 40, 3), dtype=np.uint8)) for _ in range(num_rows)],
        "caption": [captions[i % len(captions)] for i in range(num_rows)],
    }
    for j in range(1, k + 1):
        data[f"negative_{j}"] = [" ".join(reversed(captions[(i + j) % len(captions)].split())) for i in range(num_rows)]
    return Dataset.from_dict(data)


def make_args(tmp_path, **overrides) -> HardNegCLIPConfig:
    values = dict(output_dir=str(tmp_path / "out"), per_device_train_batch_size=4, per_device_eval_batch_size=16,
                  learning_rate=1e-3, max_steps=3, logging_steps=1, save_strategy="no", report_to="none",
                  use_cpu=True, disable_tqdm=True, dataloader_num_workers=0, seed=0)
    values.update(overrides)
    return HardNegCLIPConfig(**values)


def load_tiny(path, dtype=torch.float32):
    """The saved tiny model; ``dtype=torch.float64`` where a test compares two computations of one value.

    In float32 such computations agree only to the rounding of a whole forward and backward pass, which
    depends on the CPU's kernels; in float64 they agree to about 1e-12, so tight tolerances hold anywhere.
    """
    from transformers import AutoImageProcessor, AutoModel, AutoTokenizer

    return (AutoModel.from_pretrained(path, dtype=dtype), AutoTokenizer.from_pretrained(path),
            AutoImageProcessor.from_pretrained(path))


class RecordingTrainer(HardNegCLIPTrainer):
    """Keeps a copy of every training micro-batch, to recompute its loss by hand."""

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if model.training:
            self.recorded = getattr(self, "recorded", [])
            self.recorded.append({k: v.clone() if torch.is_tensor(v) else v for k, v in inputs.items()})
        return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)


class FirstStepGrads(TrainerCallback):
    """Gradients as the optimizer is about to apply them at the first step."""

    grads = None

    def on_pre_optimizer_step(self, args, state, control, model=None, **kwargs):
        if self.grads is None:
            self.grads = {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}


def hand_loss(model, batch, generator=None, mode="replace"):
    image_embeds, text_embeds = encode_batch(model, batch["pixel_values"], batch["input_ids"], batch["attention_mask"])
    positives, negatives = split_text_embeds(text_embeds, batch["pixel_values"].shape[0])
    scale, _ = logit_scale_and_bias(model)
    return HardNegativeContrastiveLoss(mode=mode)(image_embeds, positives, negatives, scale, generator=generator).loss


def test_every_trainable_parameter_changes_and_metrics_are_logged(tmp_path, tiny_clip_dir, tiny_captions):
    model, tokenizer, image_processor = load_tiny(tiny_clip_dir)
    before = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    trainer = HardNegCLIPTrainer(model, make_args(tmp_path, num_hard_negatives=2),
                                 train_dataset=make_rows(tiny_captions, k=2),
                                 processing_class=tokenizer, image_processor=image_processor)
    trainer.train()
    unchanged = [n for n, p in trainer.model.named_parameters() if p.requires_grad and torch.equal(p, before[n])]
    assert not unchanged, f"parameters that did not train: {unchanged}"

    steps = [log for log in trainer.state.log_history if "loss" in log]
    assert [log["step"] for log in steps] == [1, 2, 3]
    for log in steps:
        assert math.isfinite(log["loss"])
        assert 0 <= log["hard_negative_accuracy"] <= 1
        assert log["logit_scale"] == pytest.approx(math.exp(trainer.model.logit_scale.item()), rel=0.05)
        assert log["samples_per_second"] > 0 and 0 <= log["data_time_fraction"] <= 1


def test_ending_a_single_process_run_releases_the_prepared_objects_and_keeps_the_model(tmp_path, tiny_clip_dir,
                                                                                         tiny_captions):
    """end_distributed_run (train.py's last step) also works without a process group; saving still works."""
    from transformers import CLIPModel

    model, tokenizer, image_processor = load_tiny(tiny_clip_dir)
    trainer = HardNegCLIPTrainer(model, make_args(tmp_path, max_steps=1), train_dataset=make_rows(tiny_captions, k=1),
                                 processing_class=tokenizer, image_processor=image_processor)
    trainer.train()
    trained = {n: p.detach().clone() for n, p in trainer.model.state_dict().items()}
    trainer.end_distributed_run()
    assert trainer.accelerator._models == [] and trainer.accelerator._optimizers == []
    assert trainer.model_wrapped is trainer.model
    trainer.save_model(str(tmp_path / "final"))
    reloaded = CLIPModel.from_pretrained(tmp_path / "final")
    for name, value in reloaded.state_dict().items():
        assert torch.equal(value, trained[name]), name


def test_gradient_accumulation_averages_micro_batch_losses(tmp_path, tiny_clip_dir, tiny_captions):
    """Accumulating 2 micro-batches of 4 = the gradient of the MEAN of the two micro-batch losses.

    This is the correct scaling, and it is not the loss of one batch of 8: a
    contrastive loss over 8 images has more negatives per row, so accumulation
    adds steps' worth of data, not negatives.
    """
    model, tokenizer, image_processor = load_tiny(tiny_clip_dir, torch.float64)
    grads = FirstStepGrads()
    args = make_args(tmp_path, num_hard_negatives=1, gradient_accumulation_steps=2, max_steps=1,
                     max_grad_norm=0.0, substitution_seed=5)
    trainer = RecordingTrainer(model, args, train_dataset=make_rows(tiny_captions), processing_class=tokenizer,
                               image_processor=image_processor, callbacks=[grads])
    trainer.train()
    first, second = trainer.recorded
    assert first["pixel_values"].shape[0] == second["pixel_values"].shape[0] == 4

    reference, _, _ = load_tiny(tiny_clip_dir, torch.float64)
    # the trainer seeds the replaced columns by (substitution_seed, step * accumulation + micro-batch)
    losses = [hand_loss(reference, batch, replacement_generator(5, i)) for i, batch in enumerate((first, second))]
    ((losses[0] + losses[1]) / 2).backward()
    expected = {n: p.grad for n, p in reference.named_parameters() if p.grad is not None}
    assert expected.keys() == grads.grads.keys()
    for name, grad in expected.items():
        torch.testing.assert_close(grads.grads[name], grad, atol=1e-12, rtol=1e-9, msg=name)
    logged = next(log["loss"] for log in trainer.state.log_history if "loss" in log)
    # the Trainer sums logged losses in a float32 tensor: the float64 value comes back rounded to float32
    assert logged == pytest.approx(((losses[0] + losses[1]) / 2).item(), rel=8 * FLOAT32_EPS)

    def embeddings(batch):
        image_embeds, text_embeds = encode_batch(reference, batch["pixel_values"], batch["input_ids"],
                                                 batch["attention_mask"])
        return (image_embeds, *split_text_embeds(text_embeds, batch["pixel_values"].shape[0]))

    append = HardNegativeContrastiveLoss(mode="append")
    scale = logit_scale_and_bias(reference)[0]
    with torch.no_grad():
        parts = [embeddings(first), embeddings(second)]
        one_batch = append(*[torch.cat(pieces) for pieces in zip(*parts)], scale).loss
        two_batches = (append(*parts[0], scale).loss + append(*parts[1], scale).loss) / 2
    assert not torch.isclose(one_batch, two_batches, rtol=1e-3), "8 images in one batch see more negatives"


def test_evaluation_loss_is_repeatable_and_matches_a_hand_computation(tmp_path, tiny_clip_dir, tiny_captions):
    model, tokenizer, image_processor = load_tiny(tiny_clip_dir, torch.float64)
    rows = make_rows(tiny_captions)
    trainer = RecordingTrainer(model, make_args(tmp_path, num_hard_negatives=1, substitution_seed=3),
                               train_dataset=rows, eval_dataset=rows,
                               processing_class=tokenizer, image_processor=image_processor)
    first, second = trainer.evaluate(), trainer.evaluate()
    assert first["eval_loss"] == second["eval_loss"]
    assert {"eval_logit_scale", "eval_hard_negative_accuracy"} <= set(first)

    # one eval batch of all 16 rows, in order; evaluation batch i uses the stream -1 - i
    batch = trainer.data_collator(list(prepare_image_column(rows)))
    with torch.no_grad():
        expected = hand_loss(model, batch, replacement_generator(3, -1))
    assert first["eval_loss"] == pytest.approx(expected.item(), rel=1e-9)


@pytest.mark.parametrize("kind", ["siglip", "dual_encoder"])
def test_other_dual_encoders_train_a_step(tmp_path, tiny_captions, kind):
    from hf_hardneg.testing import make_tiny_model

    model, tokenizer, image_processor = make_tiny_model(tiny_captions, kind=kind)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    trainer = RecordingTrainer(model, make_args(tmp_path, num_hard_negatives=1, max_steps=1),
                               train_dataset=make_rows(tiny_captions), processing_class=tokenizer,
                               image_processor=image_processor)
    result = trainer.train()
    assert math.isfinite(result.training_loss)
    changed = [n for n, p in trainer.model.named_parameters() if not torch.equal(p, before[n])]
    assert any("vision" in n for n in changed) and any("text" in n for n in changed)
    width = trainer.recorded[0]["input_ids"].shape[1]
    if kind == "siglip":
        assert width == tokenizer.model_max_length  # SigLIP pools the last position: padded to the maximum
        assert any("logit_bias" in n for n in changed)
    else:
        assert width % 8 == 0 and width < tokenizer.model_max_length


def test_corrupt_images_stop_training_or_are_skipped_and_counted(tmp_path, tiny_clip_dir, tiny_captions):
    from datasets import Dataset

    from hf_hardneg.data.images import CorruptImageError

    images = make_rows(tiny_captions, num_rows=8, k=0)["image"]
    paths = []
    for index, image in enumerate(images):
        paths.append(str(tmp_path / f"{index}.png"))
        image.save(paths[-1])
    (tmp_path / "3.png").write_bytes(b"truncated download")
    rows = Dataset.from_dict({"image": paths, "caption": tiny_captions[:8], "image_id": list(range(8))})

    model, tokenizer, image_processor = load_tiny(tiny_clip_dir)
    trainer = HardNegCLIPTrainer(model, make_args(tmp_path, max_steps=2), train_dataset=rows,
                                 processing_class=tokenizer, image_processor=image_processor)
    with pytest.raises(CorruptImageError, match=r"\(image_id=3\).*3\.png.*skip_corrupt_images=True"):
        trainer.train()

    trainer = HardNegCLIPTrainer(model, make_args(tmp_path, max_steps=2, skip_corrupt_images=True),
                                 train_dataset=rows, processing_class=tokenizer, image_processor=image_processor)
    trainer.train()
    logs = [log for log in trainer.state.log_history if "loss" in log]
    # a running total: 0 or 1 after the first batch, 1 after both (the epoch holds the one bad file)
    assert logs[0]["skipped_images"] in (0, 1) and logs[-1]["skipped_images"] == 1


def test_concepts_in_the_config_add_negatives_to_plain_data(tmp_path, tiny_clip_dir, tiny_captions):
    model, tokenizer, image_processor = load_tiny(tiny_clip_dir)
    plain = make_rows(tiny_captions, num_rows=16, k=0)
    args = make_args(tmp_path, num_hard_negatives=2, concepts=["color"], substitution_seed=1, max_steps=1)
    trainer = HardNegCLIPTrainer(model, args, train_dataset=plain, processing_class=tokenizer,
                                 image_processor=image_processor)
    with_color = [c for c in plain["caption"] if any(w in c.split() for w in ("white", "black", "red", "brown",
                                                                               "green", "yellow", "gray", "orange"))]
    assert trainer.train_dataset["caption"] == with_color  # the paper's colour subset, in order
    assert {"negative_1", "negative_2"} <= set(trainer.train_dataset.column_names)
    trainer.train()


def test_classic_run_with_concepts_trains_on_the_same_subset(tmp_path, tiny_clip_dir, tiny_captions):
    """k=0 with concepts: the classic baseline sees exactly the captions the HN run sees, without negatives."""
    model, tokenizer, image_processor = load_tiny(tiny_clip_dir)
    plain = make_rows(tiny_captions, num_rows=16, k=0)
    subsets = {}
    for k in (0, 1):
        args = make_args(tmp_path / f"k{k}", num_hard_negatives=k, concepts=["size"], max_steps=1)
        trainer = HardNegCLIPTrainer(model, args, train_dataset=plain, processing_class=tokenizer,
                                     image_processor=image_processor)
        subsets[k] = trainer.train_dataset
    assert subsets[0]["caption"] == subsets[1]["caption"] and 0 < len(subsets[0]) < len(plain)
    assert not any(name.startswith("negative_") for name in subsets[0].column_names)


def test_gradient_checkpointing_gives_the_same_gradients(tmp_path, tiny_clip_dir, tiny_captions):
    grads = []
    for checkpointing in (False, True):
        model, tokenizer, image_processor = load_tiny(tiny_clip_dir, torch.float64)
        capture = FirstStepGrads()
        flag = "activation_checkpointing" if hasattr(HardNegCLIPConfig, "activation_checkpointing") \
            else "gradient_checkpointing"
        args = make_args(tmp_path, num_hard_negatives=1, max_steps=1, max_grad_norm=0.0, **{flag: checkpointing})
        HardNegCLIPTrainer(model, args, train_dataset=make_rows(tiny_captions), processing_class=tokenizer,
                           image_processor=image_processor, callbacks=[capture]).train()
        grads.append(capture.grads)
    for name, grad in grads[0].items():
        torch.testing.assert_close(grads[1][name], grad, atol=1e-12, rtol=1e-9, msg=name)


def test_torch_compile_path_trains(tmp_path, tiny_clip_dir, tiny_captions):
    model, tokenizer, image_processor = load_tiny(tiny_clip_dir)
    # the "eager" backend runs dynamo's tracing and wrapping without needing a C++ compiler for inductor
    args = make_args(tmp_path, num_hard_negatives=1, max_steps=2, torch_compile=True, torch_compile_backend="eager")
    trainer = HardNegCLIPTrainer(model, args, train_dataset=make_rows(tiny_captions), processing_class=tokenizer,
                                 image_processor=image_processor)
    before = model.text_projection.weight.detach().clone()
    result = trainer.train()
    assert math.isfinite(result.training_loss)
    assert not torch.equal(model.text_projection.weight, before)


def test_saved_model_loads_with_auto_classes(tmp_path, tiny_clip_dir, tiny_captions):
    from transformers import AutoImageProcessor, AutoModel, AutoTokenizer

    model, tokenizer, image_processor = load_tiny(tiny_clip_dir)
    trainer = HardNegCLIPTrainer(model, make_args(tmp_path, max_steps=1), train_dataset=make_rows(tiny_captions, k=0),
                                 processing_class=tokenizer, image_processor=image_processor)
    trainer.train()
    out = tmp_path / "final"
    trainer.save_model(str(out))
    assert (out / "model.safetensors").is_file() and not list(out.glob("pytorch_model*.bin"))
    reloaded = AutoModel.from_pretrained(out)
    assert torch.equal(reloaded.logit_scale, trainer.model.logit_scale)
    assert AutoTokenizer.from_pretrained(out)("a white cat")["input_ids"] == tokenizer("a white cat")["input_ids"]
    assert AutoImageProcessor.from_pretrained(out).crop_size == image_processor.crop_size


def test_save_steps_follow_the_fraction_of_data(tmp_path, tiny_clip_dir, tiny_captions):
    model, tokenizer, image_processor = load_tiny(tiny_clip_dir)
    # 100 rows / (4 per step) = 25 steps per epoch; 10% of the data -> every 2 (2.5 rounded) steps
    args = make_args(tmp_path, save_strategy="steps", save_fraction_of_data=0.1)
    trainer = HardNegCLIPTrainer(model, args, train_dataset=make_rows(tiny_captions, num_rows=100, k=0),
                                 processing_class=tokenizer, image_processor=image_processor)
    assert trainer.args.save_steps == 2
    args = make_args(tmp_path, save_strategy="steps", save_fraction_of_data=0.2, gradient_accumulation_steps=5)
    trainer = HardNegCLIPTrainer(model, args, train_dataset=make_rows(tiny_captions, num_rows=100, k=0),
                                 processing_class=tokenizer, image_processor=image_processor)
    assert trainer.args.save_steps == 1  # 5 optimizer steps per epoch
    args = make_args(tmp_path, save_strategy="steps", save_steps=7, save_fraction_of_data=0)
    trainer = HardNegCLIPTrainer(model, args, train_dataset=make_rows(tiny_captions, k=0),
                                 processing_class=tokenizer, image_processor=image_processor)
    assert trainer.args.save_steps == 7
    # no weight decay on the temperature; the Trainer's rules for biases and norms still apply
    decayed = trainer.get_decay_parameter_names(trainer.model)
    assert "logit_scale" not in decayed and "visual_projection.weight" in decayed
    assert not any(name.endswith("bias") for name in decayed)


def test_paper_defaults_and_validation(tmp_path):
    config = HardNegCLIPConfig(output_dir=str(tmp_path))
    assert (config.learning_rate, config.weight_decay, config.num_train_epochs) == (5e-6, 0.1, 3.0)
    assert config.lr_scheduler_type == "constant" and config.per_device_train_batch_size == 64
    assert config.save_fraction_of_data == 0.1 and config.remove_unused_columns is False
    assert (config.num_hard_negatives, config.hard_negative_mode, config.substitution_seed) == (0, "replace", 0)
    assert HardNegCLIPConfig(output_dir=str(tmp_path), concepts="color").concepts == ["color"]
    with pytest.raises(ValueError, match="num_hard_negatives must be >= 0"):
        HardNegCLIPConfig(output_dir=str(tmp_path), num_hard_negatives=-1)
    with pytest.raises(ValueError, match="hard_negative_mode"):
        HardNegCLIPConfig(output_dir=str(tmp_path), hard_negative_mode="prepend")
    with pytest.raises(ValueError, match="remove_unused_columns"):
        HardNegCLIPConfig(output_dir=str(tmp_path), remove_unused_columns=True)


def test_mismatched_number_of_negatives_is_an_error(tmp_path, tiny_clip_dir, tiny_captions):
    from hf_hardneg.collator import HardNegativeCollator

    model, tokenizer, image_processor = load_tiny(tiny_clip_dir)
    rows = make_rows(tiny_captions, k=2)
    auto = HardNegativeCollator(tokenizer, image_processor)  # counts 2 negative columns
    trainer = HardNegCLIPTrainer(model, make_args(tmp_path, num_hard_negatives=1), data_collator=auto,
                                 train_dataset=rows)
    with pytest.raises(ValueError, match="the batch has 2 hard negatives per image but the config says "
                                         "num_hard_negatives=1"):
        trainer.train()
    with pytest.raises(TypeError, match="must be a HardNegCLIPConfig"):
        from transformers import TrainingArguments

        HardNegCLIPTrainer(model, TrainingArguments(output_dir=str(tmp_path)), data_collator=auto)
