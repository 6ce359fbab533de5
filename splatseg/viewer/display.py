"""What the browser draws: viser splat arrays from `Splats`, and the selection highlight colours.

viser's `add_gaussian_splats` takes centers [N, 3] (world), covariances [N, 3, 3] (world, scene
units squared: R diag(s^2) R^T from the unit quaternion and the activated scales), rgbs [N, 3]
(here uint8, the SH DC colour `Splats.base_rgb`) and opacities [N, 1] in [0, 1].

Highlighting recolours only: selected Gaussians keep their hue, lifted `LIFT` towards white; the
others are desaturated and dimmed to `DIM` of their grey level (`highlight_colors`), so the selection
is the only coloured thing left. Opacities and geometry never change, so one uint8 [N, 3] array is
built per selection (`Highlighter.rgbs`, a single `np.where` over precomputed arrays).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from splatseg.types import Splats
from splatseg.viewer.camera import quat_to_matrix

LIFT = 0.15
"""Fraction by which selected colours move towards white."""

DIM = 0.35
"""Brightness factor of unselected Gaussians while something is selected."""

SATURATION = 0.25
"""Colour saturation kept by unselected Gaussians while something is selected."""


def highlight_colors(rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(selected, dimmed) display colours for colours rgb [..., 3] in [0, 1]."""
    rgb = np.asarray(rgb, np.float32)
    grey = rgb @ np.array([0.299, 0.587, 0.114], np.float32)
    selected = (1.0 - LIFT) * rgb + LIFT
    dimmed = DIM * (SATURATION * rgb + (1.0 - SATURATION) * grey[..., None])
    return selected, dimmed


def splat_covariances(quats: np.ndarray, scales: np.ndarray) -> np.ndarray:
    """float32 [N, 3, 3] world covariances R diag(scales^2) R^T; quats [N, 4] w x y z (any norm),
    scales [N, 3] standard deviations."""
    R = quat_to_matrix(quats)  # [N, 3, 3]
    Rs = R * np.asarray(scales, np.float64)[:, None, :]
    return np.einsum("nij,nkj->nik", Rs, Rs).astype(np.float32)


@dataclass
class SplatArrays:
    """The arrays viser's `add_gaussian_splats` takes (see module doc)."""

    centers: np.ndarray
    covariances: np.ndarray
    rgbs: np.ndarray
    opacities: np.ndarray

    @classmethod
    def from_splats(cls, splats: Splats) -> "SplatArrays":
        rgb = (splats.base_rgb * 255.0 + 0.5).astype(np.uint8)
        return cls(
            centers=np.ascontiguousarray(splats.means, np.float32),
            covariances=splat_covariances(splats.quats, splats.scales),
            rgbs=rgb,
            opacities=splats.opacities.reshape(-1, 1).astype(np.float32),
        )


class Highlighter:
    """Display colours uint8 [N, 3] for a selection mask [N] bool (None = nothing selected).

    The two candidate colours of each Gaussian are packed as uint32 RGBA words, so a selection
    costs one `np.where` over N words; the result is a [N, 3] view of the packed [N, 4] bytes."""

    def __init__(self, base_rgb_u8: np.ndarray):
        self.base = np.ascontiguousarray(base_rgb_u8, np.uint8)
        selected, dimmed = highlight_colors(self.base / 255.0)
        self._selected = _pack_rgba((np.clip(selected, 0, 1) * 255.0 + 0.5).astype(np.uint8))
        self._dimmed = _pack_rgba((np.clip(dimmed, 0, 1) * 255.0 + 0.5).astype(np.uint8))

    def rgbs(self, mask: np.ndarray | None) -> np.ndarray:
        if mask is None:
            return self.base
        return np.where(mask, self._selected, self._dimmed).view(np.uint8).reshape(-1, 4)[:, :3]


def _pack_rgba(rgb_u8: np.ndarray) -> np.ndarray:
    """uint8 [N, 3] -> uint32 [N] words holding (r, g, b, 0) in memory order."""
    rgba = np.zeros((len(rgb_u8), 4), np.uint8)
    rgba[:, :3] = rgb_u8
    return rgba.view(np.uint32).reshape(-1)
