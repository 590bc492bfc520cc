"""Place embedders: registered, right shapes, unit-norm rows, scriptable for the pyfunc."""

from __future__ import annotations

import torch

from urbanrepml.models.place import FAMILY, TRAINING_SPACE
from urbanrepml.models.registry import get_model, list_models, model_spec


def test_both_place_models_are_registered_with_search_spaces():
    assert list_models(FAMILY) == ["place_mlp", "place_cnn"]
    assert {"hidden", "out_dim"} <= set(model_spec("place_mlp").search_space(10))
    assert {"width", "out_dim"} <= set(model_spec("place_cnn").search_space(10))
    assert {"lr", "margin", "n_bands", "ucb_c"} == set(TRAINING_SPACE)


def test_outputs_are_unit_norm_and_the_models_script():
    mlp = get_model("place_mlp", in_dim=20, hidden="16,8", out_dim=4).eval()
    cnn = get_model("place_cnn", in_channels=5, size=8, width=4, out_dim=6).eval()
    for model, x in ((mlp, torch.randn(3, 20)), (cnn, torch.randn(3, 5, 8, 8))):
        out = model(x)
        assert out.shape == (3, model.out_dim)
        torch.testing.assert_close(out.norm(dim=1), torch.ones(3))
        torch.testing.assert_close(torch.jit.script(model)(x), out)
