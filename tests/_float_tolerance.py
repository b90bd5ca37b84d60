"""Tolerances that float32 arithmetic justifies, for tests that must pass on every CPU.

BLAS kernels and vectorised reductions sum in a different order on different
CPUs (AVX2 vs AVX-512 blocking, thread counts), so a float32 result is only
reproducible to its rounding error, not bit for bit. Where a test can, it
compares float64 computations (differences near 1e-15) instead. Where the
float32 path itself is under test, the bound below is the textbook one: a sum
of m products of float32 numbers is off by at most about ``m * eps`` times the
sum of the magnitudes of its terms (Higham's gamma_m).

For logits ``scale * <u, v>`` of unit vectors of length d the terms sum to at
most 1 in magnitude; normalising each vector adds a few more roundings, hence
``d + 8``. A softmax cross-entropy changes by at most twice the largest change
of its logits (its gradient in the logits has an L1 norm of at most 2), and so
does a mean of such terms.
"""

from __future__ import annotations

import torch

FLOAT32_EPS = torch.finfo(torch.float32).eps  # 2**-23, about 1.19e-7


def f32_logit_tolerance(scale: float, dim: int) -> float:
    """Largest float32 rounding error of ``scale * cos(u, v)`` for vectors of length ``dim``."""
    return abs(float(scale)) * (dim + 8) * FLOAT32_EPS


def f32_loss_tolerance(scale: float, dim: int) -> float:
    """Largest float32 rounding error of a softmax or sigmoid loss over such logits."""
    return 2.0 * f32_logit_tolerance(scale, dim) + 4 * FLOAT32_EPS
