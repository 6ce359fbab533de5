"""Image and mask files <-> numpy arrays (PIL).

Images come back as uint8 RGB [H, W, 3] in the pixels as stored: EXIF orientation is *not*
applied, because camera intrinsics (COLMAP, nerfstudio) describe the stored pixel grid. Images with
an alpha channel are composited over `background` (black unless asked), i.e. rgb * alpha + bg * (1 -
alpha). 16-bit greyscale images are scaled to 8 bits. Sizes are `(W, H)` like PIL.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from splatseg.io.atomic import atomic_write

__all__ = ["ImageError", "load_image", "save_image", "load_mask", "image_size"]


class ImageError(ValueError):
    """An image or mask file that is missing or cannot be read/written; one-line message."""


def _reason(e: BaseException) -> str:
    """First line of an exception's message (or its type name)."""
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def _open(path: Path) -> Image.Image:
    """Open `path` with PIL and decode it, or raise ImageError naming the file."""
    if not path.exists():
        raise ImageError(f"{path}: no such image file")
    try:
        img = Image.open(path)
        img.load()
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as e:
        raise ImageError(f"{path}: cannot read image ({_reason(e)})") from None
    return img


def _check_size(size, path: Path) -> tuple[int, int] | None:
    if size is None:
        return None
    w, h = int(size[0]), int(size[1])
    if w < 1 or h < 1:
        raise ImageError(f"{path}: invalid target size {tuple(size)} (expected positive (W, H))")
    return w, h


def image_size(path: str | os.PathLike) -> tuple[int, int]:
    """(W, H) of an image file from its header, without decoding the pixels."""
    path = Path(path)
    if not path.exists():
        raise ImageError(f"{path}: no such image file")
    try:
        with Image.open(path) as img:
            return int(img.width), int(img.height)
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as e:
        raise ImageError(f"{path}: cannot read image ({_reason(e)})") from None


def _to_rgb(img: Image.Image, background: tuple[int, int, int]) -> np.ndarray:
    """float32 [H, W, 3] in 0..255 (alpha composited over `background`) or uint8 [H, W, 3]."""
    if img.mode in ("I;16", "I;16L", "I;16B", "I"):
        grey = np.asarray(img).astype(np.float32) / 257.0  # 16-bit range -> 8-bit
        return np.clip(np.rint(grey), 0, 255).astype(np.uint8)[..., None].repeat(3, axis=2)
    has_alpha = img.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (img.mode == "P" and "transparency" in img.info)
    if not has_alpha:
        return np.asarray(img.convert("RGB"))
    rgba = np.asarray(img.convert("RGBA")).astype(np.float32)
    alpha = rgba[..., 3:] / 255.0
    bg = np.asarray(background, dtype=np.float32)
    return rgba[..., :3] * alpha + bg * (1.0 - alpha)


def load_image(
    path: str | os.PathLike,
    size: tuple[int, int] | None = None,
    background: tuple[int, int, int] = (0, 0, 0),
) -> np.ndarray:
    """uint8 [H, W, 3] RGB pixels of an image file.

    Args:
        size: optional target (W, H); shrinking uses area averaging (PIL BOX), enlarging bilinear.
        background: RGB (0..255) that transparent pixels are composited over (default black).
    Raises ImageError for a missing or unreadable file.
    """
    path = Path(path)
    target = _check_size(size, path)
    rgb = _to_rgb(_open(path), background)
    rgb = np.clip(np.rint(rgb), 0, 255).astype(np.uint8) if rgb.dtype != np.uint8 else rgb
    if target is not None and target != (rgb.shape[1], rgb.shape[0]):
        shrink = target[0] <= rgb.shape[1] and target[1] <= rgb.shape[0]
        method = Image.Resampling.BOX if shrink else Image.Resampling.BILINEAR
        rgb = np.asarray(Image.fromarray(rgb).resize(target, method))
    return np.ascontiguousarray(rgb)


def load_mask(path: str | os.PathLike, size: tuple[int, int] | None = None) -> np.ndarray:
    """bool [H, W]: True where the mask file is nonzero (palette images: nonzero palette index;
    colour images: any nonzero colour channel, alpha ignored). `size=(W, H)` resizes with nearest
    neighbour. Raises ImageError for a missing or unreadable file."""
    path = Path(path)
    target = _check_size(size, path)
    img = _open(path)
    arr = np.asarray(img)
    if arr.ndim == 3:
        channels = 1 if img.mode in ("LA", "La", "PA") else 3
        arr = arr[..., :channels].any(axis=-1)
    mask = arr != 0
    if target is not None and target != (mask.shape[1], mask.shape[0]):
        resized = Image.fromarray(mask.astype(np.uint8) * 255).resize(target, Image.Resampling.NEAREST)
        mask = np.asarray(resized) > 127
    return np.ascontiguousarray(mask)


def save_image(path: str | os.PathLike, array: np.ndarray) -> None:
    """Write uint8 [H, W, 3] RGB, [H, W, 4] RGBA, [H, W] grey or bool [H, W] (saved as 0/255) to
    `path`, format from its extension, atomically."""
    path = Path(path)
    array = np.asarray(array)
    if array.dtype == bool and array.ndim == 2:
        array = array.astype(np.uint8) * 255
    if array.dtype != np.uint8 or not (array.ndim == 2 or (array.ndim == 3 and array.shape[2] in (3, 4))):
        raise ImageError(f"{path}: expected uint8 [H, W], [H, W, 3] or [H, W, 4] (or bool [H, W]), "
                         f"got {array.dtype} {list(array.shape)}")
    fmt = Image.registered_extensions().get(path.suffix.lower())
    if fmt is None:
        raise ImageError(f"{path}: unknown image file extension {path.suffix!r}")
    img = Image.fromarray(np.ascontiguousarray(array))
    try:
        with atomic_write(path) as f:
            img.save(f, format=fmt)
    except (OSError, ValueError, KeyError) as e:
        raise ImageError(f"{path}: cannot write image ({_reason(e)})") from None
