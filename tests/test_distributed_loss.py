"""Two real CPU processes (gloo) compute the same loss and gradients as one process on the global batch.

Covers both losses, both modes, k=1 and k=3 (k>1 catches negatives gathered in
the wrong interleaving), the default-RNG path (process 0's draw is
broadcast), unequal per-process batch sizes, and a process with no rows. The
worker computes in float64, so both sides agree to rounding (tolerance 1e-10)
on any CPU.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

WORKER = Path(__file__).with_name("_dist_loss_worker.py")
WORLD = 2
TOL = 1e-10


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> list[dict]:
    torch_dist = pytest.importorskip("torch.distributed")
    if not torch_dist.is_available() or not torch_dist.is_gloo_available():
        pytest.skip("this torch build has no gloo backend")
    out = tmp_path_factory.mktemp("dist_loss")
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    port = _free_port()
    procs = [subprocess.Popen([sys.executable, str(WORKER), str(r), str(WORLD), str(port), str(out)],
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for r in range(WORLD)]
    logs = []
    try:
        for p in procs:
            logs.append(p.communicate(timeout=120)[0])
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    for r, (p, log) in enumerate(zip(procs, logs)):
        assert p.returncode == 0, f"rank {r} exited with {p.returncode}:\n{log[-4000:]}"
    return [json.loads((out / f"rank{r}.json").read_text()) for r in range(WORLD)]


def test_gather_keeps_rank_order_and_sums_gradients(results):
    for rank_results in results:
        assert rank_results["gather"] == {"values": 0.0, "grad": 0.0}


CASES = [f"{loss}-{mode}-k{k}" for loss in ("contrastive", "sigmoid") for mode in ("replace", "append") for k in (1, 3)]


IMAGE_CASES = [f"{loss}-{mode}-{which}" for loss in ("contrastive", "sigmoid") for mode in ("replace", "append")
               for which in ("k3-m1", "k3-m2", "k1-m2-uneven")]


@pytest.mark.parametrize("case", CASES + ["contrastive-replace-k2-default-rng"] + IMAGE_CASES)
def test_two_processes_equal_one_process(results, case):
    for rank, rank_results in enumerate(results):
        errors = dict(rank_results[case])
        assert errors.pop("reference_grad_nonzero") == 1.0
        bad = {name: value for name, value in errors.items() if not value <= TOL}
        assert not bad, f"rank {rank}, {case}: deviations above {TOL}: {bad}"


EMPTY_CASES = [f"{loss}-{mode}-{which}" for loss in ("contrastive", "sigmoid") for mode in ("replace", "append")
               for which in ("k3-empty-first", "k1-empty-last")]


@pytest.mark.parametrize("case", ["contrastive-append-k2-uneven", "sigmoid-replace-k2-uneven",
                                  "contrastive-replace-k3-uneven"] + EMPTY_CASES)
def test_unequal_batch_sizes_weighted_by_share(results, case):
    for rank, rank_results in enumerate(results):
        errors = dict(rank_results[case])
        errors.pop("reference_grad_nonzero")
        bad = {name: value for name, value in errors.items() if not value <= TOL}
        assert not bad, f"rank {rank}, {case}: deviations above {TOL}: {bad}"


def test_helpers_without_a_process_group():
    import torch

    from hf_hardneg import distributed

    if torch.distributed.is_available() and torch.distributed.is_initialized():
        pytest.skip("a process group is initialised in this process")
    assert distributed.get_rank() == 0 and distributed.get_world_size() == 1
    assert not distributed.is_distributed()
    assert distributed.gather_sizes(5, torch.device("cpu")) == [5]
    x = torch.randn(3, 2, requires_grad=True)
    assert distributed.all_gather_with_grad(x) is x
