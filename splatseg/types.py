"""Plain data shared by every stage: `Splats`, `Cameras`, `Segments`.

Conventions (used everywhere in splatseg):
- World frame: whatever frame the scene's cameras are given in; units are the scene's units.
- Camera frame: OpenCV (x right, y down, z forward). `viewmats` map world -> camera.
- Pixels: origin at the image's top-left corner, x right, y down; pixel (i, j) covers
  [i, i+1) x [j, j+1), so its centre is (i + 0.5, j + 0.5).
- Dimension letters: N Gaussians, C cameras, D channels, M segments, L segment levels, K queries.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

SH_C0 = 0.28209479177387814
"""Zeroth spherical-harmonic basis constant: rgb = SH_C0 * f_dc + 0.5."""


def num_sh_bases(degree: int) -> int:
    """Number of SH coefficients per colour channel for `degree` (0..3)."""
    return (degree + 1) ** 2


@dataclass
class Splats:
    """A 3DGS scene with the *raw* values of the reference PLY (no activations applied).

    Attributes:
        means: float32 [N, 3], world frame.
        quats: float32 [N, 4], w x y z, not necessarily normalised.
        log_scales: float32 [N, 3], natural log of the per-axis standard deviations (world units).
        opacity_logits: float32 [N], logit of opacity.
        sh0: float32 [N, 1, 3], DC SH coefficient per colour channel (`f_dc_0..2`).
        shN: float32 [N, B-1, 3], higher-order SH coefficients (B = (degree+1)^2), coefficient-major
            here; the PLY stores them channel-major (`f_rest_*`), io/ply.py converts.
        normals: float32 [N, 3] or None (`nx ny nz`, usually zeros).
        extra: other per-vertex properties kept from the file, name -> [N] array (any dtype).
    """

    means: np.ndarray
    quats: np.ndarray
    log_scales: np.ndarray
    opacity_logits: np.ndarray
    sh0: np.ndarray
    shN: np.ndarray
    normals: np.ndarray | None = None
    extra: dict[str, np.ndarray] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.means.shape[0])

    @property
    def sh_degree(self) -> int:
        bases = 1 + self.shN.shape[1]
        degree = int(round(np.sqrt(bases))) - 1
        if num_sh_bases(degree) != bases:
            raise ValueError(f"{bases} SH coefficients per channel is not (d+1)^2 for any degree d")
        return degree

    # Activations live here, in one place.
    @property
    def scales(self) -> np.ndarray:
        """float32 [N, 3] per-axis standard deviations in world units."""
        return np.exp(self.log_scales)

    @property
    def opacities(self) -> np.ndarray:
        """float32 [N] opacities in (0, 1)."""
        return (1.0 / (1.0 + np.exp(-self.opacity_logits.astype(np.float64)))).astype(np.float32)

    @property
    def footprint_areas(self) -> np.ndarray:
        """float64 [N] product of the two largest standard deviations (squared world units): the
        size of the surface patch a Gaussian paints, opacity left out."""
        s = np.sort(self.scales.astype(np.float64), axis=1)
        return s[:, 1] * s[:, 2]

    @property
    def unit_quats(self) -> np.ndarray:
        """float32 [N, 4] normalised w x y z quaternions."""
        norm = np.linalg.norm(self.quats, axis=-1, keepdims=True)
        return (self.quats / np.maximum(norm, 1e-12)).astype(np.float32)

    @property
    def sh_coeffs(self) -> np.ndarray:
        """float32 [N, B, 3] all SH coefficients (DC first), as gsplat's `colors` with `sh_degree`."""
        return np.concatenate([self.sh0, self.shN], axis=1)

    @property
    def base_rgb(self) -> np.ndarray:
        """float32 [N, 3] view-independent colour in [0, 1] from the DC term alone."""
        return np.clip(self.sh0[:, 0, :] * SH_C0 + 0.5, 0.0, 1.0).astype(np.float32)

    def subset(self, index: np.ndarray) -> "Splats":
        """Rows selected by a boolean mask [N] or an integer index array."""
        return Splats(
            means=self.means[index],
            quats=self.quats[index],
            log_scales=self.log_scales[index],
            opacity_logits=self.opacity_logits[index],
            sh0=self.sh0[index],
            shN=self.shN[index],
            normals=None if self.normals is None else self.normals[index],
            extra={k: v[index] for k, v in self.extra.items()},
        )

    def torch_params(self, device: str = "cpu"):
        """Activated tensors for `splatseg.render.render`: a dict with
        means [N,3], quats [N,4] (unit), scales [N,3], opacities [N], sh [N,B,3] (float32)."""
        import torch

        def t(a: np.ndarray):
            return torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32)).to(device)

        return {
            "means": t(self.means),
            "quats": t(self.unit_quats),
            "scales": t(self.scales),
            "opacities": t(self.opacities),
            "sh": t(self.sh_coeffs),
        }


@dataclass
class Cameras:
    """C posed pinhole cameras.

    Attributes:
        viewmats: float64 [C, 4, 4] world -> camera transforms, OpenCV camera axes.
        Ks: float64 [C, 3, 3] intrinsics in pixels (fx, fy, cx, cy; cx = W/2 for a centred
            principal point, following the pixel-centre convention above).
        widths, heights: int64 [C] image sizes in pixels.
        names: C image stems (file name without extension), unique.
        image_paths: C image files (may not exist for synthetic cameras).
        distortion: float64 [C, 4] (k1 k2 p1 p2), [C, 5] (+ k3) or [C, 8] (+ k3 k4 k5, k6: the rational
            terms of COLMAP's FULL_OPENCV), OpenCV's order and meaning, or None. The renderer is
            pinhole: stages undistort the images first (`splatseg.data.undistort`).
    """

    viewmats: np.ndarray
    Ks: np.ndarray
    widths: np.ndarray
    heights: np.ndarray
    names: list[str]
    image_paths: list[Path]
    distortion: np.ndarray | None = None

    def __len__(self) -> int:
        return int(self.viewmats.shape[0])

    def __post_init__(self) -> None:
        C = self.viewmats.shape[0]
        if self.viewmats.shape != (C, 4, 4) or self.Ks.shape != (C, 3, 3):
            raise ValueError(f"viewmats must be [C,4,4] and Ks [C,3,3], got {self.viewmats.shape}, {self.Ks.shape}")
        if len(self.names) != C or len(self.image_paths) != C or len(self.widths) != C or len(self.heights) != C:
            raise ValueError("names, image_paths, widths and heights must each have one entry per camera")
        if len(set(self.names)) != C:
            raise ValueError("image stems must be unique")

    @property
    def camtoworlds(self) -> np.ndarray:
        """float64 [C, 4, 4] camera -> world, OpenCV camera axes."""
        return np.linalg.inv(self.viewmats)

    @property
    def centers(self) -> np.ndarray:
        """float64 [C, 3] camera centres in the world frame."""
        return self.camtoworlds[:, :3, 3]

    def index_of(self, name: str) -> int:
        """Index of the camera whose image stem is `name`; ValueError naming it if unknown."""
        try:
            return self.names.index(name)
        except ValueError:
            raise ValueError(f"unknown image name {name!r} (the scene has {len(self.names)} images, e.g. {self.names[:3]})") from None

    def subset(self, index) -> "Cameras":
        """Cameras selected by an integer index list/array or boolean mask."""
        idx = np.arange(len(self))[index]
        return Cameras(
            viewmats=self.viewmats[idx],
            Ks=self.Ks[idx],
            widths=self.widths[idx],
            heights=self.heights[idx],
            names=[self.names[i] for i in idx],
            image_paths=[self.image_paths[i] for i in idx],
            distortion=None if self.distortion is None else self.distortion[idx],
        )

    def downscaled(self, factor: float) -> "Cameras":
        """Same cameras for images resized by 1/factor (sizes rounded to the nearest pixel);
        intrinsics scale with the actual size ratio so pixel edges stay aligned."""
        if factor <= 0:
            raise ValueError(f"downscale factor must be positive, got {factor}")
        new_w = np.maximum(1, np.round(self.widths / factor)).astype(np.int64)
        new_h = np.maximum(1, np.round(self.heights / factor)).astype(np.int64)
        Ks = self.Ks.copy()
        sx = new_w / self.widths
        sy = new_h / self.heights
        Ks[:, 0, :] *= sx[:, None]
        Ks[:, 1, :] *= sy[:, None]
        return replace(self, Ks=Ks, widths=new_w, heights=new_h)


@dataclass
class Segments:
    """Multi-level 2D segments of one image (docs/FORMATS.md, `segments/<stem>.npz`).

    Attributes:
        segmaps: int32 [L, H, W]; level 0 coarsest (whole objects); values index this image's
            segment table, -1 = no segment; indices unique across levels.
        embeddings: float32 [M, E] L2-normalised image embedding per segment, or None.
        scores: float32 [M] per-segment confidence, or None.
        model: name of the producer (e.g. "sam-vit_h", "felzenszwalb-rgbd").
    """

    segmaps: np.ndarray
    embeddings: np.ndarray | None = None
    scores: np.ndarray | None = None
    model: str = "unknown"

    @property
    def num_segments(self) -> int:
        """M = segmaps.max() + 1 (0 when the image has no segment)."""
        return int(self.segmaps.max()) + 1 if self.segmaps.size else 0

    @property
    def num_levels(self) -> int:
        return int(self.segmaps.shape[0])
