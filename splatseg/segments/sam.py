"""SAM automatic masks (segment-anything) as multi-level segments.

Input: rgb uint8 [H, W, 3] in RGB order (never BGR). Output: `Segments` with int32 segmaps [L, H, W],
-1 = no segment, indices unique across levels, scores = SAM's predicted IoU per segment,
model "sam-<type>" (e.g. "sam-vit_h"; "/<8 hex>" appended when the generator settings differ from
the defaults, so caches follow them).

From a flat list of masks to levels (`masks_to_levels`): mask A is a part of mask B when at least
`containment` of A's pixels lie in B and B is larger; A's parent is the smallest such B, and its depth
in that forest is its level (roots are level 0, capped at L-1). Level l shows the masks of depth l
plus the *leaves* of depth < l (a whole object with no parts is also its own part and sub-part),
so every level covers as much of the image as the masks allow; a non-leaf never reappears at a finer
level, so a finer level can leave -1 where an object's parts do not cover it. Within a level larger
masks are painted first and smaller ones overwrite them; what is left of a mask with fewer than
`min_segment_fraction` of the image's pixels is dropped.

What SAM sees (`sam_input`, Segment-Any-RGBD's idea): "rgb" the photo; "depth" the splats' rendered
depth colour-mapped (`depth_colormap.colorize_depth`: plasma of normalised inverse depth), so geometry
rather than texture decides the masks (a textured table stays one mask); "both" runs SAM on each and
merges the two flat mask lists before the levels are built (`merge_mask_sets`): a mask from one
input whose IoU with a mask from the other is at least `merge_iou` is the same segment seen twice,
and only the one with the higher predicted IoU is kept; every other mask of either input is kept.
The containment forest then nests them: a depth mask (a whole object, bounded by depth edges)
becomes the parent of the colour masks inside it (its parts), and a colour mask that no depth
mask holds (a flat poster on a wall) stays a root. "depth" and "both" need the geometry the
training stage renders; the model string gains "+depth" / "+rgbd".
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Literal

import numpy as np

from splatseg.segments.cache import SegmentsError
from splatseg.segments.geometry import Geometry
from splatseg.types import Segments

SAM_URLS = {
    "vit_h": "https://dl.fbaipublicfiles.com/segment_anything/sam_vit_h_4b8939.pth",
    "vit_l": "https://dl.fbaipublicfiles.com/segment_anything/sam_vit_l_0b3195.pth",
    "vit_b": "https://dl.fbaipublicfiles.com/segment_anything/sam_vit_b_01ec64.pth",
}


@dataclass(frozen=True)
class SamConfig:
    """SAM automatic mask generation (segment-anything), turned into whole/part/sub-part levels."""

    model_type: Literal["vit_h", "vit_l", "vit_b"] = "vit_h"
    """SAM backbone from segment-anything's model registry."""
    checkpoint: Path | None = None
    """Local SAM checkpoint (.pth). Default: the cache ($SPLATSEG_CACHE/sam or ~/.cache/splatseg/sam),
    downloading the official checkpoint there on first use."""
    points_per_side: int = 32
    """Point prompts per image side (points_per_side^2 prompts)."""
    points_per_batch: int = 64
    """Prompts run through the decoder at once (memory vs speed)."""
    pred_iou_thresh: float = 0.88
    """Keep masks whose predicted IoU exceeds this."""
    stability_score_thresh: float = 0.95
    """Keep masks whose stability score exceeds this."""
    box_nms_thresh: float = 0.7
    """Box IoU above which duplicate masks are suppressed."""
    crop_n_layers: int = 0
    """Extra passes on image crops (0 = whole image only)."""
    num_levels: int = 3
    """Number of levels to write (whole objects / parts / sub-parts)."""
    containment: float = 0.9
    """A mask is a part of a larger one when at least this fraction of it lies inside."""
    min_segment_fraction: float = 0.0005
    """Visible remainders smaller than this fraction of the image's pixels are dropped (-1)."""
    device: str = "auto"
    """Torch device for SAM: "auto" (cuda if available), "cpu", "cuda", "cuda:1", ..."""
    sam_input: Literal["rgb", "depth", "both"] = "rgb"
    """What SAM segments: the photo ('rgb'), the splats' rendered depth colour-mapped as
    Segment-Any-RGBD does ('depth'), or both, merged into the levels (module docstring)."""
    merge_iou: float = 0.8
    """With sam_input 'both': masks of the two inputs overlapping at least this IoU are one segment."""

    def model_name(self, with_geometry: bool = False) -> str:
        """The `model` string written to the cache ("sam-vit_h", "sam-vit_h+depth", "sam-vit_h+rgbd", ...)."""
        suffix = {"rgb": "", "depth": "+depth", "both": "+rgbd"}[self.sam_input]
        return f"sam-{self.model_type}{suffix}" + _digest(self)


def _digest(cfg: SamConfig) -> str:
    ignore = {"checkpoint", "device", "points_per_batch", "model_type", "sam_input"}
    if cfg.sam_input != "both":
        ignore.add("merge_iou")
    default = SamConfig()
    changed = {f.name: getattr(cfg, f.name) for f in fields(cfg) if f.name not in ignore and getattr(cfg, f.name) != getattr(default, f.name)}
    if not changed:
        return ""
    return "/" + hashlib.sha1(repr(sorted(changed.items())).encode()).hexdigest()[:8]


def cache_root() -> Path:
    """Where downloaded weights live: $SPLATSEG_CACHE if set, else ~/.cache/splatseg."""
    env = os.environ.get("SPLATSEG_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "splatseg"


def resolve_checkpoint(model_type: str, checkpoint: str | os.PathLike | None = None, cache_dir: str | os.PathLike | None = None) -> Path:
    """The SAM checkpoint to load: `checkpoint` if given (must exist), else the cached official file,
    downloaded on first use (to a temp name, then renamed). SegmentsError (one line) when it cannot
    be had, naming the URL, the cache path and the --sam-checkpoint flag."""
    if model_type not in SAM_URLS:
        raise SegmentsError(f"unknown SAM model type {model_type!r}; choose one of {', '.join(SAM_URLS)}")
    if checkpoint is not None:
        path = Path(checkpoint).expanduser()
        if not path.is_file():
            raise SegmentsError(f"SAM checkpoint {path} does not exist")
        return path
    url = SAM_URLS[model_type]
    folder = Path(cache_dir) if cache_dir is not None else cache_root() / "sam"
    path = folder / url.rsplit("/", 1)[1]
    if path.is_file():
        return path
    tmp = path.with_name(path.name + f".part{os.getpid()}")
    try:
        import torch.hub

        folder.mkdir(parents=True, exist_ok=True)
        torch.hub.download_url_to_file(url, str(tmp), progress=True)
        os.replace(tmp, path)
    except Exception as e:
        try:
            tmp.unlink()
        except OSError:
            pass
        reason = " ".join(str(e).split())[:120] or type(e).__name__
        raise SegmentsError(
            f"could not download the SAM {model_type} checkpoint from {url} to {path} ({reason}); "
            f"download it elsewhere and pass --sam-checkpoint PATH"
        ) from None
    return path


def load_sam(model_type: str, checkpoint: str | os.PathLike | None = None, device: str = "auto"):
    """A `segment_anything.modeling.Sam` in eval mode on `device`, weights from `resolve_checkpoint`."""
    import torch
    from segment_anything import sam_model_registry

    path = resolve_checkpoint(model_type, checkpoint)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)  # before building: fail fast
        model = sam_model_registry[model_type](checkpoint=None)
        model.load_state_dict(state)
    except Exception as e:
        reason = " ".join(str(e).split())[:160]
        raise SegmentsError(f"cannot load SAM {model_type} weights from {path}: {type(e).__name__}: {reason}") from None
    return model.to(resolve_device(device)).eval()


def resolve_device(device: str = "auto") -> str:
    """"auto" -> "cuda" when available, else "cpu"; anything else unchanged."""
    if device == "auto":
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


class SamSource:
    """Callable mask source: `source(rgb, geometry=None) -> Segments`; geometry (the splats' rendered
    depth and opacity) is needed with sam_input 'depth' or 'both' and ignored with 'rgb'.

    `model` may be a ready `Sam` (tests pass a tiny random one); otherwise it is loaded on first use.
    """

    def __init__(self, config: SamConfig | None = None, model=None):
        self.config = config or SamConfig()
        if not 1 <= self.config.num_levels:
            raise SegmentsError(f"SAM num_levels must be >= 1, got {self.config.num_levels}")
        if self.config.sam_input not in ("rgb", "depth", "both"):
            raise SegmentsError(f"unknown --sam-input {self.config.sam_input!r}; choose rgb, depth or both")
        if not 0.0 < self.config.merge_iou <= 1.0:
            raise SegmentsError(f"SAM merge_iou must lie in (0, 1], got {self.config.merge_iou}")
        self._model = model
        self._generator = None

    def model_name(self, with_geometry: bool = False) -> str:
        return self.config.model_name(with_geometry)

    @property
    def generator(self):
        if self._generator is None:
            from segment_anything import SamAutomaticMaskGenerator

            cfg = self.config
            if self._model is None:
                self._model = load_sam(cfg.model_type, cfg.checkpoint, cfg.device)
            self._generator = SamAutomaticMaskGenerator(
                self._model,
                points_per_side=cfg.points_per_side,
                points_per_batch=cfg.points_per_batch,
                pred_iou_thresh=cfg.pred_iou_thresh,
                stability_score_thresh=cfg.stability_score_thresh,
                box_nms_thresh=cfg.box_nms_thresh,
                crop_n_layers=cfg.crop_n_layers,
                output_mode="binary_mask",
            )
        return self._generator

    @property
    def needs_geometry(self) -> bool:
        """True when SAM is given the rendered depth (sam_input 'depth' or 'both')."""
        return self.config.sam_input != "rgb"

    def generate(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """SAM's automatic masks of one uint8 [H, W, 3] RGB image: (bool [N, H, W], predicted IoU float32 [N])."""
        anns = self.generator.generate(np.ascontiguousarray(image))
        H, W = image.shape[:2]
        if not anns:
            return np.zeros((0, H, W), bool), np.zeros(0, np.float32)
        return (np.stack([np.asarray(a["segmentation"], bool) for a in anns]),
                np.array([a["predicted_iou"] for a in anns], np.float32))

    def __call__(self, rgb: np.ndarray, geometry: Geometry | None = None) -> Segments:
        if not isinstance(rgb, np.ndarray) or rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
            raise SegmentsError(
                f"SAM expects an RGB image as uint8 [H, W, 3], got {getattr(rgb, 'dtype', type(rgb))} {getattr(rgb, 'shape', '')}"
            )
        H, W = rgb.shape[:2]
        mode = self.config.sam_input
        if mode != "rgb":
            if geometry is None:
                raise SegmentsError(f"--sam-input {mode} needs the splats' rendered depth for each view; none was given")
            geometry.check((H, W))
            from splatseg.segments.depth_colormap import colorize_depth

            depth_masks, depth_scores = self.generate(colorize_depth(geometry))
        if mode == "rgb":
            masks, scores = self.generate(rgb)
        elif mode == "depth":
            masks, scores = depth_masks, depth_scores
        else:
            masks, scores = merge_mask_sets((depth_masks, depth_scores), self.generate(rgb), self.config.merge_iou)
        min_pixels = max(1, int(np.ceil(self.config.min_segment_fraction * H * W)))
        segmaps, seg_scores = masks_to_levels(masks, scores, self.config.num_levels, self.config.containment, min_pixels)
        return Segments(segmaps=segmaps, scores=seg_scores, model=self.model_name())


def mask_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """float64 [Na, Nb] IoU between the bool masks a [Na, H, W] and b [Nb, H, W]."""
    fa = a.reshape(a.shape[0], -1).astype(np.float32)
    fb = b.reshape(b.shape[0], -1).astype(np.float32)
    inter = fa @ fb.T
    union = fa.sum(1)[:, None] + fb.sum(1)[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1), 0.0).astype(np.float64)


def merge_mask_sets(first: tuple[np.ndarray, np.ndarray], second: tuple[np.ndarray, np.ndarray],
                    merge_iou: float = 0.8) -> tuple[np.ndarray, np.ndarray]:
    """Two flat mask lists (bool [N, H, W], scores [N]) -> one list (module docstring, "both"): a
    pair across the lists with IoU >= merge_iou is one segment, and the mask with the lower score of
    that pair is dropped (ties keep `first`'s); all other masks of both lists are kept, `first`'s first."""
    (ma, sa), (mb, sb) = first, second
    ma, mb = np.asarray(ma, bool), np.asarray(mb, bool)
    sa, sb = np.asarray(sa, np.float32), np.asarray(sb, np.float32)
    keep_a, keep_b = np.ones(len(ma), bool), np.ones(len(mb), bool)
    if len(ma) and len(mb):
        iou = mask_iou(ma, mb)
        for i, j in zip(*np.nonzero(iou >= merge_iou)):
            if keep_a[i] and keep_b[j]:
                if sb[j] > sa[i]:
                    keep_a[i] = False
                else:
                    keep_b[j] = False
    masks = np.concatenate([ma[keep_a], mb[keep_b]]) if len(ma) + len(mb) else ma
    return masks, np.concatenate([sa[keep_a], sb[keep_b]]).astype(np.float32)


def mask_hierarchy(masks: np.ndarray, containment: float = 0.9) -> np.ndarray:
    """int64 [N] parent of each mask (-1 = root): the smallest strictly larger mask holding at least
    `containment` of it. masks: bool [N, H, W]. Ties in area are broken by index (earlier = larger)."""
    N = masks.shape[0]
    if N == 0:
        return np.zeros(0, np.int64)
    flat = masks.reshape(N, -1)
    area = flat.sum(1).astype(np.int64)
    inter = np.zeros((N, N), np.int64)  # inter[a, b] = |A ∩ B|, without an [N, N, H*W] temporary
    for a in range(N):
        if area[a]:
            inter[a] = flat[:, flat[a]].sum(1)
    order = np.lexsort((np.arange(N), -area))  # larger first, then index
    rank = np.empty(N, np.int64)
    rank[order] = np.arange(N)
    parent = np.full(N, -1, np.int64)
    for a in range(N):
        if area[a] == 0:
            continue
        cand = np.nonzero((rank < rank[a]) & (inter[a] >= containment * area[a]))[0]
        if cand.size:
            parent[a] = cand[np.argmax(rank[cand])]  # the smallest of the larger holders
    return parent


def masks_to_levels(masks: np.ndarray, scores: np.ndarray | None = None, num_levels: int = 3,
                    containment: float = 0.9, min_pixels: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Flat masks bool [N, H, W] (+ scores [N]) -> (segmaps int32 [L, H, W], scores float32 [M]).

    See the module docstring for the rules. Segment indices are numbered level by level.
    """
    masks = np.asarray(masks, bool)
    N, H, W = masks.shape
    if scores is None:
        scores = np.ones(N, np.float32)
    parent = mask_hierarchy(masks, containment)
    depth = np.zeros(N, np.int64)
    for a in range(N):  # parents are strictly larger, so walking up terminates
        p, d = parent[a], 0
        while p >= 0:
            d += 1
            p = parent[p]
        depth[a] = d
    is_leaf = np.ones(N, bool)
    is_leaf[parent[parent >= 0]] = False
    level_of = np.minimum(depth, num_levels - 1)
    area = masks.reshape(N, -1).sum(1)
    order = np.lexsort((np.arange(N), -area))

    segmaps = np.full((num_levels, H, W), -1, np.int32)
    out_scores: list[float] = []
    next_id = 0
    for level in range(num_levels):
        show = [a for a in order if level_of[a] == level or (is_leaf[a] and level_of[a] < level)]
        owner = np.full((H, W), -1, np.int64)
        for a in show:
            owner[masks[a]] = a
        ids, counts = np.unique(owner[owner >= 0], return_counts=True)
        keep = ids[counts >= min_pixels]
        for a in sorted(keep.tolist(), key=lambda i: -area[i]):
            segmaps[level][owner == a] = next_id
            out_scores.append(float(scores[a]))
            next_id += 1
    return segmaps, np.asarray(out_scores, np.float32)
