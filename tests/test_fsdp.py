"""FSDP2: two real CPU processes (gloo) with ``fully_shard`` train exactly like one process on the global batch.

accelerate's ``--use_fsdp`` falls back to plain DDP on CPU, so this test shards with
``torch.distributed.fsdp.fully_shard`` directly (hf_hardneg.fsdp.shard_dual_encoder) and
runs the library's encode-and-loss path: loss, every gradient and every parameter after
three AdamW steps must equal the one-process run (float64; see the tolerances below), for
k = 1 and 3; the gathered full state dict must load with ``CLIPModel.from_pretrained``.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from hf_hardneg.fsdp import make_fsdp2_ready

TESTS = Path(__file__).resolve().parent

WORKER = textwrap.dedent("""
    import json, os, sys
    import torch
    import torch.distributed as dist
    torch.set_num_threads(1)
    sys.path[:0] = [{tests!r}, {repo!r}]
    from conftest import TINY_CAPTIONS
    from test_trainer import load_tiny, make_rows
    from hf_hardneg.collator import HardNegativeCollator
    from hf_hardneg.data.prepare import prepare_image_column
    from hf_hardneg.fsdp import full_state_dict, shard_dual_encoder
    from hf_hardneg.loss import HardNegativeContrastiveLoss, replacement_generator, split_text_embeds
    from hf_hardneg.models import encode_batch

    rank, world = int(sys.argv[1]), int(sys.argv[2])
    dist.init_process_group("gloo", init_method="tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    from torch.distributed.device_mesh import init_device_mesh
    mesh = init_device_mesh("cpu", (world,))
    out = {{}}
    for k in (1, 3):
        rows = list(prepare_image_column(make_rows(TINY_CAPTIONS, num_rows=16, k=k)))
        model, tokenizer, image_processor = load_tiny({model!r}, torch.float64)
        collator = HardNegativeCollator(tokenizer, image_processor, num_hard_negatives=k)

        def train(model, batch_rows, gather, steps=3):
            optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.0)
            loss_fn = HardNegativeContrastiveLoss("replace", gather_across_processes=gather)
            losses, grads = [], []
            for step in range(steps):
                batch = collator(batch_rows)
                n = batch["pixel_values"].shape[0]
                img, txt, scale, bias = encode_batch(model, batch["pixel_values"], batch["input_ids"],
                                                     batch["attention_mask"], with_logit_scale=True)
                pos, neg = split_text_embeds(txt, n, k)
                loss = loss_fn(img, pos, neg, scale, bias, generator=replacement_generator(7, step)).loss
                loss.backward()
                total = loss.detach().clone()
                if gather:
                    dist.all_reduce(total)
                    total /= world
                losses.append(total.item())
                full = {{}}
                for name, p in model.named_parameters():
                    g = p.grad.full_tensor() if hasattr(p.grad, "full_tensor") else p.grad
                    full[name.replace("_checkpoint_wrapped_module.", "")] = g.reshape(-1)
                grads.append(full)
                optimizer.step()
                optimizer.zero_grad()
            return losses, grads

        reference_losses, reference_grads = train(load_tiny({model!r}, torch.float64)[0], rows, gather=False)
        sharded = shard_dual_encoder(model, mesh)
        losses, grads = train(sharded, rows[rank * 8:(rank + 1) * 8], gather=True)
        state = full_state_dict(sharded)
        reference_model = load_tiny({model!r}, torch.float64)[0]
        train(reference_model, rows, gather=False)  # the same three steps again: its final parameters
        err_grad = max((grads[s][n] - reference_grads[s][n]).abs().max().item()
                       for s in range(3) for n in reference_grads[s])
        err_param = max((state[n] - p.detach()).abs().max().item() for n, p in reference_model.state_dict().items())
        moved = sum(not torch.equal(p.detach(), load_tiny({model!r}, torch.float64)[0].state_dict()[n])
                    for n, p in reference_model.state_dict().items())
        out[f"k{{k}}"] = dict(losses=losses, reference_losses=reference_losses, grad=err_grad, param=err_param,
                              moved=moved, total=len(state), logit_scale_shape=list(state["logit_scale"].shape))
        if rank == 0 and k == 3:
            from safetensors.torch import save_file
            model_dir = {out_dir!r}
            os.makedirs(model_dir, exist_ok=True)
            reference_model.config.save_pretrained(model_dir)
            save_file({{n: t.contiguous() for n, t in state.items()}}, os.path.join(model_dir, "model.safetensors"))
    if rank == 0:
        with open({result!r}, "w") as handle:
            json.dump(out, handle)
    dist.destroy_process_group()
""")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_scalar_parameters_become_one_element_but_checkpoints_keep_their_shape(tiny_clip_dir, tmp_path):
    from transformers import CLIPModel

    model = CLIPModel.from_pretrained(tiny_clip_dir)
    before = model.logit_scale.detach().clone()
    assert make_fsdp2_ready(model) == ["logit_scale"] and make_fsdp2_ready(model) == ["logit_scale"]  # idempotent
    assert model.logit_scale.shape == (1,) and model.state_dict()["logit_scale"].shape == ()
    model.save_pretrained(tmp_path / "saved")
    again = CLIPModel.from_pretrained(tmp_path / "saved")
    assert again.logit_scale.shape == () and torch.equal(again.logit_scale.detach(), before)
    model.load_state_dict(again.state_dict())  # a 0-dim entry loads into the 1-element parameter
    with torch.no_grad():  # the forward broadcasts the 1-element scale like the scalar
        ids = torch.tensor([[2, 5, 6, 3]])
        a = model(input_ids=ids, pixel_values=torch.zeros(1, 3, 32, 32)).logits_per_image
        b = again(input_ids=ids, pixel_values=torch.zeros(1, 3, 32, 32)).logits_per_image
    torch.testing.assert_close(a, b, rtol=0, atol=0)


@pytest.mark.slow
def test_two_processes_with_fully_shard_equal_one_process(tmp_path, tiny_clip_dir):
    from transformers import CLIPModel

    script = tmp_path / "worker.py"
    script.write_text(WORKER.format(tests=str(TESTS), repo=str(TESTS.parent), model=str(tiny_clip_dir),
                                    port=_free_port(), out_dir=str(tmp_path / "saved"),
                                    result=str(tmp_path / "result.json")))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    procs = [subprocess.Popen([sys.executable, str(script), str(r), "2"], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True) for r in range(2)]
    logs = [p.communicate(timeout=600)[0] for p in procs]
    for r, (p, log) in enumerate(zip(procs, logs)):
        assert p.returncode == 0, f"rank {r}:\n{log[-4000:]}"
    result = json.loads((tmp_path / "result.json").read_text())
    for k in ("k1", "k3"):
        case = result[k]
        assert case["losses"] == pytest.approx(case["reference_losses"], rel=1e-12), k
        # Gradients: float64 sums in another order differ by ~1e-15 relative. Parameters: AdamW divides by
        # sqrt(v) + eps, so a coordinate whose gradient is near eps (1e-8) moves by up to lr/eps = 1e5 times
        # its gradient's difference per step: 3 steps x 1e5 x 1e-14 = 3e-9 is the bound the arithmetic gives.
        assert case["grad"] < 1e-11, (k, case["grad"])
        assert case["param"] < 3e-9, (k, case["param"])
        assert case["moved"] > 0.9 * case["total"]  # the comparison is about parameters that trained
        assert case["logit_scale_shape"] == []  # the gathered state dict has CLIP's 0-dim scale
    loaded = CLIPModel.from_pretrained(tmp_path / "saved", dtype=torch.float64)  # an ordinary checkpoint
    assert loaded.logit_scale.shape == ()
