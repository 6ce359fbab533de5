"""SAM's image encoder as the teacher of feature imitation, and the embedding grid it works on.

The teacher is a segment-anything `Sam` from its own registry (`sam_model_registry[vit_b|vit_l|vit_h]`)
with weights from a checkpoint (a path, or the official file fetched by `splatseg.segments.sam`,
refused in one line when offline), or built with its default random initialisation under a fixed
seed (`random_init`): the benchmark's teacher, whose masks mean nothing for real use.

How SAM sees an image of W x H pixels (`EmbeddingGrid`): `ResizeLongestSide(img_size)` scales it so
its long side is `img_size` (1024), giving `input_size` (h', w') = round(H s), round(W s); the
encoder pads it bottom/right to img_size x img_size and returns an embedding [C, g, g] (C = 256,
g = 64: one cell per 16 x 16 input pixels). Cell (row r, col c) covers original pixels
x in [16 c W / w', 16 (c + 1) W / w'), y likewise with H / h'. Rendering the imitation field at the
camera whose intrinsics are scaled by (w' / W) / 16 and (h' / H) / 16 puts one rendered pixel on
each cell; the cells past the image (the padding) are filled separately.

Teacher embeddings of photos are cached on disk (`cached_embedding`): one `<stem>.npz` per view with
`embedding` float16 [C, g, g], the teacher's name and the SHA-256 of the pixels, reused only when
both match. On a CPU, vit_b's encoder takes tens of seconds per image, so this cache is what makes
a second `imitate` affordable.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from splatseg.run import save_npz
from splatseg.segments.sam import load_sam, resolve_checkpoint, resolve_device

SamModelType = Literal["vit_b", "vit_l", "vit_h"]


class TeacherError(ValueError):
    """A teacher that cannot be built or used; one-line message."""


@dataclass(frozen=True)
class TeacherSpec:
    """Which SAM teaches: a registry architecture and either a checkpoint or a random-init seed."""

    model_type: SamModelType = "vit_b"
    checkpoint: Path | None = None
    random_init: int | None = None

    def __post_init__(self) -> None:
        if self.model_type not in ("vit_b", "vit_l", "vit_h"):
            raise TeacherError(f"unknown SAM model type {self.model_type!r}; choose vit_b, vit_l or vit_h")
        if self.random_init is not None and self.checkpoint is not None:
            raise TeacherError("give either --sam-checkpoint or --sam-random-init, not both")


def build_teacher_model(spec: TeacherSpec, device: str = "auto"):
    """The `segment_anything.modeling.Sam` of `spec` in eval mode. Random init runs under
    `torch.manual_seed(random_init)` inside a forked RNG, so the caller's random state is untouched
    and the same seed gives the same weights (same torch version)."""
    from segment_anything import sam_model_registry

    if spec.random_init is None:
        return load_sam(spec.model_type, spec.checkpoint, device)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(spec.random_init))
        model = sam_model_registry[spec.model_type](checkpoint=None)
    return model.to(resolve_device(device)).eval()


def teacher_name(spec: TeacherSpec) -> str:
    """Names the teacher's weights: "sam-vit_b/random-init-0" or "sam-vit_b/sha256-<16 hex>"."""
    if spec.random_init is not None:
        return f"sam-{spec.model_type}/random-init-{int(spec.random_init)}"
    path = resolve_checkpoint(spec.model_type, spec.checkpoint)
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 22):
            h.update(block)
    return f"sam-{spec.model_type}/sha256-{h.hexdigest()[:16]}"


@dataclass(frozen=True)
class EmbeddingGrid:
    """SAM's view of a W x H image (module doc): input_size (h', w'), patch, grid g, valid cells."""

    width: int
    height: int
    img_size: int = 1024
    grid: int = 64

    @property
    def patch(self) -> int:
        """Input pixels per embedding cell along each axis (16 for SAM)."""
        return self.img_size // self.grid

    @property
    def input_size(self) -> tuple[int, int]:
        """(h', w') after ResizeLongestSide, exactly as segment-anything rounds it."""
        from segment_anything.utils.transforms import ResizeLongestSide

        return ResizeLongestSide.get_preprocess_shape(self.height, self.width, self.img_size)

    @property
    def valid(self) -> tuple[int, int]:
        """(rows, cols) of cells that hold image content (the rest is padding)."""
        h, w = self.input_size
        return min(self.grid, math.ceil(h / self.patch)), min(self.grid, math.ceil(w / self.patch))

    def cell_K(self, K: np.ndarray, supersample: int = 1) -> np.ndarray:
        """Intrinsics [3, 3] of the camera that renders `supersample` pixels per cell along each axis
        over the valid cells, from the image's intrinsics K [3, 3] (pixels of W x H)."""
        h, w = self.input_size
        out = np.array(K, np.float64, copy=True)
        out[0, :] *= (w / self.width) / self.patch * supersample
        out[1, :] *= (h / self.height) / self.patch * supersample
        return out


def grid_of(model, width: int, height: int) -> EmbeddingGrid:
    """The `EmbeddingGrid` of a W x H image for a `Sam` (or anything with its prompt encoder)."""
    pe = model.prompt_encoder
    return EmbeddingGrid(int(width), int(height), int(pe.input_image_size[0]), int(pe.image_embedding_size[0]))


def check_rgb(rgb) -> np.ndarray:
    """The HWC uint8 RGB contract of SAM's input; TeacherError otherwise."""
    if not isinstance(rgb, np.ndarray) or rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise TeacherError(f"SAM's encoder takes an RGB image as uint8 [H, W, 3], got {getattr(rgb, 'dtype', type(rgb))} {getattr(rgb, 'shape', '')}")
    return np.ascontiguousarray(rgb)


class Teacher:
    """SAM's image encoder behind `encode(rgb) -> embedding [C, g, g]` (segment-anything's own
    `SamPredictor.set_image`: resize, normalise, pad, encode)."""

    def __init__(self, model, name: str):
        from segment_anything import SamPredictor

        self.model = model
        self.name = name
        self.predictor = SamPredictor(model)

    @property
    def channels(self) -> int:
        return int(self.model.prompt_encoder.embed_dim)

    def grid(self, width: int, height: int) -> EmbeddingGrid:
        return grid_of(self.model, width, height)

    @torch.no_grad()
    def encode(self, rgb: np.ndarray) -> np.ndarray:
        """float32 [C, g, g] image embedding of an RGB uint8 [H, W, 3] image."""
        self.predictor.set_image(check_rgb(rgb), image_format="RGB")
        out = self.predictor.features[0].float().cpu().numpy()
        self.predictor.reset_image()
        return out


def load_teacher(spec: TeacherSpec, device: str = "auto") -> Teacher:
    return Teacher(build_teacher_model(spec, device), teacher_name(spec))


def image_digest(rgb: np.ndarray) -> str:
    """SHA-256 of an image's shape and pixels."""
    h = hashlib.sha256(repr(rgb.shape).encode())
    h.update(np.ascontiguousarray(rgb).tobytes())
    return h.hexdigest()


def cached_embedding(folder: Path, stem: str, rgb: np.ndarray, teacher: Teacher) -> tuple[np.ndarray, bool]:
    """(embedding float32 [C, g, g], computed_now) for the image `rgb` of view `stem`, read from
    `folder/<stem>.npz` when it was made by the same teacher from the same pixels, otherwise
    encoded and written there (atomically)."""
    path = Path(folder) / f"{stem}.npz"
    digest = image_digest(rgb)
    if path.is_file():
        try:
            with np.load(path, allow_pickle=False) as z:
                if str(z["teacher"]) == teacher.name and str(z["image_sha256"]) == digest:
                    return z["embedding"].astype(np.float32), False
        except Exception:  # unreadable or from another layout: recompute and overwrite
            pass
    emb = teacher.encode(rgb)
    save_npz(path, embedding=emb.astype(np.float16), teacher=np.array(teacher.name), image_sha256=np.array(digest))
    return emb, True
