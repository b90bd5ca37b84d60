"""One process of the 2-process loss check; launched by tests/test_distributed_loss.py.

Every process builds the same global batch, computes the one-process loss on
all of it (the reference), then the distributed loss on its own slice, and
writes the largest deviations to ``<out>/rank<r>.json``. DDP's averaging is
emulated exactly: losses and replicated-parameter gradients are averaged over
processes, and the gradient reaching a process's own embeddings is divided by
the world size (the gather's backward sums it over processes; DDP divides the
parameter gradients it flows into by W).

Usage: python tests/_dist_loss_worker.py RANK WORLD_SIZE PORT OUT_DIR
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
import torch.distributed as dist

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hf_hardneg.distributed import all_gather_with_grad, get_rank, get_world_size  # noqa: E402
from hf_hardneg.loss import (  # noqa: E402
    HardNegativeContrastiveLoss,
    HardNegativeSigmoidLoss,
    draw_replacement_columns,
    replacement_generator,
)

LOSSES = {"contrastive": HardNegativeContrastiveLoss, "sigmoid": HardNegativeSigmoidLoss}


def global_batch(total: int, k: int, d: int, seed: int, m: int = 0):
    # float64: the distributed and the one-process computation then agree to ~1e-15 on any CPU
    g = torch.Generator().manual_seed(seed)
    img = torch.randn(total, d, generator=g, dtype=torch.float64)
    txt = img + torch.randn(total, d, generator=g, dtype=torch.float64)
    hn = txt[:, None] + 0.5 * torch.randn(total, k, d, generator=g, dtype=torch.float64)
    nimg = img[:, None] + 0.5 * torch.randn(total, m, d, generator=g, dtype=torch.float64) if m else None
    return img, txt, hn, torch.tensor(4.0, dtype=torch.float64), torch.tensor(-2.0, dtype=torch.float64), nimg


def run(loss_name, mode, k, sizes, rank, world, use_generator=True, d=6, seed=0, m=0):
    """Max |distributed - reference| over loss, accuracy and every gradient (m: hard-negative images per caption)."""
    total = sum(sizes)
    offset, n = sum(sizes[:rank]), sizes[rank]
    img, txt, hn, scale, bias, nimg = global_batch(total, k, d, seed, m)
    cls = LOSSES[loss_name]

    # reference: one process, whole global batch
    ref_leaves = [t.clone().requires_grad_(True) for t in (img, txt, hn, scale, bias)]
    ref_nimg = nimg.clone().requires_grad_(True) if m else None
    if use_generator:
        ref_kwargs = dict(generator=replacement_generator(seed, 3))
    else:
        torch.manual_seed(1234)  # the default RNG state that process 0 draws from below
        ref_kwargs = dict(replace_columns=draw_replacement_columns(total, k))
    ref = cls(mode, gather_across_processes=False)(*ref_leaves, **ref_kwargs, hard_negative_image_embeds=ref_nimg)
    ref.loss.backward()

    # distributed: this process's slice
    mine = [t[offset: offset + n].clone().requires_grad_(True) for t in (img, txt, hn)]
    my_nimg = nimg[offset: offset + n].clone().requires_grad_(True) if m else None
    params = [t.clone().requires_grad_(True) for t in (scale, bias)]
    if use_generator:
        kwargs = dict(generator=replacement_generator(seed, 3))
    else:
        torch.manual_seed(1234 if rank == 0 else 999)  # only process 0's draw may count
        kwargs = {}
    out = cls(mode)(*mine, *params, **kwargs, hard_negative_image_embeds=my_nimg)
    # the loss already returns this process's share of the global mean (its sum times W/N), so DDP's
    # plain average over processes is exact even when the sizes differ; the accuracy is a local mean,
    # weighted here by the process's share of images
    out.loss.backward()
    weight = n * world / total

    def mean_over_processes(t):
        t = t.detach().clone()
        dist.all_reduce(t)
        return t / world

    errors = {
        "loss": (mean_over_processes(out.loss) - ref.loss).abs().item(),
        "scale_grad": (mean_over_processes(params[0].grad) - ref_leaves[3].grad).abs().item(),
        "accuracy": (mean_over_processes(out.hard_negative_accuracy * weight)
                     - ref.hard_negative_accuracy).abs().item(),
    }
    # same scored matrix, column for column (e.g. column N + g*k + j is image g's j-th negative in append mode)
    if n:
        errors["logits_per_image"] = (out.logits_per_image - ref.logits_per_image[offset: offset + n]).abs().max().item()
    if loss_name == "sigmoid":
        errors["bias_grad"] = (mean_over_processes(params[1].grad) - ref_leaves[4].grad).abs().item()
    else:  # a softmax cannot see a bias: no gradient may appear on either side
        errors["bias_grad"] = 0.0 if params[1].grad is None and ref_leaves[4].grad is None else float("inf")
    for name, local, reference in zip(("image_grad", "text_grad", "hard_negative_grad"), mine, ref_leaves):
        if n == 0:  # a process without rows has no gradient of its own to compare
            errors[name] = 0.0 if local.grad is None or local.grad.numel() == 0 else float("inf")
            continue
        errors[name] = (local.grad / world - reference.grad[offset: offset + n]).abs().max().item()
    if n == 0:
        errors["logits_per_image"] = 0.0 if out.logits_per_image.shape[0] == 0 else float("inf")
    if m and n:
        errors["hard_negative_image_grad"] = (my_nimg.grad / world - ref_nimg.grad[offset: offset + n]).abs().max().item()
        errors["image_accuracy"] = (mean_over_processes(out.image_hard_negative_accuracy * weight)
                                    - ref.image_hard_negative_accuracy).abs().item()
    # the whole gradient of the reference is reachable (no silent zero)
    used = ref_leaves if loss_name == "sigmoid" else ref_leaves[:4]
    errors["reference_grad_nonzero"] = float(all(t.grad.abs().sum() > 0 for t in used))
    return errors


def main() -> None:
    rank, world, port, out_dir = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), Path(sys.argv[4])
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    assert get_rank() == rank and get_world_size() == world
    results = {}
    try:
        # the gather itself: rank order, variable sizes, gradient summed over processes
        sizes = [2, 3][:world] + [1] * max(0, world - 2)
        x = torch.full((sizes[rank], 2), float(rank), requires_grad=True)
        gathered = all_gather_with_grad(x, sizes)
        expected = torch.cat([torch.full((s, 2), float(r)) for r, s in enumerate(sizes)])
        (gathered * torch.arange(1.0, gathered.shape[0] + 1)[:, None]).sum().backward()
        offset = sum(sizes[:rank])
        weights = torch.arange(1.0, gathered.shape[0] + 1)[offset: offset + sizes[rank], None]
        expected_grad = world * weights.expand(-1, 2)
        results["gather"] = {
            "values": (gathered - expected).abs().max().item(),
            "grad": (x.grad - expected_grad).abs().max().item(),
        }
        for loss_name in LOSSES:
            for mode in ("replace", "append"):
                for k in (1, 3):
                    results[f"{loss_name}-{mode}-k{k}"] = run(loss_name, mode, k, [4] * world, rank, world)
        results["contrastive-replace-k2-default-rng"] = run("contrastive", "replace", 2, [4] * world, rank, world,
                                                              use_generator=False)
        uneven = [3, 5] + [4] * (world - 2)
        results["contrastive-append-k2-uneven"] = run("contrastive", "append", 2, uneven, rank, world)
        results["sigmoid-replace-k2-uneven"] = run("sigmoid", "replace", 2, uneven, rank, world)
        results["contrastive-replace-k3-uneven"] = run("contrastive", "replace", 3, uneven, rank, world)
        # hard-negative images (m = 1, 2) beside k = 3 text negatives, equal and unequal sizes
        for loss_name in LOSSES:
            for mode in ("replace", "append"):
                for m in (1, 2):
                    results[f"{loss_name}-{mode}-k3-m{m}"] = run(loss_name, mode, 3, [4] * world, rank, world, m=m)
                results[f"{loss_name}-{mode}-k1-m2-uneven"] = run(loss_name, mode, 1, uneven, rank, world, m=2)
        # an epoch's short last batch can leave a process with no rows at all: it still takes part
        empty_first = [0, 5] + [4] * (world - 2)
        empty_last = [5] + [0] * (world - 1)
        for loss_name in LOSSES:
            for mode in ("replace", "append"):
                results[f"{loss_name}-{mode}-k3-empty-first"] = run(loss_name, mode, 3, empty_first, rank, world)
                results[f"{loss_name}-{mode}-k1-empty-last"] = run(loss_name, mode, 1, empty_last, rank, world)
    finally:
        dist.destroy_process_group()
    (out_dir / f"rank{rank}.json").write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
