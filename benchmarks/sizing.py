"""Per-GPU memory of the loss and communication per step, computed on paper from the code's own terms.

No GPU needed: the terms are read off ``hf_hardneg/loss.py`` and ``hf_hardneg/distributed.py``
(W processes with n = N / W rows each, embedding width d, k hard negatives per image,
m hard-negative images per caption; the loss works in float32 whatever the towers' precision):

* gathered features: each process all-gathers its (n, P, d) block, P = 2 (image and
  positive caption) plus k in append mode plus m in append mode, into (N, P, d); the
  gather allocates the received blocks and their concatenation (2 N P d floats), and its
  backward all-reduces a gradient of the same size (2 N P d floats again, clone included);
* logits: the image rows (n, N) -- (n, N + N k) in append mode -- and the caption rows
  (n, N) -- (n, N + N m) with image negatives appended; each softmax keeps its
  log-probabilities and gets a gradient of its own size, and the plain image-row matrix
  (n, N) exists beside the rows it is turned into;
* communication: the all-gather brings (W - 1)/W of the N P d floats to every process;
  the backward all-reduce moves 2 (W - 1)/W of them (ring all-reduce).

    python benchmarks/sizing.py                                   # the README's table
    python benchmarks/sizing.py --global-batch 65536 --gpus 128 --k 3 --mode append
"""

from __future__ import annotations

import argparse

MODELS = {"ViT-B/32": 512, "ViT-L/14": 768, "ViT-H/14": 1024}  # projection (embedding) width d
FLOAT32 = 4


def loss_memory_bytes(n: int, N: int, d: int, k: int, m: int, mode: str) -> dict[str, float]:
    P = 2 + (k + m if mode == "append" else 0)
    image_width = N + (N * k if mode == "append" else 0)
    caption_width = N + (N * m if mode == "append" else 0)
    features = 2 * N * P * d + 2 * N * P * d  # gather (received + concatenated) and its backward
    logits = n * N + 3 * n * image_width + 3 * n * caption_width  # plain; rows, log-softmax, gradient per side
    return {"features": features * FLOAT32, "logits": logits * FLOAT32, "total": (features + logits) * FLOAT32}


def communication_bytes(N: int, W: int, d: int, k: int, m: int, mode: str) -> dict[str, float]:
    P = 2 + (k + m if mode == "append" else 0)
    block = N * P * d * FLOAT32
    return {"all_gather": (W - 1) / W * block, "all_reduce": 2 * (W - 1) / W * block}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--global-batch", type=int, default=32768)
    parser.add_argument("--gpus", type=int, default=64)
    parser.add_argument("--k", type=int, default=1)
    parser.add_argument("--m", type=int, default=0)
    parser.add_argument("--mode", nargs="+", default=["replace", "append"])
    args = parser.parse_args()
    N, W = args.global_batch, args.gpus
    n = N // W
    print(f"global batch N = {N:,} on W = {W} GPUs (n = {n} per GPU), k = {args.k}, m = {args.m}; MiB per GPU per step")
    print("| model | d | mode | loss memory | of which logits | of which gathered features | all-gather in | "
          "all-reduce moved |")
    print("| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: |")
    mib = 2 ** 20
    for model, d in MODELS.items():
        for mode in args.mode:
            memory = loss_memory_bytes(n, N, d, args.k, args.m, mode)
            comm = communication_bytes(N, W, d, args.k, args.m, mode)
            print(f"| {model} | {d} | {mode} | {memory['total'] / mib:,.0f} | {memory['logits'] / mib:,.0f} | "
                  f"{memory['features'] / mib:,.0f} | {comm['all_gather'] / mib:,.0f} | {comm['all_reduce'] / mib:,.0f} |")


if __name__ == "__main__":
    main()
