"""Training throughput: HardNegCLIPTrainer against a minimal hand-written PyTorch loop.

Both train the same architecture (CLIP ViT-B/32 with random weights, built from
``CLIPConfig()``'s defaults) on the same in-memory batches, with bf16 autocast,
fp32 master weights and fused AdamW, and report samples/s and peak GPU memory:

* ``trainer``: ``HardNegCLIPTrainer.train()`` with a collator that hands back
  prepared CPU tensors (DataLoader with pinned memory, like a real run);
* ``hand``: ``forward -> loss -> backward -> AdamW.step`` in a plain loop, the
  batch copied to the GPU from pinned memory each step. Its loss is written
  inline (``--hand-loss inline``, default) or is hf_hardneg's loss module
  (``--hand-loss library``), which separates trainer overhead from loss cost.

Texts are padded to ``--text-length`` tokens (24: COCO captions are ~15 tokens,
dynamic padding rounds to a multiple of 8). Timing starts after ``--warmup``
steps and synchronises the GPU at both ends. Gradient clipping is off in both.

    python benchmarks/train_throughput.py                          # GPU: batch 64 and 256, k = 0, 1, 3
    python benchmarks/train_throughput.py --batch-sizes 256 --ks 1 --compile
    python benchmarks/train_throughput.py --tiny                   # CPU smoke check, tiny model
    python benchmarks/train_throughput.py --decode-only --workers 8   # images/s of the collator on coco-mini

``--decode-only`` measures the CPU side instead: images/s of
``HardNegativeCollator`` (JPEG draft decoding + image processor + tokenizer) on
the real JPEGs of ../shared/data/coco-mini, repeated, through a DataLoader with
``--workers`` processes, with and without draft decoding.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
DEFAULT_COCO = Path(os.environ.get("HF_HARDNEG_COCO_MINI", REPO.parent / "shared" / "data" / "coco-mini"))


# -- model and data ------------------------------------------------------------------------------


def build_model(tiny: bool, seed: int = 0):
    from transformers import CLIPConfig, CLIPModel

    torch.manual_seed(seed)
    if tiny:
        config = CLIPConfig(
            text_config=dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2,
                             vocab_size=1000, max_position_embeddings=32, bos_token_id=998, eos_token_id=999),
            vision_config=dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2,
                               image_size=32, patch_size=8),
            projection_dim=32,
        )
    else:
        config = CLIPConfig()  # the defaults are ViT-B/32 with its text tower (openai/clip-vit-base-patch32)
    return CLIPModel(config)


def make_batch(model, batch_size: int, k: int, text_length: int, seed: int = 0) -> dict:
    """CPU tensors shaped like the collator's output: n images, n*(1+k) texts (positives, then negatives)."""
    generator = torch.Generator().manual_seed(seed)
    vision, text = model.config.vision_config, model.config.text_config
    num_texts = batch_size * (1 + k)
    pixel_values = torch.randn(batch_size, 3, vision.image_size, vision.image_size, generator=generator)
    lengths = torch.randint(text_length // 2, text_length + 1, (num_texts,), generator=generator)
    input_ids = torch.randint(1, text.vocab_size - 2, (num_texts, text_length), generator=generator)
    positions = torch.arange(text_length)[None]
    input_ids[positions == (lengths[:, None] - 1)] = text.eos_token_id
    attention_mask = (positions < lengths[:, None]).long()
    input_ids[attention_mask == 0] = text.pad_token_id if text.pad_token_id is not None else 0
    return {"pixel_values": pixel_values, "input_ids": input_ids, "attention_mask": attention_mask,
            "num_hard_negatives": k}


# -- the two training loops ----------------------------------------------------------------------


def inline_loss(image_embeds, text_embeds, batch_size: int, k: int, scale, generator):
    """The paper's loss written out plainly (replace mode), as a hand-written loop would."""
    image_embeds = F.normalize(image_embeds.float(), dim=-1)
    text_embeds = F.normalize(text_embeds.float(), dim=-1)
    positives = text_embeds[:batch_size]
    logits = scale * image_embeds @ positives.T
    labels = torch.arange(batch_size, device=logits.device)
    logits_per_text = logits.T
    if k:
        negatives = text_embeds[batch_size:].view(batch_size, k, -1)
        own = scale * torch.einsum("nd,nkd->nk", image_embeds, negatives)
        scores = torch.rand(batch_size, batch_size, generator=generator).fill_diagonal_(-1.0)
        columns = scores.topk(k, dim=1).indices.to(logits.device)  # k random off-diagonal columns per row
        logits = logits.scatter(1, columns, own)
    return 0.5 * (F.cross_entropy(logits, labels) + F.cross_entropy(logits_per_text, labels))


def run_hand(model, batch, args, device) -> dict:
    from hf_hardneg.loss import HardNegativeContrastiveLoss, replacement_generator, split_text_embeds
    from hf_hardneg.models import encode_batch, logit_scale_and_bias

    model.to(device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=5e-6, weight_decay=0.1,
                                  fused=device.type == "cuda")
    forward = torch.compile(model) if args.compile else model
    library_loss = HardNegativeContrastiveLoss("replace")
    k, n = batch["num_hard_negatives"], batch["pixel_values"].shape[0]
    pinned = {key: value.pin_memory() if device.type == "cuda" else value
              for key, value in batch.items() if torch.is_tensor(value)}
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.precision == "bf16")
    times = []
    for step in range(args.warmup + args.steps):
        inputs = {key: value.to(device, non_blocking=True) for key, value in pinned.items()}
        with autocast:
            image_embeds, text_embeds = encode_batch(forward, inputs["pixel_values"], inputs["input_ids"],
                                                     inputs["attention_mask"])
            scale = logit_scale_and_bias(model)[0]
            if args.hand_loss == "library":
                positives, negatives = split_text_embeds(text_embeds, n)
                loss = library_loss(image_embeds, positives, negatives, scale,
                                    generator=replacement_generator(0, step)).loss
            else:
                loss = inline_loss(image_embeds, text_embeds, n, k, scale, torch.Generator().manual_seed(step))
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if step + 1 in (args.warmup, args.warmup + args.steps):
            if device.type == "cuda":
                torch.cuda.synchronize()
            times.append(time.perf_counter())
    return {"seconds": times[1] - times[0], "final_loss": float(loss)}


class _Clock:
    """TrainerCallback recording the time at the end of the warm-up and at the last step."""

    def __init__(self, marks, device):
        from transformers import TrainerCallback

        clock = self

        class Callback(TrainerCallback):
            def on_step_end(self, args, state, control, **kwargs):
                if state.global_step in marks:
                    if device.type == "cuda":
                        torch.cuda.synchronize()
                    clock.times.append(time.perf_counter())

        self.times = []
        self.callback = Callback()


def run_trainer(model, batch, args, device, output_dir) -> dict:
    from hf_hardneg.config import HardNegCLIPConfig
    from hf_hardneg.trainer import HardNegCLIPTrainer

    k = batch["num_hard_negatives"]
    n = batch["pixel_values"].shape[0]
    total = args.warmup + args.steps
    config = HardNegCLIPConfig(
        output_dir=str(output_dir), num_hard_negatives=k, per_device_train_batch_size=n, max_steps=total,
        bf16=args.precision == "bf16", optim="adamw_torch_fused" if device.type == "cuda" else "adamw_torch",
        max_grad_norm=0.0, logging_steps=10**9, save_strategy="no", report_to="none", disable_tqdm=True,
        dataloader_num_workers=0, dataloader_pin_memory=device.type == "cuda", use_cpu=device.type != "cuda",
        torch_compile=args.compile, seed=0,
    )
    clock = _Clock({args.warmup, total}, device)
    trainer = HardNegCLIPTrainer(model, config, data_collator=lambda rows: dict(batch),
                                 train_dataset=list(range(n * total)), callbacks=[clock.callback])
    result = trainer.train()
    return {"seconds": clock.times[1] - clock.times[0], "final_loss": result.training_loss}


# -- runs ----------------------------------------------------------------------------------------


def measure(impl: str, batch_size: int, k: int, args, device) -> dict:
    import tempfile

    model = build_model(args.tiny)
    batch = make_batch(model, batch_size, k, args.text_length)
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    with tempfile.TemporaryDirectory() as tmp:
        run = run_hand(model, batch, args, device) if impl == "hand" else run_trainer(model, batch, args, device, tmp)
    row = {"impl": impl, "batch": batch_size, "k": k, "steps": args.steps,
           "samples_per_s": round(batch_size * args.steps / run["seconds"], 1),
           "peak_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2) if device.type == "cuda" else None,
           "final_loss": round(run["final_loss"], 4)}
    del model, batch
    gc.collect()
    return row


def decode_benchmark(args) -> list[dict]:
    """Images/s of the collator on real COCO JPEGs through a DataLoader (CPU only)."""
    from datasets import Dataset, Image
    from torch.utils.data import DataLoader
    from transformers import CLIPImageProcessor

    from hf_hardneg.collator import HardNegativeCollator
    from hf_hardneg.testing import build_word_tokenizer

    files = sorted(str(p) for p in (args.coco / "images").glob("*/*.jpg"))
    if not files:
        sys.exit(f"no JPEGs under {args.coco / 'images'}; pass --coco")
    paths = (files * (args.images // len(files) + 1))[: args.images]
    captions = ["a white cat sits under a black umbrella"] * len(paths)
    dataset = Dataset.from_dict({"image": paths, "caption": captions, "negative_1": captions})
    dataset = dataset.cast_column("image", Image(decode=False))
    tokenizer = build_word_tokenizer(captions[:1], max_length=77)
    processor = CLIPImageProcessor(size={"shortest_edge": 224}, crop_size={"height": 224, "width": 224})
    rows = []
    for draft in (True, False):
        collator = HardNegativeCollator(tokenizer, processor, draft_decode=draft)
        loader = DataLoader(dataset, batch_size=64, collate_fn=collator, num_workers=args.workers,
                            persistent_workers=False, prefetch_factor=4 if args.workers else None)
        start, cpu_start, count = time.perf_counter(), time.process_time(), 0
        for batch in loader:
            count += batch["pixel_values"].shape[0]
        seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
        rows.append({"draft_decode": draft, "workers": args.workers, "images": count,
                     "images_per_s": round(count / seconds, 1),
                     # with --workers 0 all work is in this process: the rate of one busy core
                     "images_per_cpu_s": round(count / cpu_seconds, 1) if args.workers == 0 else None})
        print(json.dumps(rows[-1]), flush=True)
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=None)
    parser.add_argument("--ks", type=int, nargs="+", default=[0, 1, 3])
    parser.add_argument("--impls", nargs="+", default=["hand", "trainer"], choices=["hand", "trainer"])
    parser.add_argument("--warmup", type=int, default=None)
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--text-length", type=int, default=24)
    parser.add_argument("--precision", choices=["bf16", "fp32"], default=None)
    parser.add_argument("--hand-loss", choices=["inline", "library"], default="inline")
    parser.add_argument("--compile", action="store_true", help="torch.compile the model in both loops")
    parser.add_argument("--tiny", action="store_true", help="tiny model on CPU: a smoke check of this script")
    parser.add_argument("--decode-only", action="store_true", help="measure the collator's images/s instead")
    parser.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1))
    parser.add_argument("--images", type=int, default=2048)
    parser.add_argument("--coco", type=Path, default=DEFAULT_COCO)
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args(argv)

    if args.decode_only:
        rows = decode_benchmark(args)
    else:
        device = torch.device("cuda" if torch.cuda.is_available() and not args.tiny else "cpu")
        if device.type == "cpu" and not args.tiny:
            sys.exit("no GPU found: pass --tiny for a CPU smoke check")
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        if args.tiny:
            torch.set_num_threads(1)
        args.batch_sizes = args.batch_sizes or ([8] if args.tiny else [64, 256])
        args.warmup = args.warmup if args.warmup is not None else (1 if args.tiny else 10)
        args.steps = args.steps if args.steps is not None else (3 if args.tiny else 30)
        args.precision = args.precision or ("fp32" if device.type == "cpu" else "bf16")
        print(f"device={torch.cuda.get_device_name() if device.type == 'cuda' else platform.processor() or 'cpu'} "
              f"torch={torch.__version__} precision={args.precision} compile={args.compile}", flush=True)
        rows = []
        for batch_size in args.batch_sizes:
            for k in args.ks:
                pair = {impl: measure(impl, batch_size, k, args, device) for impl in args.impls}
                for row in pair.values():
                    rows.append(row)
                    print(json.dumps(row), flush=True)
                if len(pair) == 2:
                    ratio = pair["trainer"]["samples_per_s"] / pair["hand"]["samples_per_s"]
                    print(f"batch {batch_size} k={k}: trainer/hand = {ratio:.3f}", flush=True)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
