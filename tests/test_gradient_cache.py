"""Gradient caching gives the gradients of the uncached full-batch step.

Compared in float64 (the two computations then agree to ~1e-12 whatever the CPU),
for both losses, both modes, k = 0, 1, 3, chunks that do not divide the batch, with
dropout (random state replayed per chunk), autocast, gradient checkpointing, in the
trainer, across a resume, and with two real processes (gloo).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from hf_hardneg.collator import HardNegativeCollator
from hf_hardneg.data.prepare import prepare_image_column
from hf_hardneg.gradient_cache import gradient_cached_loss
from hf_hardneg.loss import build_loss_for, replacement_generator, split_text_embeds
from hf_hardneg.models import encode_batch, logit_scale_and_bias
from hf_hardneg.testing import make_tiny_model
from hf_hardneg.trainer import HardNegCLIPTrainer

from _float_tolerance import FLOAT32_EPS
from test_trainer import FirstStepGrads, load_tiny, make_args, make_rows

torch.set_num_threads(1)
TESTS = Path(__file__).resolve().parent


def _batch(captions, kind, k, num_rows=8, dropout=0.0):
    model, tokenizer, image_processor = make_tiny_model(captions, kind=kind)
    if dropout:  # attention dropout: the attention modules keep their rate as a float
        for module in model.modules():
            if isinstance(getattr(module, "dropout", None), float):
                module.dropout = dropout
    collator = HardNegativeCollator(tokenizer, image_processor, num_hard_negatives=k,
                                    padding="max_length" if kind == "siglip" else "longest")
    rows = list(prepare_image_column(make_rows(captions, num_rows=num_rows, k=k)))
    return model.double(), collator(rows)


def _grads(model):
    return {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}


def _uncached_step(model, batch, k, loss_fn, seed=5):
    model.zero_grad()
    image_embeds, text_embeds = encode_batch(model, batch["pixel_values"], batch["input_ids"], batch["attention_mask"])
    positives, negatives = split_text_embeds(text_embeds, batch["pixel_values"].shape[0], k)
    scale, bias = logit_scale_and_bias(model)
    out = loss_fn(image_embeds, positives, negatives, scale, bias, generator=replacement_generator(seed, 0))
    out.loss.backward()
    return out.loss.item(), _grads(model)


def _cached_step(model, batch, k, loss_fn, chunk_size, seed=5):
    model.zero_grad()
    out, _ = gradient_cached_loss(model, batch["pixel_values"], batch["input_ids"], batch["attention_mask"], k,
                                  chunk_size, loss_fn, generator=replacement_generator(seed, 0))
    out.loss.backward()
    return out.loss.item(), _grads(model)


def _assert_same(got, expected):
    assert got.keys() == expected.keys()
    for name, grad in expected.items():
        torch.testing.assert_close(got[name], grad, atol=1e-12, rtol=1e-9, msg=name)


@pytest.mark.parametrize("k", [0, 1, 3])
@pytest.mark.parametrize("mode", ["replace", "append"])
@pytest.mark.parametrize("kind", ["clip", "siglip"])
def test_cached_step_has_the_uncached_gradients(tiny_captions, kind, mode, k):
    model, batch = _batch(tiny_captions, kind, k)
    loss_fn = build_loss_for(model, mode)
    loss, expected = _uncached_step(model, batch, k, loss_fn)
    assert len(expected) == len([p for p in model.parameters() if p.requires_grad])  # every parameter has one
    cached_loss, got = _cached_step(model, batch, k, loss_fn, chunk_size=3)  # chunks of 3, 3, 2
    assert cached_loss == pytest.approx(loss, rel=1e-12)
    _assert_same(got, expected)


def test_dropout_is_replayed_per_chunk(tiny_captions):
    # with dropout the reference is the chunked forward drawing the same random numbers in the same order
    model, batch = _batch(tiny_captions, "clip", 2, dropout=0.3)
    model.train()
    loss_fn = build_loss_for(model, "replace")
    torch.manual_seed(11)
    _, got = _cached_step(model, batch, 2, loss_fn, chunk_size=3)

    torch.manual_seed(11)
    model.zero_grad()
    n, k, parts = 8, 2, []
    for start in range(0, n, 3):
        stop = min(start + 3, n)
        rows = torch.cat([torch.arange(start, stop), n + torch.arange(start * k, stop * k)])
        parts.append(encode_batch(model, batch["pixel_values"][start:stop], batch["input_ids"][rows],
                                  batch["attention_mask"][rows]))
    images = torch.cat([img for img, _ in parts])
    positives = torch.cat([txt[: len(img)] for img, txt in parts])
    negatives = torch.cat([txt[len(img):].reshape(len(img), k, -1) for img, txt in parts])
    scale, _ = logit_scale_and_bias(model)
    loss_fn(images, positives, negatives, scale, generator=replacement_generator(5, 0)).loss.backward()
    _assert_same(got, _grads(model))

    torch.manual_seed(12)  # other random numbers give other masks: the comparison above can fail
    _, other = _cached_step(model, batch, 2, loss_fn, chunk_size=3)
    assert any(not torch.allclose(other[n], g) for n, g in got.items())


def test_autocast_and_gradient_checkpointing_are_replayed(tiny_captions):
    model, batch = _batch(tiny_captions, "clip", 1)
    loss_fn = build_loss_for(model, "append")
    _, expected = _uncached_step(model, batch, 1, loss_fn)
    model.gradient_checkpointing_enable()
    model.train()
    _, got = _cached_step(model, batch, 1, loss_fn, chunk_size=5)
    _assert_same(got, expected)

    # under autocast both passes of a chunk run in bfloat16: the cached step equals the same chunks done at once
    model = model.float()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        _, cached = _cached_step(model, batch, 1, loss_fn, chunk_size=8)
        _, plain = _uncached_step(model, batch, 1, loss_fn)
    for name, grad in plain.items():  # one chunk of 8 = the whole batch: the same bf16 kernels
        torch.testing.assert_close(cached[name], grad, atol=8 * FLOAT32_EPS, rtol=8 * FLOAT32_EPS, msg=name)


def test_trainer_with_gradient_cache_and_accumulation(tmp_path, tiny_clip_dir, tiny_captions):
    grads = []
    for chunk in (None, 3):
        model, tokenizer, image_processor = load_tiny(tiny_clip_dir, torch.float64)
        capture = FirstStepGrads()
        args = make_args(tmp_path / str(chunk), num_hard_negatives=2, hard_negative_mode="replace", max_steps=1,
                         max_grad_norm=0.0, gradient_accumulation_steps=2, gradient_cache_chunk_size=chunk)
        trainer = HardNegCLIPTrainer(model, args, train_dataset=make_rows(tiny_captions, k=2),
                                     processing_class=tokenizer, image_processor=image_processor, callbacks=[capture])
        trainer.train()
        grads.append(capture.grads)
        logged = [log for log in trainer.state.log_history if "loss" in log]
        assert logged and "hard_negative_accuracy" in logged[0]
    _assert_same(grads[1], grads[0])


def test_resumed_cached_run_reproduces_the_uninterrupted_one(tmp_path, tiny_clip_dir, tiny_captions):
    from test_trainer_resume import StopAfter, _losses

    rows = make_rows(tiny_captions, num_rows=12, k=2)

    def run(output_dir, resume=None, callbacks=()):
        model, tokenizer, image_processor = load_tiny(tiny_clip_dir, torch.float64)
        args = make_args(output_dir, num_hard_negatives=2, hard_negative_mode="replace", max_steps=6,
                         save_strategy="steps", save_steps=3, save_fraction_of_data=0, substitution_seed=4,
                         gradient_cache_chunk_size=3)
        trainer = HardNegCLIPTrainer(model, args, train_dataset=rows, processing_class=tokenizer,
                                     image_processor=image_processor, callbacks=list(callbacks))
        trainer.train(resume_from_checkpoint=resume)
        return trainer

    full = _losses(run(tmp_path / "full"))
    run(tmp_path / "job", callbacks=[StopAfter(3)])
    resumed = _losses(run(tmp_path / "job", resume="last"))
    assert sorted(resumed) == sorted(full) == list(range(1, 7))
    for step in range(1, 7):
        assert resumed[step] == pytest.approx(full[step], rel=4 * FLOAT32_EPS), f"step {step}"


WORKER = textwrap.dedent("""
    import json, sys
    import torch
    torch.set_num_threads(1)
    sys.path[:0] = [{tests!r}, {repo!r}]
    from conftest import TINY_CAPTIONS as TINY
    from test_trainer import load_tiny, make_args, make_rows, FirstStepGrads
    from hf_hardneg.trainer import HardNegCLIPTrainer
    from pathlib import Path

    class CountingTrainer(HardNegCLIPTrainer):
        # counts DDP's gradient all-reduces (one per bucket per synchronised backward)

        reductions = 0

        def training_step(self, model, *args, **kwargs):
            if not getattr(model, "_counted", False) and hasattr(model, "register_comm_hook"):
                from torch.distributed.algorithms.ddp_comm_hooks.default_hooks import allreduce_hook

                def counting(state, bucket):
                    type(self).reductions += 1
                    return allreduce_hook(state, bucket)

                model.register_comm_hook(None, counting)
                model._counted = True
            return super().training_step(model, *args, **kwargs)

    out = {{}}
    for name, case in json.loads({cases!r}).items():
        model, tokenizer, image_processor = load_tiny({model!r}, torch.float64)
        capture = FirstStepGrads()
        args = make_args(Path({out_dir!r}) / name, **case)
        CountingTrainer.reductions = 0
        trainer = CountingTrainer(model, args, train_dataset=make_rows(TINY, num_rows=8, k=case["num_hard_negatives"]),
                                  processing_class=tokenizer, image_processor=image_processor, callbacks=[capture])
        trainer.train()
        out[name] = {{n: g.tolist() for n, g in capture.grads.items()}}
        out[name + "/reductions"] = CountingTrainer.reductions
    if trainer.is_world_process_zero():
        Path({result!r}).write_text(json.dumps(out))
    trainer.end_distributed_run()  # as train.py ends: no gloo group left to interpreter shutdown
""")


@pytest.mark.slow
def test_two_processes_cached_equal_one_process_uncached(tmp_path, tiny_clip_dir, tiny_captions):
    # 2 processes x 4 images, chunks of 3 (3 + 1 per process), against 1 process x 8 images without caching;
    # k = 3 catches positives and negatives gathered in the wrong interleaving
    common = dict(max_steps=1, optim="sgd", learning_rate=0.5, weight_decay=0.0, max_grad_norm=0.0)
    cases = {f"{mode}-k3": dict(common, num_hard_negatives=3, hard_negative_mode=mode) for mode in ("replace", "append")}
    ddp_cases = {n: dict(c, per_device_train_batch_size=4, gradient_cache_chunk_size=3) for n, c in cases.items()}
    ddp_cases["uncached"] = dict(cases["append-k3"], per_device_train_batch_size=4)  # how many reductions are due
    script = tmp_path / "worker.py"
    script.write_text(WORKER.format(tests=str(TESTS), repo=str(TESTS.parent), model=str(tiny_clip_dir),
                                    out_dir=str(tmp_path / "ddp"), result=str(tmp_path / "grads.json"),
                                    cases=json.dumps(ddp_cases)))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           str(script)], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    distributed = json.loads((tmp_path / "grads.json").read_text())
    for name, case in cases.items():
        model, tokenizer, image_processor = load_tiny(tiny_clip_dir, torch.float64)
        capture = FirstStepGrads()
        trainer = HardNegCLIPTrainer(model, make_args(tmp_path / "single" / name, per_device_train_batch_size=8,
                                                      **case),
                                     train_dataset=make_rows(tiny_captions, num_rows=8, k=3),
                                     processing_class=tokenizer, image_processor=image_processor, callbacks=[capture])
        trainer.train()
        got = {n: torch.tensor(g, dtype=torch.float64) for n, g in distributed[name].items()}
        _assert_same(got, capture.grads)
        # the chunk passes but the last skip DDP's reduction: gradients are reduced once, as without caching
        assert distributed[f"{name}/reductions"] == distributed["uncached/reductions"] > 0


@pytest.mark.parametrize("mode", ["replace", "append"])
@pytest.mark.parametrize("kind", ["clip", "siglip"])
def test_cached_step_with_hard_negative_images(tiny_captions, kind, mode):
    model, batch = _batch(tiny_captions, kind, 1)
    negative_pixels = torch.flip(batch["pixel_values"], dims=[-1]).repeat_interleave(2, dim=0)  # m = 2 per caption
    loss_fn = build_loss_for(model, mode)

    model.zero_grad()
    embeds, texts = encode_batch(model, torch.cat([batch["pixel_values"], negative_pixels]), batch["input_ids"],
                                 batch["attention_mask"])
    positives, negatives = split_text_embeds(texts, 8, 1)
    scale, bias = logit_scale_and_bias(model)
    out = loss_fn(embeds[:8], positives, negatives, scale, bias, generator=replacement_generator(5, 0),
                  hard_negative_image_embeds=embeds[8:].reshape(8, 2, -1))
    out.loss.backward()
    expected = _grads(model)

    model.zero_grad()
    cached, _ = gradient_cached_loss(model, batch["pixel_values"], batch["input_ids"], batch["attention_mask"], 1, 3,
                                     loss_fn, generator=replacement_generator(5, 0),
                                     negative_pixel_values=negative_pixels)
    cached.loss.backward()
    assert cached.loss.item() == pytest.approx(out.loss.item(), rel=1e-12)
    assert cached.image_hard_negative_accuracy.item() == out.image_hard_negative_accuracy.item()
    _assert_same(_grads(model), expected)
