"""Concept-geolocation networks, losses and text prototypes (tiny tensors; a tiny random CLIP from a tmp folder)."""

from __future__ import annotations

import importlib.util
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from urbanrepml.errors import UrbanReprError
from urbanrepml.models.concept.heads import MAX_LOGIT_SCALE, ConceptGeoHead, PrototypeClassifier
from urbanrepml.models.concept.losses import focal_loss, hierarchy_kl, parent_from_meta, parent_guided_meta
from urbanrepml.models.concept.text import TEMPLATES, concept_sentences, hierarchy_prototypes


def test_focal_loss_is_cross_entropy_without_focus_or_smoothing():
    logits, labels = torch.randn(8, 5), torch.randint(0, 5, (8,))
    assert torch.allclose(focal_loss(logits, labels, gamma=0.0), F.cross_entropy(logits, labels), atol=1e-6)
    assert focal_loss(logits, labels, gamma=2.0, smoothing=0.2) < focal_loss(logits, labels, gamma=0.0, smoothing=0.2)


def test_hierarchy_losses():
    m2p = torch.tensor([0, 0, 1])
    meta_logits = torch.tensor([[5.0, 0.0, -5.0]])
    implied = parent_from_meta(meta_logits.softmax(1), m2p, 2)
    assert torch.allclose(implied.sum(1), torch.ones(1))
    assert hierarchy_kl(meta_logits, implied.log(), m2p) < 1e-5
    # parent-guided: meta 2 (the only child of parent 1) costs nothing whatever the other metas score
    assert parent_guided_meta(torch.tensor([[9.0, 9.0, 0.0]]), torch.tensor([2]), m2p) < 1e-4


def test_prototype_classifier_scale_is_clamped_and_prototypes_normalised():
    clf = PrototypeClassifier(torch.randn(4, 8))
    with torch.no_grad():
        clf.log_scale.fill_(10.0)
    assert float(clf.scale) == MAX_LOGIT_SCALE
    assert torch.allclose(clf.prototypes().norm(dim=1), torch.ones(4), atol=1e-5)
    assert clf(torch.randn(3, 8)).shape == (3, 4)


@pytest.mark.parametrize("mode", ["both", "concept_only", "image_only"])
def test_geo_head_shapes(mode):
    head = ConceptGeoHead(16, 24, 7, heads=4, mode=mode)
    cells, off, attn = head(torch.randn(5, 16), torch.randn(5, 9, 24))
    assert cells.shape == (5, 7) and off.shape == (5, 3) and attn.shape == (5, 9)


@pytest.mark.parametrize("mode,sees_concept,sees_image", [("both", True, True), ("concept_only", True, False),
                                                       ("image_only", False, True)])
def test_geo_head_inputs_per_mode(mode, sees_concept, sees_image):
    """What each ablation reads: ``both`` the concept embedding and the patches, the others one of them."""
    torch.manual_seed(0)
    head = ConceptGeoHead(16, 24, 7, heads=4, mode=mode).eval()
    concept, tokens = torch.randn(5, 16), torch.randn(5, 9, 24)
    with torch.no_grad():
        base = head(concept, tokens)[0]
        other_concept = head(torch.randn(5, 16), tokens)[0]
        other_tokens = head(concept, torch.randn(5, 9, 24))[0]
    assert (not torch.allclose(base, other_concept)) == sees_concept
    assert (not torch.allclose(base, other_tokens)) == sees_image
    if mode == "both":  # the mean patch alone already reaches the heads (as in image_only), not only through attention
        head.attn.out_proj.weight.data.zero_()
        head.attn.out_proj.bias.data.zero_()
        with torch.no_grad():
            assert not torch.allclose(head(concept, tokens)[0], head(concept, torch.randn(5, 9, 24))[0])


def test_geo_head_refuses_bad_settings():
    with pytest.raises(UrbanReprError, match="mode"):
        ConceptGeoHead(16, 24, 7, mode="nope")
    with pytest.raises(UrbanReprError, match="multiple"):
        ConceptGeoHead(10, 24, 7, heads=4)


def test_builtin_prototypes_use_templates_and_are_normalised():
    assert len(concept_sentences("open_water", "a lake")) == len(TEMPLATES) + 1
    assert "A street view showing open water" in concept_sentences("open_water")
    metas, parents = hierarchy_prototypes(["open_water", "wetland_margin", "dense_crop"], ["water", "vegetation"])
    assert metas.shape[0] == 3 and parents.shape[0] == 2 and metas.shape[1] == parents.shape[1]
    assert np.allclose(np.linalg.norm(metas, axis=1), 1.0, atol=1e-5)


@pytest.mark.skipif(importlib.util.find_spec("transformers") is None, reason="needs transformers (dev extra)")
def test_clip_text_encoder_loads_a_local_folder(tmp_path):
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection, CLIPTokenizer

    chars = sorted(set("abcdefghijklmnopqrstuvwxyz"))
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for c in chars:
        vocab[c] = len(vocab)
        vocab[c + "</w>"] = len(vocab)
    (tmp_path / "vocab.json").write_text(json.dumps(vocab))
    (tmp_path / "merges.txt").write_text("#version: 0.2\n")
    CLIPTokenizer(str(tmp_path / "vocab.json"), str(tmp_path / "merges.txt")).save_pretrained(tmp_path)
    torch.manual_seed(0)
    config = CLIPTextConfig(vocab_size=len(vocab), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                            num_attention_heads=2, max_position_embeddings=77, projection_dim=12,
                            bos_token_id=0, eos_token_id=1, pad_token_id=1)
    CLIPTextModelWithProjection(config).save_pretrained(tmp_path)
    metas, parents = hierarchy_prototypes(["open_water", "dense_crop"], ["water", "vegetation"], encoder="clip",
                                          folder=str(tmp_path))
    assert metas.shape == (2, 12) and parents.shape == (2, 12)
    assert np.allclose(np.linalg.norm(metas, axis=1), 1.0, atol=1e-5)


def test_clip_folder_without_config_is_refused(tmp_path):
    with pytest.raises(UrbanReprError, match="no config.json"):
        hierarchy_prototypes(["a"], ["b"], encoder="clip", folder=str(tmp_path))


def test_split_backbone_freezes_the_stem():
    from urbanrepml.models.concept.backbone import SplitBackbone

    b = SplitBackbone("small_cnn", 1, 32)
    assert not any(p.requires_grad for p in b.stem.parameters()) and all(p.requires_grad for p in b.top.parameters())
    pooled, tokens = b(torch.zeros(2, 3, 32, 32))
    assert pooled.shape == (2, b.embed_dim) and tokens.shape == (2, b.num_tokens, b.embed_dim)
    with pytest.raises(UrbanReprError, match="trainable_blocks"):
        SplitBackbone("small_cnn", 0, 32)
