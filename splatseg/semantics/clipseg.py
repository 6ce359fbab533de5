"""CLIPSeg (transformers' `CLIPSegForImageSegmentation`) text relevancy, split into its two sides
so the expensive image side runs once per view and a text query runs only the cheap side.

CLIPSeg is a frozen CLIP ViT plus a light decoder conditioned on a text embedding (FiLM). The
decoder reads nothing of the image but the ViT's hidden states at `config.extract_layers`
(three by default, each [B, 1 + P, hidden], P = (S / patch)^2 patches of the S x S input). So:
- `image_side(images)` -> those activations, float32 numpy [B, 1 + P, hidden] per extracted layer
  (the ViT: about 90 % of CLIPSeg's cost); `train --clipseg` stores them in RUN/clipseg.npz;
- `text_embeddings(phrases)` -> [T, projection_dim] (CLIP's text tower, one pass per query);
- `decode(activations, embedding)` -> logits [B, S, S] (the decoder, batched over views), split
  into `reduce` (its text-independent input projections, kept by a loaded cache) and `decode_reduced`;
- `relevancy(activations, phrase)` = sigmoid(decode(...)) [B, S, S] in [0, 1];
- `full_relevancy(images, phrase)` runs the whole model per image, as CLIPSeg's own `forward`
  does (the uncached reference: tests check the split equals it, scripts/bench_text.py times both).
Images are uint8 [H, W, 3] RGB; the image processor resizes them to S x S (352 for
CIDAS/clipseg-rd64-refined); callers resize the S x S maps back to their views.

Loading (`ClipSeg.load`): a local folder in the `save_pretrained` layout (config.json, weights,
tokenizer and preprocessor files) or a hub name, fetched by transformers when online. Only
safetensors weights are read (`use_safetensors=True`: a pickled .bin checkpoint is refused, so
no file can execute code), and `trust_remote_code=False` (CLIPSeg is a built-in architecture).
Any failure is one ClipSegError line naming the --clipseg flag.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from splatseg.semantics.clip import SemanticsError, _one_line, _resolve_device

class ClipSegError(SemanticsError, ValueError):
    """CLIPSeg weights that cannot be loaded or used (one line; a ValueError, so the CLI exits 2)."""


CLIPSEG_HUB_NAME = "CIDAS/clipseg-rd64-refined"
"""The published CLIPSeg weights users are pointed to (about 600 MB)."""


class ClipSeg:
    """A loaded CLIPSeg: model (eval), tokenizer, image processor; see the module docstring.

    Args:
        model: a `transformers.CLIPSegForImageSegmentation`.
        tokenizer: any transformers tokenizer for its text tower (CLIP's BPE for the real weights).
        image_processor: the image processor that resizes and normalises to S x S.
        name: what runs record (the folder's resolved path or the hub name).
        device: "auto" | "cpu" | "cuda" | ...
    """

    def __init__(self, model, tokenizer, image_processor, name: str, device: str = "auto"):
        self.device = _resolve_device(device)
        self.model = model.to(self.device).eval()
        self.tokenizer = tokenizer
        self.image_processor = image_processor
        self.name = str(name)

    @classmethod
    def load(cls, name_or_path: str | os.PathLike, device: str = "auto") -> "ClipSeg":
        """From a local folder or a hub name (module docstring); ClipSegError (one line) otherwise."""
        from transformers import AutoImageProcessor, AutoTokenizer, CLIPSegForImageSegmentation

        text = str(name_or_path)
        path = Path(text).expanduser()
        # a hub name is "org/name"; anything else (an existing path, /abs, ./rel, ~/x, a/b/c) is a folder
        local = path.exists() or text.startswith(("/", ".", "~")) or text.count("/") != 1 or "\\" in text
        if local and not path.is_dir():
            raise ClipSegError(f"CLIPSeg folder {path} does not exist; pass --clipseg PATH to a folder saved with "
                                 f"save_pretrained, or a hub name such as {CLIPSEG_HUB_NAME} when online")
        source = str(path.resolve()) if local else text
        try:
            model = CLIPSegForImageSegmentation.from_pretrained(source, use_safetensors=True, trust_remote_code=False)
            tokenizer = AutoTokenizer.from_pretrained(source, trust_remote_code=False)
            image_processor = AutoImageProcessor.from_pretrained(source, trust_remote_code=False)
        except Exception as e:
            where = f"the folder {source}" if local else f"{source!r} (offline, or not a CLIPSeg repository?)"
            raise ClipSegError(f"cannot load CLIPSeg weights from {where}: {_one_line(e)}; pass --clipseg PATH to a local "
                                 f"CLIPSeg folder (safetensors weights, tokenizer, preprocessor) or {CLIPSEG_HUB_NAME} when online") from None
        return cls(model, tokenizer, image_processor, source, device)

    # ------------------------------------------------------------------ sizes

    @property
    def image_size(self) -> int:
        """S: the side of the square the image processor resizes to (and of the decoder's maps)."""
        size = getattr(self.image_processor, "size", None)
        if isinstance(size, (int, float)):
            return int(size)
        for key in ("height", "shortest_edge"):
            value = size.get(key) if hasattr(size, "get") else getattr(size, key, None)
            if value:
                return int(value)
        return int(self.model.config.vision_config.image_size)

    @property
    def num_layers(self) -> int:
        """How many ViT layers the decoder reads (len(config.extract_layers))."""
        return len(self.model.config.extract_layers)

    # ------------------------------------------------------------------ the two sides

    def pixel_values(self, images: list[np.ndarray]):
        """float32 tensor [B, 3, S, S] from uint8 [H, W, 3] RGB images."""
        for im in images:
            if not isinstance(im, np.ndarray) or im.ndim != 3 or im.shape[2] != 3 or im.dtype != np.uint8:
                raise ClipSegError(f"CLIPSeg expects RGB images as uint8 [H, W, 3], got {getattr(im, 'dtype', type(im))} {getattr(im, 'shape', '')}")
        S = self.image_size
        out = self.image_processor(images=[np.array(im) for im in images], return_tensors="pt", size={"height": S, "width": S})
        return out["pixel_values"].to(self.device)

    def image_side(self, images: list[np.ndarray], batch_size: int = 8) -> list[np.ndarray]:
        """The decoder's inputs for each image: one float32 [B, 1 + P, hidden] array per extracted layer."""
        import torch

        layers = [i + 1 for i in self.model.config.extract_layers]  # hidden_states[0] is the embeddings
        chunks: list[list[np.ndarray]] = [[] for _ in layers]
        with torch.no_grad():
            for i in range(0, len(images), batch_size):
                pv = self.pixel_values(images[i : i + batch_size])
                out = self.model.clip.vision_model(pixel_values=pv, output_hidden_states=True, interpolate_pos_encoding=True)
                for j, layer in enumerate(layers):
                    chunks[j].append(out.hidden_states[layer].float().cpu().numpy())
        if not images:
            return []
        return [np.concatenate(c) for c in chunks]

    def text_embeddings(self, phrases: list[str]):
        """float32 tensor [T, projection_dim]: CLIPSeg's conditional embeddings of the phrases."""
        import torch

        if isinstance(phrases, str):
            phrases = [phrases]
        tokens = self.tokenizer(list(phrases), padding=True, return_tensors="pt")
        with torch.no_grad():
            out = self.model.clip.get_text_features(input_ids=tokens["input_ids"].to(self.device),
                                                    attention_mask=tokens["attention_mask"].to(self.device))
        return (out if hasattr(out, "shape") else out.pooler_output).float()

    def reduce(self, activations: list, batch_size: int = 64) -> list:
        """The text-independent first step of CLIPSeg's decoder: each extracted layer's hidden states
        [B, 1 + P, hidden] (numpy or torch, any float dtype) through its `reduces` linear, in the
        decoder's (reversed) order -> float32 tensors [B, 1 + P, reduce_dim]. A cache keeps these
        (reduce_dim 64 instead of 768: the widening copy of the stored float16 was a quarter of a query)."""
        import torch

        dec = self.model.decoder
        out = []
        with torch.no_grad():
            for act, reduce in zip(list(activations)[::-1], dec.reduces):
                act = torch.as_tensor(act)
                out.append(torch.cat([reduce(act[i : i + batch_size].to(self.device, torch.float32))
                                      for i in range(0, int(act.shape[0]), batch_size)]))
        return out

    def decode_reduced(self, reduced: list, embedding, batch_size: int = 64):
        """logits float32 tensor [B, S, S] from `reduce`'s output and one conditional embedding
        [projection_dim] (or [B, projection_dim]): the rest of `CLIPSegDecoder.forward`, step for step
        (hand-written so the reduced activations can be reused; tests compare it with CLIPSeg's forward)."""
        import math

        import torch

        dec = self.model.decoder
        B = int(reduced[0].shape[0])
        emb = torch.as_tensor(embedding, dtype=torch.float32, device=self.device)
        if emb.dim() == 1:
            emb = emb[None].expand(B, -1)
        out = []
        with torch.no_grad():
            for start in range(0, B, batch_size):
                c = emb[start : start + batch_size]
                x = None
                for i, (act, layer) in enumerate(zip(reduced, dec.layers)):
                    act = act[start : start + batch_size]
                    x = act if x is None else act + x
                    if i == dec.conditional_layer:  # FiLM by the text embedding
                        x = (dec.film_mul(c) * x.permute(1, 0, 2) + dec.film_add(c)).permute(1, 0, 2)
                    x = layer(x, attention_mask=None)
                    x = x[0] if isinstance(x, tuple) else x
                x = x[:, 1:, :].transpose(1, 2)  # drop the class token: [b, reduce_dim, P]
                side = int(math.sqrt(x.shape[2]))
                logits = dec.transposed_convolution(x.reshape(len(c), x.shape[1], side, side))
                out.append(logits.reshape(len(c), logits.shape[-2], logits.shape[-1]).float())
        return torch.cat(out)

    def decode(self, activations: list, embedding, batch_size: int = 64):
        """logits float32 tensor [B, S, S] from activations (per layer [B, 1 + P, hidden], numpy or
        torch, any float dtype) and one conditional embedding [projection_dim] (or [B, projection_dim])."""
        return self.decode_reduced(self.reduce(activations, batch_size), embedding, batch_size)

    def relevancy(self, activations: list, phrase: str, reduced: list | None = None) -> np.ndarray:
        """float32 [B, S, S] in [0, 1]: sigmoid of the decoder's logits for `phrase` on cached
        activations (or on `reduce(activations)` when given: the per-query path of a loaded cache)."""
        import torch

        emb = self.text_embeddings([phrase])[0]
        reduced = self.reduce(activations) if reduced is None else reduced
        return torch.sigmoid(self.decode_reduced(reduced, emb)).cpu().numpy()

    def full_relevancy(self, images: list[np.ndarray], phrase: str) -> np.ndarray:
        """float32 [B, S, S]: the whole CLIPSeg forward per image (no cache), the reference for `relevancy`."""
        import torch

        maps = []
        tokens = self.tokenizer([phrase], padding=True, return_tensors="pt")
        with torch.no_grad():
            for im in images:
                out = self.model(input_ids=tokens["input_ids"].to(self.device), attention_mask=tokens["attention_mask"].to(self.device),
                                 pixel_values=self.pixel_values([im]))
                maps.append(torch.sigmoid(out.logits.reshape(1, out.logits.shape[-2], out.logits.shape[-1])).float().cpu().numpy())
        return np.concatenate(maps)


# ----------------------------------------------------------------------------- random models (tests, benchmarks)


def random_clipseg(size: str = "tiny", seed: int = 0, image_size: int | None = None) -> ClipSeg:
    """A CLIPSeg with random weights built from transformers' own config classes, with a word-level
    tokenizer (the real CLIP BPE vocabulary cannot be downloaded here).

    size "tiny": 2-layer ViT (hidden 32, patch 16, 64 px), 2-layer text tower, decoder reduce_dim 16;
    "rd64": `CLIPSegConfig()` defaults with CIDAS/clipseg-rd64-refined's patch 16 and refined
    transposed convolution, at 352 px (the published architecture's size, for timing only)."""
    import torch
    from transformers import CLIPSegConfig, CLIPSegForImageSegmentation, ViTImageProcessor

    if size == "tiny":
        S = image_size or 64
        config = CLIPSegConfig(
            text_config=dict(vocab_size=len(_WORDS) + 4, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                             max_position_embeddings=32, pad_token_id=0, bos_token_id=1, eos_token_id=2),
            vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=2, image_size=S, patch_size=16),
            projection_dim=16, extract_layers=(0, 1, 2), reduce_dim=16, decoder_num_attention_heads=2, decoder_intermediate_size=32,
        )
    elif size == "rd64":
        S = image_size or 352
        base = CLIPSegConfig()
        vision = base.vision_config.to_dict()
        vision.update(patch_size=16, image_size=224)
        text = base.text_config.to_dict()
        config = CLIPSegConfig(text_config=text, vision_config=vision, use_complex_transposed_convolution=True)
    else:
        raise ValueError(f"unknown random CLIPSeg size {size!r} (tiny or rd64)")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = CLIPSegForImageSegmentation(config)
    processor = ViTImageProcessor(do_resize=True, size={"height": S, "width": S}, image_mean=[0.485, 0.456, 0.406],
                                  image_std=[0.229, 0.224, 0.225])
    return ClipSeg(model, _word_tokenizer(), processor, f"random-clipseg-{size}", device="cpu")


def save_random_clipseg(folder: str | os.PathLike, size: str = "tiny", seed: int = 0) -> Path:
    """Writes `random_clipseg(size, seed)` to `folder` in the save_pretrained layout (safetensors):
    a folder `ClipSeg.load` and `train --clipseg` read like the published weights."""
    seg = random_clipseg(size, seed)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    seg.model.save_pretrained(folder, safe_serialization=True)
    seg.tokenizer.save_pretrained(folder)
    seg.image_processor.save_pretrained(folder)
    return folder


_WORDS = ("a", "an", "the", "of", "photo", "object", "things", "stuff", "texture", "mug", "ball", "box", "cup", "table",
          "cube", "sphere", "cylinder", "cone", "torus", "red", "green", "blue", "yellow", "white", "black", "ship", "model")


def _word_tokenizer():
    """A `PreTrainedTokenizerFast` over `_WORDS` (unknown words -> [UNK]) that adds BOS / EOS."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {"[PAD]": 0, "[BOS]": 1, "[EOS]": 2, "[UNK]": 3, **{w: i + 4 for i, w in enumerate(_WORDS)}}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(single="[BOS] $A [EOS]", special_tokens=[("[BOS]", 1), ("[EOS]", 2)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", bos_token="[BOS]", eos_token="[EOS]",
                                   model_max_length=32)
