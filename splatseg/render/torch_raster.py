"""Exact, differentiable pure-PyTorch rasteriser with gsplat 1.5.3's conventions (runs on any device).

Method: a sparse pixel-Gaussian pairs compositor, one camera at a time.
1. `select_pairs` (no autograd): list the candidate (pixel, Gaussian) pairs whose pixel centre lies
   in the Gaussian's alpha >= 1/255 ellipse (per row of its screen box; the box is gsplat's
   opacity-aware radius), compute alpha = min(0.999, opacity * exp(-0.5 d^T conic d)) exactly as the
   gsplat kernel does, drop alpha < 1/255, order pairs by (pixel, depth) with one stable int32 sort
   (pairs are generated front to back), and cut each pixel where gsplat stops: the first pair whose
   transmittance after it would be <= 1e-4 and everything behind it. Transmittance T comes from an
   exclusive float64 cumulative sum of log(1 - alpha) within each pixel's segment. Candidates are
   processed in bands of image rows holding at most `pairs_per_chunk` candidates (the band size does
   not change the result), so the transient memory is that of one band plus the per-(Gaussian, image
   row) list (~100 bytes per item) and the kept pairs (16 bytes each, saved for backward).
2. `Rasterize` (autograd Function): output = W @ values with W [H*W, N] the CSR matrix of weights
   alpha * T, accumulated alpha = 1 - prod(1 - alpha). Its backward is gsplat's analytic backward,
   vectorised over pairs (suffix sums by cumsum within pixel segments), in chunks of pixels, giving
   gradients for the projected means (pixels), conics, opacities and per-Gaussian values.

Shapes: N Gaussians, H x W pixels, K channels (colour channels plus camera z for expected depth);
pixel index p = row * width + col; pixel centres at (col + 0.5, row + 0.5).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import Tensor

from splatseg.render.projection import ALPHA_MIN, camera_centers, project
from splatseg.render.sh import sh_to_rgb
from splatseg.render.sparse import crow_from_rows, csr, index_dtype, transpose_pattern

ALPHA_MAX = 0.999
"""Alpha is capped here (gsplat)."""
T_MIN = 1e-4
"""A pixel stops at the first Gaussian that would take its transmittance to <= T_MIN (gsplat)."""
PAIRS_PER_CHUNK = 1 << 22
"""Default bound on the (pixel, Gaussian) pairs held at once in pair selection and in backward."""
_SLACK = 1e-3
"""Pixels of slack around the analytic alpha >= 1/255 ellipse; the exact alpha test decides."""
_COLUMNWISE_DOTS = 8
"""Backward computes per-pair dot products channel by channel up to this many channels (faster on
CPU than `sampled_addmm`), with `sampled_addmm` above."""


class Pairs(NamedTuple):
    """Contributing (pixel, Gaussian) pairs of one view, sorted by pixel, then front to back."""

    pixel: Tensor  # [P] int32/int64 flat pixel index
    gaussian: Tensor  # [P] int32/int64 Gaussian index
    alpha: Tensor  # [P] alpha of the Gaussian at the pixel centre
    trans: Tensor  # [P] transmittance in front of the Gaussian (T_i)
    log_tfinal: Tensor  # [H*W] float64 log of the transmittance left after all pairs


@torch.no_grad()
def select_pairs(
    means2d: Tensor,  # [N, 2]
    conics: Tensor,  # [N, 3]
    opacities: Tensor,  # [N]
    depths: Tensor,  # [N]
    radii: Tensor,  # [N, 2] int, 0 = culled
    width: int,
    height: int,
    pairs_per_chunk: int = PAIRS_PER_CHUNK,
) -> Pairs:
    """The compositor's contributing pairs for one view (see the module docstring)."""
    device, dtype = means2d.device, means2d.dtype
    ids = torch.nonzero((radii > 0).all(dim=-1)).squeeze(1)
    ids = ids.index_select(0, torch.sort(depths.index_select(0, ids), stable=True).indices)  # front to back
    mx, my = means2d.index_select(0, ids).unbind(-1)
    ca, cb, cc = conics.index_select(0, ids).unbind(-1)
    op = opacities.index_select(0, ids)
    rx, ry = radii.index_select(0, ids).to(dtype).unbind(-1)

    # q = d^T conic d <= q_max  <=>  opacity * exp(-q / 2) >= 1/255
    q_max = 2.0 * torch.log(torch.clamp(op / ALPHA_MIN, min=1.0))
    det = ca * cc - cb * cb
    half_h = torch.minimum(ry, torch.sqrt(q_max * ca / det)) + _SLACK
    y0 = torch.ceil(my - half_h - 0.5).clamp(min=0)
    y1 = torch.floor(my + half_h - 0.5).clamp(max=height - 1)
    n_rows = (y1 - y0 + 1).clamp(min=0).long()

    # One item per (Gaussian, image row): its column range inside the ellipse and the box.
    g = torch.repeat_interleave(torch.arange(ids.numel(), device=device), n_rows)
    row_start = torch.cumsum(n_rows, 0) - n_rows
    y = y0.long().index_select(0, g) + torch.arange(g.numel(), device=device) - row_start.index_select(0, g)
    dy = my.index_select(0, g) - (y.to(dtype) + 0.5)  # mean - pixel centre, as gsplat
    ca_g, cb_g = ca.index_select(0, g), cb.index_select(0, g)
    disc = ca_g * q_max.index_select(0, g) - dy * dy * det.index_select(0, g)
    half_w = torch.sqrt(disc.clamp(min=0)) / ca_g
    mx_g, rx_g = mx.index_select(0, g), rx.index_select(0, g)
    centre = mx_g + cb_g * dy / ca_g
    lo = torch.maximum(centre - half_w, mx_g - rx_g)
    hi = torch.minimum(centre + half_w, mx_g + rx_g)
    x0 = torch.ceil(lo - 0.5 - _SLACK).clamp(min=0)
    x1 = torch.floor(hi - 0.5 + _SLACK).clamp(max=width - 1)
    n_cols = (x1 - x0 + 1).clamp(min=0).long()
    x0 = x0.long()

    # Bands of rows with at most pairs_per_chunk candidates each (a heavier single row is one band).
    row_load = torch.bincount(y, weights=n_cols.double(), minlength=height)
    band = ((torch.cumsum(row_load, 0) - row_load) // pairs_per_chunk).long()
    band_rows = torch.unique_consecutive(band, return_counts=True)[1]
    band_edges = [0] + torch.cumsum(band_rows, 0).tolist()

    row_table = torch.stack([mx_g, dy, ca_g, cb_g, cc.index_select(0, g), op.index_select(0, g)], dim=-1)
    parts = []
    for r0, r1 in zip(band_edges[:-1], band_edges[1:]):
        if len(band_edges) > 2:
            sel = torch.nonzero((y >= r0) & (y < r1)).squeeze(1)
            items = [t.index_select(0, sel) for t in (g, y, x0, n_cols, row_table)]
        else:
            items = [g, y, x0, n_cols, row_table]
        parts.append(_band_pairs(*items, r0, r1, width))
    pixel, gauss, alpha, trans, log_tfinal = (torch.cat(p) if len(parts) > 1 else p[0] for p in zip(*parts))
    idx = index_dtype(pixel.numel())
    return Pairs(pixel.to(idx), ids.index_select(0, gauss).to(idx), alpha, trans, log_tfinal)


def _band_pairs(g, y, x0, n_cols, row_table, r0: int, r1: int, width: int):
    """Contributing pairs of image rows [r0, r1) from their (Gaussian, row) items."""
    device = g.device
    num = int(n_cols.sum())
    item = torch.repeat_interleave(torch.arange(g.numel(), device=device), n_cols, output_size=num)
    col_start = torch.cumsum(n_cols, 0) - n_cols
    x = (x0 - col_start).index_select(0, item).add_(torch.arange(num, device=device))
    mx, dy, ca, cb, cc, op = row_table.index_select(0, item).unbind(-1)  # sequential gather: item is sorted
    dx = mx - (x.to(mx.dtype) + 0.5)
    sigma = 0.5 * (ca * dx * dx + cc * dy * dy) + cb * dx * dy
    alpha = torch.clamp_max(op * torch.exp(-sigma), ALPHA_MAX)
    alpha = torch.where((sigma >= 0) & (alpha >= ALPHA_MIN), alpha, 0.0)  # skipped pairs leave T unchanged
    pixel = ((y - r0) * width).index_select(0, item).add_(x).to(torch.int32)
    pixel, order = torch.sort(pixel, stable=True)  # stable: items were generated front to back
    item, alpha = item.index_select(0, order), alpha.index_select(0, order)

    # Transmittance within each pixel's segment; stop where gsplat's kernel stops.
    crow = crow_from_rows(pixel, (r1 - r0) * width, torch.int64)
    log1m = torch.log1p(-alpha.double())
    cum = torch.cumsum(log1m, 0)
    incl = cum - (cum - log1m).index_select(0, crow.index_select(0, pixel))
    live = torch.nonzero((alpha > 0) & (incl > math.log(T_MIN))).squeeze(1)
    pixel, item, alpha = pixel.index_select(0, live), item.index_select(0, live), alpha.index_select(0, live)
    log1m, incl = log1m.index_select(0, live), incl.index_select(0, live)
    trans = torch.exp(incl - log1m).to(alpha.dtype)
    pixel = pixel.long()
    log_tfinal = torch.zeros((r1 - r0) * width, dtype=torch.float64, device=device).index_add_(0, pixel, log1m)
    return pixel + r0 * width, g.index_select(0, item), alpha, trans, log_tfinal


def _pixel_chunks(crow: Tensor, pairs_per_chunk: int) -> list[tuple[int, int]]:
    """Split pixels [0, len(crow) - 1) into ranges holding about pairs_per_chunk pairs each."""
    num_pixels, total = crow.numel() - 1, int(crow[-1])
    if total <= pairs_per_chunk:
        return [(0, num_pixels)]
    marks = torch.arange(pairs_per_chunk, total, pairs_per_chunk, device=crow.device, dtype=crow.dtype)
    cuts = torch.unique(torch.searchsorted(crow, marks, right=True) - 1).tolist()
    edges = sorted({0, num_pixels, *[c for c in cuts if 0 < c < num_pixels]})
    return list(zip(edges[:-1], edges[1:]))


class Rasterize(torch.autograd.Function):
    """(means2d [N,2], conics [N,3], opacities [N], values [N,K]; pairs) -> (W @ values [HW,K], alpha [HW])."""

    @staticmethod
    def forward(ctx, means2d, conics, opacities, values, pixel, gaussian, alpha, trans, log_tfinal, width, chunk):  # noqa: D102
        num_pixels, num_gaussians = log_tfinal.numel(), values.shape[0]
        crow = crow_from_rows(pixel.long(), num_pixels, pixel.dtype)
        weights = csr(crow, gaussian, (alpha * trans).to(values.dtype), (num_pixels, num_gaussians))
        out = weights @ values.contiguous()
        alphas = -torch.expm1(log_tfinal).to(values.dtype)
        ctx.save_for_backward(means2d, conics, opacities, values, pixel, gaussian, alpha, trans, log_tfinal, crow)
        ctx.width, ctx.chunk = width, chunk
        return out, alphas

    @staticmethod
    def backward(ctx, v_out, v_alphas):  # noqa: D102
        means2d, conics, opacities, values, pixel, gaussian, alpha, trans, log_tfinal, crow = ctx.saved_tensors
        need_geom = any(ctx.needs_input_grad[:3])
        num_gaussians, dtype, width = values.shape[0], values.dtype, ctx.width
        v_geom = [torch.zeros(num_gaussians, dtype=means2d.dtype, device=means2d.device) for _ in range(6)]
        v_values = torch.zeros_like(values) if ctx.needs_input_grad[3] else None
        geom = [t.contiguous() for t in (*means2d.unbind(-1), *conics.unbind(-1), opacities)]
        v_out = v_out.contiguous()
        columnwise = values.shape[1] <= _COLUMNWISE_DOTS
        if columnwise:
            value_cols = [t.contiguous() for t in values.unbind(-1)]
            v_out_cols = [t.contiguous() for t in v_out.unbind(-1)]
        else:
            values_t = values.t().contiguous()
        for p0, p1 in _pixel_chunks(crow, ctx.chunk):
            k0, k1 = int(crow[p0]), int(crow[p1])
            if k1 == k0:
                continue
            pix = pixel[k0:k1].long()
            gid32, gid = gaussian[k0:k1], gaussian[k0:k1].long()
            a, T = alpha[k0:k1], trans[k0:k1]
            w = (a * T).to(dtype)
            crow_c = crow[p0 : p1 + 1] - crow[p0]
            if v_values is not None:
                crow_t, rows_t, order = transpose_pattern(crow_c, gid32, num_gaussians)
                w_t = csr(crow_t, rows_t, w.index_select(0, order.long()), (num_gaussians, p1 - p0))
                v_values += w_t @ v_out[p0:p1]
            if not need_geom:
                continue
            # d(out . v)/d alpha_k = T_k (c_k . v) - sum_{j>k} w_j (c_j . v) / (1 - alpha_k)
            #                       + v_alpha T_final / (1 - alpha_k)
            if columnwise:
                dots = value_cols[0].index_select(0, gid) * v_out_cols[0].index_select(0, pix)
                for vc, oc in zip(value_cols[1:], v_out_cols[1:]):
                    dots.addcmul_(vc.index_select(0, gid), oc.index_select(0, pix))
            else:
                v_chunk = v_out[p0:p1]
                dots = torch.sparse.sampled_addmm(csr(crow_c, gid32, w, (p1 - p0, num_gaussians)), v_chunk, values_t, beta=0.0)
                dots = dots.values()
            cum = torch.cumsum((w * dots).double(), 0)
            seg_last = crow_c.long().index_select(0, pix - (p0 - 1)) - 1
            behind = (cum.index_select(0, seg_last) - cum).to(a.dtype)
            t_final = torch.exp(log_tfinal.index_select(0, pix)).to(a.dtype)
            v_a = (v_alphas.index_select(0, pix) * t_final - behind) / (1.0 - a) + T * dots.to(a.dtype)
            # alpha = opacity * G below the cap (no gradient through the cap); dsigma = -alpha dalpha
            v_a = torch.where(a < ALPHA_MAX, v_a, 0.0)
            v_sigma = -a * v_a
            mx, my, ca, cb, cc, op = (t.index_select(0, gid) for t in geom)
            dx = mx - ((pix % width).to(a.dtype) + 0.5)
            dy = my - (torch.div(pix, width, rounding_mode="floor").to(a.dtype) + 0.5)
            per_pair = (
                v_sigma * (ca * dx + cb * dy),
                v_sigma * (cb * dx + cc * dy),
                0.5 * v_sigma * dx * dx,
                v_sigma * dx * dy,
                0.5 * v_sigma * dy * dy,
                a / op * v_a,
            )
            for acc, term in zip(v_geom, per_pair):
                acc.index_add_(0, gid, term)
        v_means2d = torch.stack(v_geom[:2], dim=-1)
        v_conics = torch.stack(v_geom[2:5], dim=-1)
        return v_means2d, v_conics, v_geom[5], v_values, *([None] * 7)


def rasterize_view(means2d, conics, opacities, values, depths, radii, width, height, pairs_per_chunk=PAIRS_PER_CHUNK):
    """One view: [N, K] values -> ([H*W, K] composited values, [H*W] alpha); differentiable."""
    pairs = select_pairs(
        means2d.detach(), conics.detach(), opacities.detach(), depths.detach(), radii, width, height, pairs_per_chunk
    )
    return Rasterize.apply(means2d, conics, opacities, values, *pairs, width, pairs_per_chunk)


def render_torch(
    means: Tensor,  # [N, 3]
    quats: Tensor,  # [N, 4]
    scales: Tensor,  # [N, 3]
    opacities: Tensor,  # [N]
    colors: Tensor,  # [N, D] or [N, B, 3] with sh_degree
    viewmats: Tensor,  # [C, 4, 4]
    Ks: Tensor,  # [C, 3, 3]
    width: int,
    height: int,
    *,
    sh_degree: int | None,
    near_plane: float,
    far_plane: float,
    backgrounds: Tensor | None,
    eps2d: float,
    pairs_per_chunk: int = PAIRS_PER_CHUNK,
) -> tuple[Tensor, Tensor, Tensor, dict]:
    """([C,H,W,D] colours, [C,H,W,1] alphas, [C,H,W,1] expected depths, meta) as gsplat "RGB+ED"."""
    proj = project(
        means, quats, scales, opacities, viewmats, Ks, width, height,
        near_plane=near_plane, far_plane=far_plane, eps2d=eps2d,
    )  # fmt: skip
    centers = camera_centers(viewmats) if sh_degree is not None else None
    images, alphas, depths = [], [], []
    for c in range(viewmats.shape[0]):
        if sh_degree is None:
            rgb = colors
        else:
            rgb = torch.clamp_min(sh_to_rgb(sh_degree, colors, means - centers[c]) + 0.5, 0.0)
        values = torch.cat([rgb, proj.depths[c][:, None]], dim=-1)
        out, alpha = rasterize_view(
            proj.means2d[c], proj.conics[c], opacities, values, proj.depths[c], proj.radii[c], width, height, pairs_per_chunk
        )
        out = out.reshape(height, width, -1)
        alpha = alpha.reshape(height, width, 1)
        image = out[..., :-1]
        if backgrounds is not None:
            image = image + backgrounds[c] * (1.0 - alpha)
        images.append(image)
        alphas.append(alpha)
        depths.append(out[..., -1:] / alpha.clamp(min=1e-10))
    meta = {
        "means2d": proj.means2d,
        "radii": proj.radii.amax(dim=-1),
        "depths": proj.depths,
        "conics": proj.conics,
        "width": width,
        "height": height,
        "n_cameras": viewmats.shape[0],
    }
    return torch.stack(images), torch.stack(alphas), torch.stack(depths), meta
