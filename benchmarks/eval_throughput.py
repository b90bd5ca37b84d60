"""Time COCO-val-sized retrieval evaluation and measure its peak memory.

The workload of ``hf-hardneg evaluate --tasks retrieval`` on COCO val2017:
5,000 images and 25,000 captions through a ViT-B/32 CLIP (random weights, the
architecture of ``openai/clip-vit-base-patch32``), then text-to-image and
image-to-text Recall@1/5/10 over the full 25,000 x 5,000 similarity matrix.

Images are given as ready pixel tensors, so the figures are the encoders and
the metric, not JPEG decoding (which scales with ``--num-workers`` and the
disk). Captions are distinct synthetic sentences of 8-20 words, tokenized by a
word-level tokenizer, so the text encoder sees realistic lengths and the
de-duplication finds nothing to skip.

    python benchmarks/eval_throughput.py                        # full size, GPU if present
    python benchmarks/eval_throughput.py --small --device cpu   # 100 images x 500 captions
    python benchmarks/eval_throughput.py --metric-only          # only the 25,000 x 5,000 ranking step

Prints one Markdown table row per stage and, with ``--json``, writes the numbers.
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import resource
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hf_hardneg.evaluation import Embedder, retrieval_metrics  # noqa: E402
from hf_hardneg.testing import BOS_ID, EOS_ID, PAD_ID, build_word_tokenizer  # noqa: E402


def synthetic_captions(n: int, seed: int = 0, vocab: int = 2000) -> list[str]:
    rng = random.Random(seed)
    words = [f"w{i}" for i in range(vocab)]
    seen: set[str] = set()
    out = []
    while len(out) < n:
        text = " ".join(rng.choice(words) for _ in range(rng.randint(8, 20)))
        if text not in seen:
            seen.add(text)
            out.append(text)
    return out


def vit_b32_clip(tokenizer):
    """CLIPConfig's defaults are ViT-B/32 (224 px, patch 32, width 768/512, 12+12 layers, 512-d projection)."""
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel

    config = CLIPConfig(text_config=dict(vocab_size=len(tokenizer), pad_token_id=PAD_ID, bos_token_id=BOS_ID,
                                         eos_token_id=EOS_ID, max_position_embeddings=77))
    torch.manual_seed(0)
    return CLIPModel(config).eval(), CLIPImageProcessor()


class Peak:
    """Peak device memory of a stage (CUDA) or the process's peak resident memory so far (CPU)."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"

    def __enter__(self):
        if self.cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc):
        if self.cuda:
            torch.cuda.synchronize()
        self.seconds = time.perf_counter() - self.start
        if self.cuda:
            self.peak_mib = torch.cuda.max_memory_allocated() / 2**20
        else:
            self.peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--images", type=int, default=5000)
    p.add_argument("--captions-per-image", type=int, default=5)
    p.add_argument("--small", action="store_true", help="100 images x 500 captions (a CPU smoke run)")
    p.add_argument("--metric-only", action="store_true",
                   help="time only the ranking step on random 512-d embeddings of the full size")
    p.add_argument("--device", default="auto")
    p.add_argument("--batch-size", type=int, default=256, help="images per batch (texts: 2x)")
    p.add_argument("--autocast", choices=["fp16", "bf16"], default=None)
    p.add_argument("--chunk-size", type=int, default=1024, help="queries per ranking chunk")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--json", default=None, help="also write the figures to this JSON file")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.small:
        args.images = 100
    n_img, n_txt = args.images, args.images * args.captions_per_image
    from hf_hardneg.evaluation.encoding import resolve_device

    device = resolve_device(args.device)
    owner = torch.arange(n_img).repeat_interleave(args.captions_per_image)
    rows = []

    if args.metric_only:
        g = torch.Generator().manual_seed(0)
        img = torch.nn.functional.normalize(torch.randn(n_img, 512, generator=g), dim=-1).to(device)
        txt = torch.nn.functional.normalize(torch.randn(n_txt, 512, generator=g), dim=-1).to(device)
        with Peak(device) as m:
            metrics = retrieval_metrics(img, txt, owner, chunk_size=args.chunk_size, normalize=False)
        rows.append(("ranking (t2i + i2t, R@1/5/10)", f"{n_txt} x {n_img}", m.seconds, m.peak_mib))
    else:
        captions = synthetic_captions(n_txt)
        tokenizer = build_word_tokenizer(captions, max_length=77)
        model, processor = vit_b32_clip(tokenizer)
        emb = Embedder(model, tokenizer, processor, device=device, autocast_dtype=args.autocast,
                       batch_size=args.batch_size, text_batch_size=2 * args.batch_size, progress=False)
        pixels = torch.randn(n_img, 3, 224, 224, generator=torch.Generator().manual_seed(1))
        emb.embed_images(pixels[: min(8, n_img)])  # warm-up (CUDA context, kernels)
        with Peak(device) as mi:
            img = emb.embed_images(pixels)
        with Peak(device) as mt:
            txt = emb.embed_texts(captions)
        with Peak(device) as m:
            metrics = retrieval_metrics(img.to(device), txt.to(device), owner, chunk_size=args.chunk_size,
                                        normalize=False)
        rows += [("encode images (ViT-B/32, 224 px)", f"{n_img} images", mi.seconds, mi.peak_mib),
                 ("encode captions (tokenize + text tower)", f"{n_txt} captions", mt.seconds, mt.peak_mib),
                 ("ranking (t2i + i2t, R@1/5/10)", f"{n_txt} x {n_img}", m.seconds, m.peak_mib)]
        rows.append(("total", "", mi.seconds + mt.seconds + m.seconds, max(mi.peak_mib, mt.peak_mib, m.peak_mib)))

    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else None
    where = gpu or f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"
    memory = "peak GPU memory allocated" if device.type == "cuda" else "peak process RSS"
    print(f"device: {where}; torch {torch.__version__}; autocast: {args.autocast}; {memory}")
    print("| stage | size | seconds | peak MiB |")
    print("| --- | --- | --- | --- |")
    for stage, size, sec, mib in rows:
        print(f"| {stage} | {size} | {sec:.2f} | {mib:.0f} |")
    print(f"(sanity: t2i R@5 = {metrics['t2i_R@5']:.4f}, i2t R@5 = {metrics['i2t_R@5']:.4f}; random weights)")
    if args.json:
        Path(args.json).write_text(json.dumps({
            "device": where, "torch": torch.__version__, "autocast": args.autocast, "memory": memory,
            "images": n_img, "captions": n_txt,
            "stages": [{"stage": s, "size": z, "seconds": sec, "peak_mib": mib} for s, z, sec, mib in rows],
        }, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
