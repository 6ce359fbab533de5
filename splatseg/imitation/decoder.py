"""SAM's prompt encoder and mask decoder on a precomputed (rendered) image embedding.

`PromptDecoder` wraps segment-anything's own `SamPredictor` around a `Sam` whose image encoder is a
stand-in (`_NoEncoder`: it only carries `img_size`), and answers prompts on any embedding
[1, C, g, g] by setting the predictor's `features`, `original_size`, `input_size` and
`is_image_set` instead of calling `set_image`; `predict` then runs only the prompt encoder and the
mask decoder and returns full-resolution masks (multimask with predicted-IoU scores).

Coordinates: prompts are in splatseg's pixel convention (x right, y down, pixel (i, j) covers
[i, i+1) x [j, j+1)); SAM's prompt encoder treats a coordinate as a pixel *index* and adds 0.5
after resizing, so `to_sam_coords` subtracts half an input pixel (0.5 W / w') before handing the
points over. Boxes are x0 y0 x1 y1 in the same convention (corners, not pixel centres) and are
shifted the same way.

The decoder's weights and architecture travel with the imitation run (`state` / `spec` /
`from_state`), so `segment`, `decode` and the viewer never need the encoder's checkpoint.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from splatseg.imitation.teacher import EmbeddingGrid


class PromptError(ValueError):
    """A prompt the decoder cannot take (outside the image, no positive point, bad box)."""


class _NoEncoder(nn.Module):
    """Stands in for SAM's image encoder: here the embedding is rendered, never encoded."""

    def __init__(self, img_size: int):
        super().__init__()
        self.img_size = int(img_size)

    def forward(self, x):  # pragma: no cover - never called
        raise RuntimeError("this SAM has no image encoder: set a rendered embedding instead")


@dataclass
class DecodedMasks:
    """Decoder output for one prompt set: masks bool [M, H, W] (M = 3 with multimask, else 1),
    scores float32 [M] (SAM's predicted IoU), logits float32 [M, H, W] (before the 0 threshold)."""

    masks: np.ndarray
    scores: np.ndarray
    logits: np.ndarray

    def choose(self, index: int | None = None) -> int:
        """`index` if given (checked), else the mask with the highest score."""
        if index is None or index < 0:
            return int(np.argmax(self.scores))
        if index >= len(self.scores):
            raise PromptError(f"mask index {index} out of range: the decoder returned {len(self.scores)} masks")
        return int(index)


def decoder_spec(prompt_encoder, mask_decoder) -> dict:
    """Architecture of a prompt encoder + mask decoder pair, enough to rebuild them."""
    t = mask_decoder.transformer
    return {
        "embed_dim": int(prompt_encoder.embed_dim),
        "image_embedding_size": [int(s) for s in prompt_encoder.image_embedding_size],
        "input_image_size": [int(s) for s in prompt_encoder.input_image_size],
        "mask_in_chans": int(prompt_encoder.mask_downscaling[3].out_channels),
        "transformer_depth": int(t.depth),
        "transformer_heads": int(t.num_heads),
        "transformer_mlp_dim": int(t.mlp_dim),
        "num_multimask_outputs": int(mask_decoder.num_multimask_outputs),
        "iou_head_depth": int(mask_decoder.iou_prediction_head.num_layers),
        "iou_head_hidden_dim": int(mask_decoder.iou_prediction_head.layers[0].out_features),
    }


def build_from_spec(spec: dict):
    """(PromptEncoder, MaskDecoder) with segment-anything's default activations, untrained."""
    from segment_anything.modeling import MaskDecoder, PromptEncoder, TwoWayTransformer

    try:
        pe = PromptEncoder(
            embed_dim=spec["embed_dim"], image_embedding_size=tuple(spec["image_embedding_size"]),
            input_image_size=tuple(spec["input_image_size"]), mask_in_chans=spec["mask_in_chans"],
        )
        md = MaskDecoder(
            transformer_dim=spec["embed_dim"],
            transformer=TwoWayTransformer(depth=spec["transformer_depth"], embedding_dim=spec["embed_dim"],
                                          num_heads=spec["transformer_heads"], mlp_dim=spec["transformer_mlp_dim"]),
            num_multimask_outputs=spec["num_multimask_outputs"], iou_head_depth=spec["iou_head_depth"],
            iou_head_hidden_dim=spec["iou_head_hidden_dim"],
        )
    except (KeyError, TypeError) as e:
        raise ValueError(f"malformed SAM decoder specification ({type(e).__name__}: {e})") from None
    return pe, md


class PromptDecoder:
    """SAM's prompt encoder + mask decoder behind `predict(embedding, size, points, labels, box)`."""

    def __init__(self, prompt_encoder, mask_decoder):
        from segment_anything import SamPredictor
        from segment_anything.modeling import Sam

        img_size = int(prompt_encoder.input_image_size[0])
        sam = Sam(image_encoder=_NoEncoder(img_size), prompt_encoder=prompt_encoder, mask_decoder=mask_decoder).eval()
        self.sam = sam
        self.predictor = SamPredictor(sam)

    @classmethod
    def from_sam(cls, model) -> "PromptDecoder":
        """Shares the prompt encoder and mask decoder of a full `Sam` (no copies)."""
        return cls(model.prompt_encoder, model.mask_decoder)

    @classmethod
    def from_state(cls, spec: dict, state: dict[str, np.ndarray]) -> "PromptDecoder":
        """Rebuilds from `spec()` and `state()` (keys "prompt_encoder.*", "mask_decoder.*")."""
        pe, md = build_from_spec(spec)
        for prefix, module in (("prompt_encoder.", pe), ("mask_decoder.", md)):
            sub = {k[len(prefix):]: torch.from_numpy(np.asarray(v)) for k, v in state.items() if k.startswith(prefix)}
            try:
                module.load_state_dict(sub, strict=True)
            except RuntimeError as e:
                reason = " ".join(str(e).split())[:160]
                raise ValueError(f"stored SAM decoder weights do not fit their specification: {reason}") from None
        return cls(pe, md)

    def spec(self) -> dict:
        return decoder_spec(self.sam.prompt_encoder, self.sam.mask_decoder)

    def state(self) -> dict[str, np.ndarray]:
        """float32 arrays of every parameter and buffer, keys prefixed by module."""
        out = {}
        for prefix, module in (("prompt_encoder.", self.sam.prompt_encoder), ("mask_decoder.", self.sam.mask_decoder)):
            for k, v in module.state_dict().items():
                out[prefix + k] = v.detach().cpu().numpy()
        return out

    @property
    def img_size(self) -> int:
        return self.sam.image_encoder.img_size

    @property
    def grid_size(self) -> int:
        return int(self.sam.prompt_encoder.image_embedding_size[0])

    @property
    def channels(self) -> int:
        return int(self.sam.prompt_encoder.embed_dim)

    def grid(self, width: int, height: int) -> EmbeddingGrid:
        return EmbeddingGrid(int(width), int(height), self.img_size, self.grid_size)

    def _set(self, embedding: torch.Tensor, width: int, height: int) -> None:
        g, c = self.grid_size, self.channels
        if embedding.dim() == 3:
            embedding = embedding[None]
        if tuple(embedding.shape) != (1, c, g, g):
            raise ValueError(f"embedding must be [1, {c}, {g}, {g}], got {list(embedding.shape)}")
        p = self.predictor
        p.reset_image()
        p.features = embedding.to(self.sam.device, torch.float32)
        p.original_size = (int(height), int(width))
        p.input_size = self.grid(width, height).input_size
        p.is_image_set = True

    def to_sam_coords(self, xy: np.ndarray, width: int, height: int) -> np.ndarray:
        """[..., 2] splatseg pixel coordinates -> the coordinates SamPredictor expects (module doc)."""
        h, w = self.grid(width, height).input_size
        xy = np.asarray(xy, np.float64).copy()
        xy[..., 0] -= 0.5 * width / w
        xy[..., 1] -= 0.5 * height / h
        return xy

    @torch.no_grad()
    def predict(self, embedding: torch.Tensor, width: int, height: int, points: np.ndarray | None = None,
                labels: np.ndarray | None = None, box: np.ndarray | None = None, multimask: bool = True) -> DecodedMasks:
        """Masks of a W x H image whose SAM embedding is `embedding` [1, C, g, g] for points [P, 2]
        with labels [P] (1 positive, 0 negative) and/or a box [4] (x0 y0 x1 y1), in pixels."""
        pts, lab, bx = check_prompts(points, labels, box, width, height)
        self._set(embedding, width, height)
        masks, scores, _ = self.predictor.predict(
            point_coords=None if pts is None else self.to_sam_coords(pts, width, height),
            point_labels=lab,
            box=None if bx is None else self.to_sam_coords(bx.reshape(2, 2), width, height).reshape(4),
            multimask_output=multimask,
            return_logits=True,
        )
        self.predictor.reset_image()
        logits = masks.astype(np.float32)
        return DecodedMasks(masks=logits > self.sam.mask_threshold, scores=scores.astype(np.float32), logits=logits)

    @torch.no_grad()
    def predict_single_points(self, embedding: torch.Tensor, width: int, height: int, points: np.ndarray,
                              batch: int = 64) -> tuple[np.ndarray, np.ndarray]:
        """One positive point per prompt, batched (the benchmark's grid): (masks bool [P, 3, H, W],
        scores float32 [P, 3])."""
        pts, _, _ = check_prompts(points, np.ones(len(points), np.int64), None, width, height)
        self._set(embedding, width, height)
        p = self.predictor
        coords = p.transform.apply_coords(self.to_sam_coords(pts, width, height), p.original_size)
        all_masks, all_scores = [], []
        for s in range(0, len(coords), batch):
            c = torch.as_tensor(coords[s : s + batch, None, :], dtype=torch.float32, device=self.sam.device)
            lab = torch.ones(c.shape[:2], dtype=torch.int, device=self.sam.device)
            masks, scores, _ = p.predict_torch(c, lab, multimask_output=True)
            all_masks.append(masks.cpu().numpy())
            all_scores.append(scores.cpu().numpy())
        p.reset_image()
        return np.concatenate(all_masks), np.concatenate(all_scores).astype(np.float32)


def check_prompts(points, labels, box, width: int, height: int):
    """(points float64 [P, 2] | None, labels int64 [P] | None, box float64 [4] | None), checked:
    finite, inside the W x H image, labels 0/1 with at least one positive unless a box is given,
    box corners ordered. PromptError (one line) otherwise."""
    pts = lab = bx = None
    if points is not None and len(points):
        pts = np.asarray(points, np.float64).reshape(-1, 2)
        if labels is None:
            raise PromptError("point prompts need labels (1 positive, 0 negative)")
        lab = np.asarray(labels).reshape(-1).astype(np.int64)
        if len(lab) != len(pts):
            raise PromptError(f"{len(pts)} points but {len(lab)} labels")
        if not np.isin(lab, (0, 1)).all():
            raise PromptError(f"point labels must be 1 (positive) or 0 (negative), got {sorted(set(lab.tolist()))}")
        bad = ~(np.isfinite(pts).all(1) & (pts[:, 0] >= 0) & (pts[:, 0] < width) & (pts[:, 1] >= 0) & (pts[:, 1] < height))
        if bad.any():
            x, y = pts[np.argmax(bad)]
            raise PromptError(f"point ({x:g}, {y:g}) is outside the {width}x{height} image")
    if box is not None:
        bx = np.asarray(box, np.float64).reshape(-1)
        if bx.shape != (4,) or not np.isfinite(bx).all():
            raise PromptError(f"a box is four finite numbers x0 y0 x1 y1, got {np.asarray(box).tolist()}")
        x0, y0, x1, y1 = bx
        if not (0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height):
            raise PromptError(f"box ({x0:g}, {y0:g}, {x1:g}, {y1:g}) must satisfy 0 <= x0 < x1 <= {width} and 0 <= y0 < y1 <= {height}")
    if bx is None and (lab is None or not (lab == 1).any()):
        raise PromptError("the decoder needs at least one positive point or a box")
    return pts, lab, bx
