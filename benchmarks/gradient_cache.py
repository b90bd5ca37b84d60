"""Gradient caching: peak memory and samples/s of one large contrastive batch, cached against uncached.

Each configuration runs in its own process, so its peak memory is its own: peak RSS
on the CPU (``resource.getrusage``), ``torch.cuda.max_memory_allocated`` on a GPU.
The training step is the trainer's: :func:`hf_hardneg.gradient_cache.gradient_cached_loss`
(or one uncached ``encode_batch`` + loss) followed by ``backward`` and an AdamW step,
on random pixels and random token ids of ``--text-length`` tokens, one hard negative
per image (``--k``) in the paper's replace mode.

    python benchmarks/gradient_cache.py                        # CPU: tiny ViT, batch 1024, chunks of 64
    python benchmarks/gradient_cache.py --device cuda --model vit-b-32 --batch-sizes 1024 4096 --chunk-size 256
    python benchmarks/gradient_cache.py --find-max --device cuda --model vit-b-32   # largest batch that fits

Prints one line per configuration and, with ``--json``, writes them all.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def build_model(name: str):
    import torch
    from transformers import CLIPConfig, CLIPModel

    torch.manual_seed(0)
    if name == "tiny":
        config = CLIPConfig(
            text_config=dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2,
                             vocab_size=1000, max_position_embeddings=32, bos_token_id=998, eos_token_id=999),
            vision_config=dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2,
                               image_size=64, patch_size=8),
            projection_dim=64)
    elif name == "vit-b-32":
        config = CLIPConfig()  # ViT-B/32 with random weights
    else:
        raise SystemExit(f"unknown --model {name!r}; use tiny or vit-b-32")
    return CLIPModel(config)


def run_one(args) -> dict:
    """One configuration in this process: warm-up steps, then timed steps."""
    import torch

    from hf_hardneg.gradient_cache import gradient_cached_loss
    from hf_hardneg.loss import HardNegativeContrastiveLoss, replacement_generator, split_text_embeds
    from hf_hardneg.models import encode_batch, logit_scale_and_bias

    torch.set_num_threads(args.threads or torch.get_num_threads())
    device = torch.device(args.device)
    model = build_model(args.model).to(device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5)
    loss_fn = HardNegativeContrastiveLoss("replace")
    n, k = args.batch_size, args.k
    size = model.config.vision_config.image_size
    vocab = model.config.text_config.vocab_size
    pixels = torch.randn(n, 3, size, size, device=device)
    ids = torch.randint(1, vocab - 2, (n * (1 + k), args.text_length), device=device)
    mask = torch.ones_like(ids)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.bf16)

    def step(i: int) -> None:
        with autocast:
            if args.chunk_size:
                out, _ = gradient_cached_loss(model, pixels, ids, mask, k, args.chunk_size, loss_fn,
                                              generator=replacement_generator(0, i))
            else:
                img, txt = encode_batch(model, pixels, ids, mask)
                pos, neg = split_text_embeds(txt, n, k)
                out = loss_fn(img, pos, neg, logit_scale_and_bias(model)[0], generator=replacement_generator(0, i))
        out.loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    for i in range(args.warmup):
        step(i)
    sync()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    for i in range(args.steps):
        step(args.warmup + i)
    sync()
    elapsed = time.perf_counter() - start
    if device.type == "cuda":
        peak_mib = torch.cuda.max_memory_allocated() / 2**20
    else:
        peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    return {"model": args.model, "device": str(device), "batch_size": n, "k": k, "chunk_size": args.chunk_size,
            "bf16": args.bf16, "steps": args.steps, "samples_per_second": round(n * args.steps / elapsed, 1),
            "seconds_per_step": round(elapsed / args.steps, 3), "peak_memory_mib": round(peak_mib, 1),
            "memory": "cuda max_memory_allocated" if device.type == "cuda" else "process peak RSS"}


def _child(args, batch_size: int, chunk_size: int | None) -> dict | None:
    """Run one configuration in a fresh process; ``None`` if it ran out of memory."""
    cmd = [sys.executable, __file__, "--one", "--device", args.device, "--model", args.model, "--batch-sizes",
           str(batch_size), "--k", str(args.k), "--steps", str(args.steps), "--warmup", str(args.warmup),
           "--text-length", str(args.text_length), "--chunk-size", str(chunk_size or 0)]
    cmd += ["--bf16"] if args.bf16 else []
    cmd += ["--threads", str(args.threads)] if args.threads else []
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        if "out of memory" in done.stderr.lower():
            return None
        raise SystemExit(done.stderr[-3000:])
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--model", default="tiny", help="tiny (2 layers, width 64, 64 px) or vit-b-32 (random weights)")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1024])
    parser.add_argument("--chunk-size", type=int, default=64)
    parser.add_argument("--k", type=int, default=1)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--text-length", type=int, default=24)
    parser.add_argument("--bf16", action="store_true", help="bf16 autocast (fp32 master weights)")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--find-max", action="store_true",
                        help="double the batch from the first --batch-sizes value until it no longer fits, "
                             "cached and uncached")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--one", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        args.batch_size, args.chunk_size = args.batch_sizes[0], args.chunk_size or None
        print(json.dumps(run_one(args)))
        return 0
    rows = []
    if args.find_max:
        for chunk in (None, args.chunk_size):
            batch, largest = args.batch_sizes[0], None
            while (result := _child(args, batch, chunk)) is not None:
                largest = result
                print(json.dumps(result), flush=True)
                batch *= 2
            rows.append({"largest_that_fits": largest, "chunk_size": chunk, "first_refused": batch})
    else:
        for batch in args.batch_sizes:
            for chunk in (None, args.chunk_size):  # alternating, same run
                result = _child(args, batch, chunk)
                rows.append(result if result is not None else {"batch_size": batch, "chunk_size": chunk,
                                                               "out_of_memory": True})
                print(json.dumps(rows[-1]), flush=True)
    summary = {"date": time.strftime("%Y-%m-%d"), "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
               "python": platform.python_version(), "rows": rows}
    if args.json:
        args.json.write_text(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
