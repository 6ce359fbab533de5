"""CLIP encoders (open_clip with random weights and a tiny architecture; no downloads) and relevancy."""

from __future__ import annotations

import numpy as np
import pytest

from splatseg.semantics.clip import CANONICAL_NEGATIVES, ClipEncoder, SemanticsError, masked_crops, relevancy, require_weights

TINY = dict(
    embed_dim=32,
    vision_cfg=dict(image_size=64, layers=1, width=32, patch_size=16, head_width=16),
    text_cfg=dict(context_length=77, vocab_size=49408, width=32, heads=2, layers=1),
)


@pytest.fixture(scope="module")
def encoder():
    return ClipEncoder("ViT-B-16", pretrained=None, device="cpu", batch_size=3, model_kwargs=TINY)


@pytest.fixture(scope="module")
def image():
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)
    segmaps = np.full((2, 48, 64), -1, np.int32)
    segmaps[0, :24] = 0
    segmaps[0, 24:] = 1
    segmaps[1, 2:10, 3:9] = 2
    segmaps[1, 30:, 30:] = 4  # index 3 has no pixels
    return rgb, segmaps


def test_encode_segments_shapes_norms_and_empty_rows(encoder, image):
    rgb, segmaps = image
    emb = encoder.encode_segments(rgb, segmaps)
    assert emb.shape == (5, 32) and emb.dtype == np.float32
    norms = np.linalg.norm(emb, axis=1)
    assert np.allclose(norms[[0, 1, 2, 4]], 1.0, atol=1e-5) and norms[3] == 0
    assert np.array_equal(encoder.encode_segments(rgb, segmaps), emb)  # deterministic
    assert encoder.encode_segments(rgb, segmaps, num_segments=7).shape == (7, 32)
    # Different segments look different; a segment's embedding depends only on its own pixels.
    assert not np.allclose(emb[0], emb[1])
    other = rgb.copy()
    other[24:] = 0
    assert np.allclose(encoder.encode_segments(other, segmaps)[0], emb[0], atol=1e-5)
    assert encoder.encode_segments(rgb, np.full((1, 48, 64), -1, np.int32)).shape == (0, 32)
    with pytest.raises(SemanticsError, match="uint8"):
        encoder.encode_segments(rgb.astype(np.float32), segmaps)


def test_random_weights_are_reproducible_and_named(encoder, image):
    again = ClipEncoder("ViT-B-16", pretrained=None, device="cpu", model_kwargs=TINY)
    rgb, segmaps = image
    assert np.allclose(again.encode_segments(rgb, segmaps), encoder.encode_segments(rgb, segmaps), atol=1e-6)
    assert encoder.name == "open_clip:ViT-B-16/random" and not encoder.has_weights and encoder.dim == 32


def test_text_needs_weights(encoder):
    with pytest.raises(SemanticsError) as err:
        encoder.encode_text(["a red box"])
    assert "\n" not in str(err.value) and "--clip-pretrained" in str(err.value)
    with pytest.raises(SemanticsError):
        require_weights(encoder)
    t = encoder.encode_text(["a red box", "a blue box", "a red box"], allow_random=True)
    assert t.shape == (3, 32) and np.allclose(np.linalg.norm(t, axis=1), 1, atol=1e-5)
    assert not np.allclose(t[0], t[1]) and np.allclose(t[0], t[2])


def test_local_checkpoint_and_load_failures(encoder, image, tmp_path):
    import torch

    ckpt = tmp_path / "tiny_clip.pt"
    torch.save(encoder.model.state_dict(), ckpt)
    loaded = ClipEncoder("ViT-B-16", pretrained=str(ckpt), device="cpu", model_kwargs=TINY)
    assert loaded.has_weights and loaded.name == "open_clip:ViT-B-16/tiny_clip.pt"
    require_weights(loaded)
    rgb, segmaps = image
    assert np.allclose(loaded.encode_segments(rgb, segmaps), encoder.encode_segments(rgb, segmaps), atol=1e-6)
    assert np.allclose(loaded.encode_text(["a cup"]), encoder.encode_text(["a cup"], allow_random=True), atol=1e-6)
    with pytest.raises(SemanticsError, match="does not exist") as err:
        ClipEncoder("ViT-B-16", pretrained=str(tmp_path / "missing.pt"), device="cpu", model_kwargs=TINY)
    assert "--clip-pretrained" in str(err.value)
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(SemanticsError) as err:
        ClipEncoder("ViT-B-16", pretrained=str(bad), device="cpu", model_kwargs=TINY)
    assert "\n" not in str(err.value) and "bad.pt" in str(err.value)
    with pytest.raises(SemanticsError, match="unknown open_clip model"):
        ClipEncoder("ViT-Nope", pretrained=None)


def test_masked_crops():
    rgb = np.zeros((20, 40, 3), np.uint8)
    rgb[5:15, 10:30] = 200
    seg = np.full((1, 20, 40), -1, np.int32)
    seg[0, 5:15, 10:30] = 0  # a 10 x 20 box
    index, crops = masked_crops(rgb, seg, pad=0.1, fill=(1, 2, 3))
    assert index == [0] and crops[0].shape == (24, 24, 3)  # square: 20 * 1.2
    c = crops[0]
    assert np.all(c[12, 12] == 200) and np.all(c[0, 0] == (1, 2, 3))
    assert (c == 200).all(-1).sum() == 200  # exactly the segment's pixels are kept


def test_relevancy():
    e = np.eye(4, dtype=np.float32)
    query, negatives = e[0], e[[2, 3]]
    cand = np.stack([e[0], e[1], e[2], (e[0] + e[2]) / np.sqrt(2)])
    r = relevancy(query, cand, negatives)
    assert r.shape == (4,)
    assert r[0] > 0.99 and r[1] == pytest.approx(0.5) and r[2] < 0.01 and r[3] == pytest.approx(0.5, abs=1e-6)
    # min over negatives: a candidate close to one negative scores low even if far from the others.
    r2 = relevancy(query, cand[:1] * 0 + (0.6 * e[0] + 0.8 * e[3]), negatives)
    assert r2[0] < 0.5
    assert CANONICAL_NEGATIVES == ("object", "things", "stuff", "texture")
    with pytest.raises(ValueError):
        relevancy(query, cand[:, :3], negatives)


@pytest.fixture(scope="module")
def hf_folder(tmp_path_factory):
    """A tiny random transformers CLIP (character-level tokenizer) saved as a local folder."""
    import torch
    from tokenizers import pre_tokenizers
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor, CLIPTokenizer

    folder = tmp_path_factory.mktemp("hfclip")
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for c in sorted(pre_tokenizers.ByteLevel.alphabet()):
        vocab[c] = len(vocab)
        vocab[c + "</w>"] = len(vocab)
    config = CLIPConfig(
        text_config=dict(vocab_size=len(vocab), hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                         max_position_embeddings=77, bos_token_id=0, eos_token_id=1, pad_token_id=1),
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2, image_size=32, patch_size=16),
        projection_dim=16,
    )
    torch.manual_seed(0)
    CLIPModel(config).save_pretrained(folder)
    processor = CLIPProcessor(
        image_processor=CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}),
        tokenizer=CLIPTokenizer(vocab=vocab, merges=[]),
    )
    processor.save_pretrained(folder)
    return folder


def test_hf_backend(hf_folder, image, tmp_path):
    from splatseg.semantics.clip import HFClipEncoder

    rgb, segmaps = image
    enc = HFClipEncoder(hf_folder, device="cpu", batch_size=2)
    assert enc.has_weights and enc.name == f"hf:{hf_folder.name}"
    emb = enc.encode_segments(rgb, segmaps)
    assert emb.shape == (5, 16) and np.allclose(np.linalg.norm(emb, axis=1), [1, 1, 1, 0, 1], atol=1e-5)
    assert np.array_equal(enc.encode_segments(rgb, segmaps), emb)
    t = enc.encode_text(["a red box", "a blue cup"])
    assert t.shape == (2, 16) and not np.allclose(t[0], t[1])
    rnd = HFClipEncoder(hf_folder, device="cpu", random_weights=True)
    with pytest.raises(SemanticsError):
        rnd.encode_text(["a red box"])
    with pytest.raises(SemanticsError) as err:
        HFClipEncoder(tmp_path / "nothing-here", device="cpu")
    assert "\n" not in str(err.value) and "--clip-pretrained" in str(err.value)
