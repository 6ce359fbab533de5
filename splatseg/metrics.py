"""Mask metrics (NVOS / SPIn-NeRF protocol): IoU, pixel accuracy, boundary IoU.

All take boolean arrays of equal shape ([H, W] for images, [N] for Gaussians).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage


def iou(pred: np.ndarray, gt: np.ndarray) -> float:
    """|pred & gt| / |pred | gt|; 1.0 when both are empty."""
    pred, gt = np.asarray(pred, bool), np.asarray(gt, bool)
    if pred.shape != gt.shape:
        raise ValueError(f"mask shapes differ: {pred.shape} vs {gt.shape}")
    union = np.logical_or(pred, gt).sum()
    return 1.0 if union == 0 else float(np.logical_and(pred, gt).sum() / union)


def accuracy(pred: np.ndarray, gt: np.ndarray) -> float:
    """Fraction of pixels where pred == gt."""
    pred, gt = np.asarray(pred, bool), np.asarray(gt, bool)
    if pred.shape != gt.shape:
        raise ValueError(f"mask shapes differ: {pred.shape} vs {gt.shape}")
    return float((pred == gt).mean())


def boundary(mask: np.ndarray, width: int) -> np.ndarray:
    """Pixels of `mask` within `width` pixels of its border (inner boundary band)."""
    mask = np.asarray(mask, bool)
    eroded = ndimage.binary_erosion(mask, iterations=width, border_value=0)
    return mask & ~eroded


def boundary_iou(pred: np.ndarray, gt: np.ndarray, dilation_ratio: float = 0.02) -> float:
    """Boundary IoU (Cheng et al. 2021): IoU of the masks' boundary bands, band width =
    dilation_ratio * image diagonal (at least 1 pixel)."""
    pred, gt = np.asarray(pred, bool), np.asarray(gt, bool)
    if pred.shape != gt.shape or pred.ndim != 2:
        raise ValueError(f"boundary IoU needs two [H, W] masks, got {pred.shape} and {gt.shape}")
    width = max(1, int(round(dilation_ratio * np.hypot(*pred.shape))))
    return iou(boundary(pred, width), boundary(gt, width))
