"""Sparse (pixel x Gaussian) weight matrices as torch CSR tensors.

A view's compositing weights form a matrix W [H*W, N] with W[p, i] = alpha_i(p) T_i(p); a feature map
is W @ F and lifting pixel values back onto Gaussians is W^T @ V. On a CPU, CSR sparse-dense products
(MKL) are one to two orders of magnitude faster than `index_add_` over (pixel, Gaussian) pairs, and
they never materialise a [P, D] array. Index tensors are int32 whenever the pair count allows.
"""

from __future__ import annotations

import warnings

import torch
from torch import Tensor


def index_dtype(num_pairs: int) -> torch.dtype:
    """int32 for CSR indices unless the pair count needs int64."""
    return torch.int32 if num_pairs < 2**31 - 1 else torch.int64


def csr(crow: Tensor, col: Tensor, val: Tensor, shape: tuple[int, int]) -> Tensor:
    """CSR tensor from (crow [R+1], col [P], val [P]) without copies or invariant checks."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta state")
        return torch.sparse_csr_tensor(crow, col, val, size=shape, check_invariants=False)


def crow_from_rows(rows: Tensor, num_rows: int, dtype: torch.dtype) -> Tensor:
    """Sorted row index per entry [P] -> CSR row pointers [num_rows + 1]."""
    counts = torch.bincount(rows, minlength=num_rows)
    crow = torch.zeros(num_rows + 1, dtype=dtype, device=rows.device)
    torch.cumsum(counts, 0, out=crow[1:])
    return crow


def transpose_pattern(crow: Tensor, col: Tensor, num_cols: int) -> tuple[Tensor, Tensor, Tensor]:
    """Pattern of the transpose of a CSR matrix [R, num_cols].

    Returns (crow_t [num_cols + 1], rows [P] of each entry in transposed order, order [P] the
    permutation from the original entry order to the transposed one); same index dtype as `crow`.
    """
    order = torch.sort(col, stable=True).indices
    rows = torch.repeat_interleave(
        torch.arange(crow.numel() - 1, device=crow.device, dtype=crow.dtype), crow.diff(), output_size=col.numel()
    )
    crow_t = crow_from_rows(col, num_cols, crow.dtype)
    return crow_t, rows.index_select(0, order), order.to(crow.dtype)


class SpMM(torch.autograd.Function):
    """y = A @ x for a constant CSR matrix A [R, K] with its transpose AT [K, R]; dL/dx = AT @ dL/dy."""

    @staticmethod
    def forward(ctx, x: Tensor, A: Tensor, AT: Tensor) -> Tensor:  # noqa: D102
        ctx.AT = AT
        return A @ x

    @staticmethod
    def backward(ctx, grad: Tensor):  # noqa: D102
        return ctx.AT @ grad.contiguous(), None, None
