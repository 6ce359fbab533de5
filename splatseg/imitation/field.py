"""The imitation field: per-Gaussian features rendered at SAM's embedding grid, then a shared head.

An embedding for a camera (W x H image, intrinsics K) is made in four steps (`ImitationModel`):
1. render the per-Gaussian features f [N, d] with the frozen geometry at the cell camera of
   `EmbeddingGrid.cell_K` (`supersample` rendered pixels per cell and axis) over the valid cells;
2. composite over a learned background feature (pixels the splats do not cover) and average the
   supersamples of each cell: F [gh, gw, d];
3. place F in the top-left of a g x g grid whose other cells (SAM's padding) hold a learned pad
   feature, as `Sam.preprocess` pads the resized image bottom/right;
4. the head, a per-cell MLP (1x1 convolutions d -> hidden -> C, GELU), gives the embedding
   [1, C, g, g] that SAM's mask decoder takes.
Training composites step 1 from cached blend weights (`splatseg.render.blend_weights`); any other
camera goes through `splatseg.render.render` (gsplat on CUDA); both composite identically.

`RUN/imitation.npz` holds (all arrays; no pickles):
    features [N, d] float16; background [d], pad [d] float32; head.* float32 (the head's
    state dict); prompt_encoder.*, mask_decoder.* float32 (SAM's decoder, see `decoder.py`);
    meta: a JSON string with teacher name, SAM model type, decoder spec, grid (img_size, g),
    channels, feature_dim, hidden, supersample, the splats' SHA-256 and N, view names, the
    training config and timings.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from splatseg.imitation.decoder import PromptDecoder
from splatseg.imitation.teacher import EmbeddingGrid
from splatseg.render import BlendWeights, blend_weights, composite, render
from splatseg.run import RunError, save_npz

IMITATION_FILE = "imitation.npz"
IMITATION_VERSION = 1


class ImitationModel(nn.Module):
    """Features [N, d], background [d], pad [d] and the head d -> hidden -> C (module doc)."""

    def __init__(self, n: int, d: int, channels: int, hidden: int, img_size: int, grid: int,
                 supersample: int = 2, generator: torch.Generator | None = None):
        super().__init__()
        self.features = nn.Parameter(torch.randn(n, d, generator=generator) * 0.1)
        self.background = nn.Parameter(torch.zeros(d))
        self.pad = nn.Parameter(torch.zeros(d))
        self.head = nn.Sequential(nn.Conv2d(d, hidden, 1), nn.GELU(), nn.Conv2d(hidden, channels, 1))
        self.img_size, self.grid_size, self.supersample = int(img_size), int(grid), int(supersample)

    @property
    def feature_dim(self) -> int:
        return int(self.features.shape[1])

    def grid(self, width: int, height: int) -> EmbeddingGrid:
        return EmbeddingGrid(int(width), int(height), self.img_size, self.grid_size)

    def cells(self, rendered: Tensor, alpha: Tensor) -> Tensor:
        """Supersampled render [s gh, s gw, d] with its alpha [s gh, s gw, 1] -> cells [gh, gw, d]."""
        s = self.supersample
        x = rendered + (1.0 - alpha) * self.background
        if s > 1:
            x = torch.nn.functional.avg_pool2d(x.permute(2, 0, 1)[None], s)[0].permute(1, 2, 0)
        return x

    def padded(self, cells: Tensor) -> Tensor:
        """Cells [gh, gw, d] (gh, gw <= g) -> the g x g grid of features [g, g, d], pad cells added."""
        g, d = self.grid_size, self.feature_dim
        gh, gw = cells.shape[:2]
        if gh == g and gw == g:
            return cells
        full = self.pad.expand(g, g, d)
        return torch.cat([torch.cat([cells, full[:gh, gw:]], 1), full[gh:]], 0)

    def embed(self, cells: Tensor) -> Tensor:
        """Cells [gh, gw, d] (gh, gw <= g) -> embedding [1, C, g, g]."""
        return self.head(self.padded(cells).permute(2, 0, 1)[None])

    def embed_some(self, cells: Tensor, index: Tensor) -> Tensor:
        """The embedding at flat grid cells `index` [k] only (row * g + col): [C, k]. The head acts
        on each cell alone, so this equals `embed(cells)` at those cells."""
        flat = self.padded(cells).reshape(-1, self.feature_dim).index_select(0, index)  # [k, d]
        return self.head(flat.T[None, :, :, None])[0, :, :, 0]

    def render_embedding(self, params: dict, viewmat, K, width: int, height: int) -> Tensor:
        """Embedding [1, C, g, g] for any camera: viewmat [4, 4] world -> camera (OpenCV), K [3, 3]
        in pixels of the W x H image; params as `Splats.torch_params()` (only the geometry is used)."""
        grid = self.grid(width, height)
        gh, gw = grid.valid
        s = self.supersample
        Kc = torch.as_tensor(grid.cell_K(np.asarray(K), s), dtype=torch.float32, device=params["means"].device)
        vm = torch.as_tensor(np.asarray(viewmat), dtype=torch.float32, device=params["means"].device)
        out = render(params["means"], params["quats"], params["scales"], params["opacities"],
                     self.features.to(params["means"].dtype), vm[None], Kc[None], gw * s, gh * s)
        return self.embed(self.cells(out.colors[0], out.alphas[0]))


@dataclass
class CellView:
    """A camera's blend weights at its cell camera, for training: bw over [s gh, s gw] pixels,
    alpha [s gh, s gw, 1], the grid."""

    bw: BlendWeights
    alpha: Tensor
    grid: EmbeddingGrid

    @classmethod
    def build(cls, model: ImitationModel, params: dict, viewmat: np.ndarray, K: np.ndarray, width: int, height: int) -> "CellView":
        grid = model.grid(width, height)
        gh, gw = grid.valid
        s = model.supersample
        dev = params["means"].device
        bw = blend_weights(params["means"], params["quats"], params["scales"], params["opacities"],
                           torch.as_tensor(viewmat, dtype=torch.float32, device=dev),
                           torch.as_tensor(grid.cell_K(K, s), dtype=torch.float32, device=dev), gw * s, gh * s)
        alpha = torch.bincount(bw.pixel.long(), weights=bw.weight, minlength=gw * s * gh * s).float()
        return cls(bw, alpha.reshape(gh * s, gw * s, 1), grid)

    def embedding(self, model: ImitationModel, index: Tensor | None = None) -> Tensor:
        """[1, C, g, g], or [C, k] at flat cells `index` [k]; differentiable in the model's parameters."""
        cells = model.cells(composite(self.bw, model.features), self.alpha)
        return model.embed(cells) if index is None else model.embed_some(cells, index)


@dataclass
class Imitation:
    """A loaded imitation field: the model (eval), SAM's decoder, and the meta dict."""

    model: ImitationModel
    decoder: PromptDecoder
    meta: dict

    @property
    def teacher(self) -> str:
        return str(self.meta.get("teacher"))

    @property
    def random_teacher(self) -> bool:
        return "/random-init-" in self.teacher

    def render_embedding(self, params: dict, viewmat, K, width: int, height: int) -> Tensor:
        with torch.no_grad():
            return self.model.render_embedding(params, viewmat, K, width, height)


def save_imitation(path: Path, model: ImitationModel, decoder: PromptDecoder, meta: dict) -> None:
    """Writes `imitation.npz` (module doc) atomically."""
    meta = {**meta, "version": IMITATION_VERSION, "decoder_spec": decoder.spec(), "img_size": model.img_size,
            "grid": model.grid_size, "supersample": model.supersample, "feature_dim": model.feature_dim,
            "hidden": int(model.head[0].out_channels), "channels": int(model.head[2].out_channels),
            "num_gaussians": int(model.features.shape[0])}
    arrays = {
        "features": model.features.detach().cpu().numpy().astype(np.float16),
        "background": model.background.detach().cpu().numpy().astype(np.float32),
        "pad": model.pad.detach().cpu().numpy().astype(np.float32),
        **{f"head.{k}": v.detach().cpu().numpy().astype(np.float32) for k, v in model.head.state_dict().items()},
        **decoder.state(),
        "meta": np.array(json.dumps(meta)),
    }
    save_npz(path, **arrays)


def load_imitation(run_dir: Path, num_gaussians: int | None = None) -> Imitation:
    """Reads RUN/imitation.npz; RunError (one line) when missing, malformed or made for other splats."""
    path = Path(run_dir) / IMITATION_FILE
    if not path.is_file():
        raise RunError(f"{run_dir} has no {IMITATION_FILE}: run `splatseg imitate --run {run_dir}` first")
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
        meta = json.loads(str(arrays.pop("meta")))
    except Exception as e:
        raise RunError(f"cannot read {path}: {type(e).__name__}: {' '.join(str(e).split())[:120]}") from None
    if meta.get("version") != IMITATION_VERSION:
        raise RunError(f"{path} was written by an incompatible splatseg (imitation version {meta.get('version')})")
    try:
        features = arrays.pop("features").astype(np.float32)
        n, d = features.shape
        model = ImitationModel(n, d, meta["channels"], meta["hidden"], meta["img_size"], meta["grid"], meta["supersample"])
        model.features.data = torch.from_numpy(features)
        model.background.data = torch.from_numpy(arrays.pop("background"))
        model.pad.data = torch.from_numpy(arrays.pop("pad"))
        head = {k[5:]: torch.from_numpy(v) for k, v in arrays.items() if k.startswith("head.")}
        model.head.load_state_dict(head, strict=True)
        decoder = PromptDecoder.from_state(meta["decoder_spec"], {k: v for k, v in arrays.items() if not k.startswith("head.")})
    except (KeyError, ValueError, RuntimeError) as e:
        raise RunError(f"{path} is malformed: {' '.join(str(e).split())[:160]}") from None
    if num_gaussians is not None and n != num_gaussians:
        raise RunError(f"{path} has features for {n} Gaussians but the splats have {num_gaussians}: re-run `splatseg imitate`")
    if decoder.channels != meta["channels"] or decoder.grid_size != model.grid_size or decoder.img_size != model.img_size:
        raise RunError(f"{path} is inconsistent: the head's output does not match SAM's decoder")
    model.eval().requires_grad_(False)
    return Imitation(model=model, decoder=decoder, meta=meta)
