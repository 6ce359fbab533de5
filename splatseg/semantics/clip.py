"""CLIP embeddings of image segments and of text, and LERF-style relevancy.

- `encode_segments(rgb uint8 [H, W, 3] RGB, segmaps int32 [L, H, W]) -> float32 [M, E]`, one row per
  segment index (M = segmaps.max() + 1), L2-normalised; a segment with no pixels gets a zero row.
  Each segment is seen as a *masked crop*: its bounding box padded by `crop_pad` (10 %) on each
  side and made square (so the model's centre crop cuts nothing), pixels outside the mask replaced
  by the model's mean colour (a neutral grey that normalises to ~0), then the model's own
  preprocess (resize, normalise), in batches.
- `encode_text(list[str]) -> float32 [T, E]`, L2-normalised. Refused (SemanticsError) when the model
  has random weights: a text query against random embeddings would be a fake answer.
- `relevancy(query [E], candidates [K, E], negatives [Q, E]) -> [K]` as LERF / LangSplat.
"""

from __future__ import annotations

import functools

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

CANONICAL_NEGATIVES = ("object", "things", "stuff", "texture")
"""LERF's canonical negative phrases for relevancy."""


class SemanticsError(RuntimeError):
    """An encoder that cannot be built or used as asked; the message is one line."""


@dataclass(frozen=True)
class ClipConfig:
    """CLIP model for segment embeddings and text queries (open_clip)."""

    model_name: str = "ViT-B-16"
    """open_clip architecture name (open_clip.list_models())."""
    pretrained: str | None = "laion2b_s34b_b88k"
    """open_clip weights tag (downloaded to its cache when online) or a local checkpoint file; None =
    random weights (segments can be embedded, text queries are refused)."""
    device: str = "auto"
    """Torch device: "auto" (cuda if available), "cpu", "cuda", ..."""
    batch_size: int = 64
    """Segment crops per forward pass."""
    crop_pad: float = 0.1
    """Padding of each segment's bounding box, as a fraction of its size per side."""


def _one_line(e: BaseException) -> str:
    text = " ".join(str(e).split()) or type(e).__name__
    return text if len(text) <= 160 else text[:157] + "..."


def _resolve_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


class ClipEncoder:
    """open_clip image/text encoder; see the module docstring.

    Args:
        model_name: open_clip architecture name.
        pretrained: weights tag, local checkpoint path, or None for random weights.
        device: "auto" | "cpu" | "cuda" | ...
        cache_dir: open_clip download cache (default: open_clip's own).
        batch_size, crop_pad: see `ClipConfig`.
        model_kwargs: overrides of the architecture config (e.g. a tiny model in tests).
    """

    def __init__(self, model_name: str = "ViT-B-16", pretrained: str | None = "laion2b_s34b_b88k", device: str = "auto",
                 cache_dir: str | os.PathLike | None = None, batch_size: int = 64, crop_pad: float = 0.1,
                 model_kwargs: dict | None = None):
        import open_clip
        import torch

        self.model_name = model_name
        self.pretrained = None if pretrained in (None, "") else str(pretrained)
        self.device = _resolve_device(device)
        self.batch_size = int(batch_size)
        self.crop_pad = float(crop_pad)
        if model_name not in open_clip.list_models() and not model_name.startswith(("hf-hub:", "local-dir:")):
            raise SemanticsError(f"unknown open_clip model {model_name!r} (see open_clip.list_models())")
        looks_like_file = self.pretrained is not None and (
            os.path.sep in self.pretrained or self.pretrained.endswith((".pt", ".pth", ".bin", ".safetensors"))
        )
        if looks_like_file and not os.path.isfile(self.pretrained):
            raise SemanticsError(f"CLIP checkpoint {self.pretrained} does not exist; pass --clip-pretrained PATH to an existing file")
        try:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(0)  # random-weight models are reproducible
                model, _, preprocess = open_clip.create_model_and_transforms(
                    model_name, pretrained=self.pretrained, device=self.device,
                    cache_dir=None if cache_dir is None else str(cache_dir), **(model_kwargs or {})
                )
        except Exception as e:
            if self.pretrained is None:
                raise SemanticsError(f"cannot build open_clip model {model_name}: {_one_line(e)}") from None
            if looks_like_file:
                raise SemanticsError(
                    f"cannot load CLIP checkpoint {self.pretrained} into open_clip {model_name}: {_one_line(e)}"
                ) from None
            raise SemanticsError(
                f"cannot load open_clip weights {self.pretrained!r} for {model_name} (offline or unknown tag?): "
                f"{_one_line(e)}; pass --clip-pretrained PATH to a local checkpoint file"
            ) from None
        self.model = model.eval()
        self.preprocess = preprocess
        self.tokenizer = open_clip.get_tokenizer(model_name)
        self.has_weights = self.pretrained is not None
        mean = getattr(getattr(model, "visual", None), "image_mean", None) or (0.48145466, 0.4578275, 0.40821073)
        self._fill = tuple(int(round(255 * float(m))) for m in mean)

    @classmethod
    def from_config(cls, config: ClipConfig, **kwargs) -> "ClipEncoder":
        return cls(config.model_name, config.pretrained, config.device, batch_size=config.batch_size, crop_pad=config.crop_pad, **kwargs)

    @property
    def name(self) -> str:
        """"open_clip:<model>/<weights>" (weights = tag or checkpoint file name, "random" when None)."""
        if self.pretrained is None:
            weights = "random"
        elif os.path.sep in self.pretrained or os.path.isfile(self.pretrained):
            weights = Path(self.pretrained).name
        else:
            weights = self.pretrained
        return f"open_clip:{self.model_name}/{weights}"

    @property
    def dim(self) -> int:
        """E, the embedding size."""
        import torch

        with torch.no_grad():
            return int(self.model.encode_text(self.tokenizer(["a"]).to(self.device)).shape[-1])

    def encode_images(self, crops: list[np.ndarray]) -> np.ndarray:
        """float32 [N, E] L2-normalised embeddings of uint8 [h, w, 3] RGB images."""
        import torch
        from PIL import Image

        out = []
        with torch.no_grad():
            for i in range(0, len(crops), self.batch_size):
                batch = torch.stack([self.preprocess(Image.fromarray(c)) for c in crops[i : i + self.batch_size]]).to(self.device)
                out.append(self.model.encode_image(batch).float().cpu())
        if not out:
            return np.zeros((0, self.dim), np.float32)
        emb = torch.cat(out)
        return torch.nn.functional.normalize(emb, dim=-1).numpy().astype(np.float32)

    def encode_segments(self, rgb: np.ndarray, segmaps: np.ndarray, num_segments: int | None = None) -> np.ndarray:
        """float32 [M, E]; see the module docstring. `num_segments` overrides M (>= segmaps.max()+1)."""
        return _embed_segments(self, rgb, segmaps, num_segments)

    def encode_text(self, texts: list[str], allow_random: bool = False) -> np.ndarray:
        """float32 [T, E] L2-normalised. SemanticsError when the weights are random, unless allow_random."""
        import torch

        if not allow_random:
            require_weights(self, "a text query")
        if isinstance(texts, str):
            texts = [texts]
        with torch.no_grad():
            emb = self.model.encode_text(self.tokenizer(list(texts)).to(self.device)).float().cpu()
        return torch.nn.functional.normalize(emb, dim=-1).numpy().astype(np.float32)


def require_weights(encoder, purpose: str = "a text query") -> None:
    """SemanticsError (one line) unless `encoder.has_weights`."""
    if not getattr(encoder, "has_weights", False):
        raise SemanticsError(
            f"{purpose} needs pretrained CLIP weights, but {getattr(encoder, 'name', 'the encoder')} has random weights; "
            "pass --clip-pretrained PATH (or a weights tag when online)"
        )


def masked_crops(rgb: np.ndarray, segmaps: np.ndarray, pad: float = 0.1, fill=(123, 117, 104)) -> tuple[list[int], list[np.ndarray]]:
    """(segment indices, uint8 [s, s, 3] square crops), one per segment with pixels.

    The crop is the segment's bounding box padded by `pad` of its size on each side, widened to a
    square around its centre; pixels outside the mask or the image are `fill`.
    """
    from scipy import ndimage as ndi

    if not isinstance(rgb, np.ndarray) or rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise SemanticsError(f"expected an RGB image as uint8 [H, W, 3], got {getattr(rgb, 'dtype', type(rgb))} {getattr(rgb, 'shape', '')}")
    segmaps = np.asarray(segmaps)
    if segmaps.ndim == 2:
        segmaps = segmaps[None]
    if segmaps.shape[1:] != rgb.shape[:2]:
        raise SemanticsError(f"segmaps {segmaps.shape[1:]} and image {rgb.shape[:2]} differ in size")
    H, W = rgb.shape[:2]
    fill = np.asarray(fill, np.uint8)
    index: list[int] = []
    crops: list[np.ndarray] = []
    for level in segmaps:
        boxes = ndi.find_objects(level.astype(np.int64) + 1)  # label m + 1 (entry m) is segment m; -1 -> 0 is skipped
        for m, box in enumerate(boxes):
            if box is None:
                continue
            (y0, y1), (x0, x1) = (box[0].start, box[0].stop), (box[1].start, box[1].stop)
            side = max(y1 - y0, x1 - x0) * (1 + 2 * pad)
            side = max(int(np.ceil(side)), 1)
            cy, cx = (y0 + y1) / 2, (x0 + x1) / 2
            ty, tx = int(np.floor(cy - side / 2)), int(np.floor(cx - side / 2))
            crop = np.empty((side, side, 3), np.uint8)
            crop[:] = fill
            sy0, sy1 = max(ty, 0), min(ty + side, H)
            sx0, sx1 = max(tx, 0), min(tx + side, W)
            region = rgb[sy0:sy1, sx0:sx1]
            mask = level[sy0:sy1, sx0:sx1] == m
            crop[sy0 - ty : sy1 - ty, sx0 - tx : sx1 - tx] = np.where(mask[..., None], region, fill)
            index.append(m)
            crops.append(crop)
    return index, crops


def _embed_segments(encoder, rgb: np.ndarray, segmaps: np.ndarray, num_segments: int | None) -> np.ndarray:
    """Shared by both encoders: masked crops of every segment -> encoder.encode_images -> [M, E],
    zero rows for segments without pixels."""
    index, crops = masked_crops(rgb, segmaps, encoder.crop_pad, encoder._fill)
    M = int(segmaps.max()) + 1 if segmaps.size else 0
    if num_segments is not None:
        if num_segments < M:
            raise SemanticsError(f"num_segments {num_segments} < segmaps.max()+1 = {M}")
        M = int(num_segments)
    out = np.zeros((M, encoder.dim), np.float32)
    if crops:
        out[np.asarray(index)] = encoder.encode_images(crops)
    return out


@functools.lru_cache(maxsize=2)
def load_text_encoder(model_name: str, pretrained: str) -> "ClipEncoder":
    """The encoder a run was trained with (run.json `clip_model_name`, `clip_pretrained`), loaded
    once per process and shared (the `segment` command, `export-all` and every viewer tab)."""
    return ClipEncoder(model_name, pretrained)


def relevancy(query_emb: np.ndarray, candidates: np.ndarray, negatives: np.ndarray, temperature: float = 10.0) -> np.ndarray:
    """LERF relevancy [K] of each candidate embedding for the query: for every negative phrase j,
    p_j = softmax(t * [c.q, c.n_j])[0]; the score is min_j p_j (0.5 = no better than a negative).
    query_emb [E], candidates [K, E], negatives [Q, E], all L2-normalised; t = 10 as LERF/LangSplat."""
    q = np.asarray(query_emb, np.float64).reshape(-1)
    c = np.asarray(candidates, np.float64)
    n = np.asarray(negatives, np.float64)
    if c.ndim != 2 or n.ndim != 2 or c.shape[1] != q.size or n.shape[1] != q.size:
        raise ValueError(f"relevancy expects query [E], candidates [K, E], negatives [Q, E]; got {q.shape}, {c.shape}, {n.shape}")
    if n.shape[0] == 0:
        raise ValueError("relevancy needs at least one negative phrase")
    pos = (c @ q)[:, None]  # [K, 1]
    neg = c @ n.T  # [K, Q]
    p = 1.0 / (1.0 + np.exp(temperature * (neg - pos)))  # softmax of two = sigmoid of the difference
    return p.min(axis=1).astype(np.float32)


class HFClipEncoder:
    """transformers backend: `CLIPModel` + `CLIPProcessor` from a local folder or a hub id (hub ids
    download when online). Same interface as `ClipEncoder`; the masked crops are the same, resized
    and normalised by the processor.

    Args:
        model_path: folder with config.json, weights and the processor files, or a hub id.
        device: "auto" | "cpu" | "cuda" | ...
        random_weights: build the architecture from the config only (tests); text queries refused.
    """

    def __init__(self, model_path: str | os.PathLike = "openai/clip-vit-base-patch16", device: str = "auto", batch_size: int = 64,
                 crop_pad: float = 0.1, random_weights: bool = False):
        import torch
        from transformers import CLIPConfig, CLIPModel, CLIPProcessor

        self.model_path = str(model_path)
        self.device = _resolve_device(device)
        self.batch_size = int(batch_size)
        self.crop_pad = float(crop_pad)
        self.has_weights = not random_weights
        try:
            self.processor = CLIPProcessor.from_pretrained(self.model_path)
            if random_weights:
                with torch.random.fork_rng(devices=[]):
                    torch.manual_seed(0)
                    model = CLIPModel(CLIPConfig.from_pretrained(self.model_path))
            else:
                model = CLIPModel.from_pretrained(self.model_path)
        except Exception as e:
            raise SemanticsError(
                f"cannot load transformers CLIP from {self.model_path} (offline, or not a CLIP folder?): {_one_line(e)}; "
                "pass --clip-pretrained PATH to a local folder"
            ) from None
        self.model = model.to(self.device).eval()
        mean = getattr(self.processor.image_processor, "image_mean", None) or (0.48145466, 0.4578275, 0.40821073)
        self._fill = tuple(int(round(255 * float(m))) for m in mean)

    @property
    def name(self) -> str:
        """"hf:<folder name or hub id>" ("/random" appended for random weights)."""
        p = Path(self.model_path)
        base = p.name if p.exists() else self.model_path
        return f"hf:{base}" + ("" if self.has_weights else "/random")

    @property
    def dim(self) -> int:
        return int(self.model.config.projection_dim)

    @staticmethod
    def _features(out):
        return out if hasattr(out, "shape") else out.pooler_output  # transformers >= 5 returns a model output

    def encode_images(self, crops: list[np.ndarray]) -> np.ndarray:
        import torch

        out = []
        with torch.no_grad():
            for i in range(0, len(crops), self.batch_size):
                inputs = self.processor(images=list(crops[i : i + self.batch_size]), return_tensors="pt").to(self.device)
                out.append(self._features(self.model.get_image_features(**inputs)).float().cpu())
        if not out:
            return np.zeros((0, self.dim), np.float32)
        return torch.nn.functional.normalize(torch.cat(out), dim=-1).numpy().astype(np.float32)

    def encode_segments(self, rgb: np.ndarray, segmaps: np.ndarray, num_segments: int | None = None) -> np.ndarray:
        return _embed_segments(self, rgb, segmaps, num_segments)

    def encode_text(self, texts: list[str], allow_random: bool = False) -> np.ndarray:
        import torch

        if not allow_random:
            require_weights(self, "a text query")
        if isinstance(texts, str):
            texts = [texts]
        inputs = self.processor(text=list(texts), return_tensors="pt", padding=True).to(self.device)
        with torch.no_grad():
            emb = self._features(self.model.get_text_features(**inputs)).float().cpu()
        return torch.nn.functional.normalize(emb, dim=-1).numpy().astype(np.float32)
