"""Location encoders as modules: the encodings' maths, lat/lon order, TorchScript, checkpoints, the retrieval service."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch

from urbanrepml.errors import UrbanReprError
from urbanrepml.models.location import TRAINABLE, ContrastiveLocationModel, symmetric_infonce
from urbanrepml.models.location.checkpoint import checkpoint, load, rebuild, save
from urbanrepml.models.location.frame import RegionFrame, check_latlon, equal_earth
from urbanrepml.models.location.positional import GaussianFourierFeatures, Space2VecGrid, Space2VecTheory, SphericalHarmonics
from urbanrepml.models.location.retrieval import LocationService, service_from_model
from urbanrepml.models.registry import get_model, list_models

POA = (-30.113, -29.988, -51.266, -51.132)
HAS_GEOCLIP = importlib.util.find_spec("geoclip") is not None


def poa_points(n: int = 40, seed: int = 0) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    return torch.from_numpy(np.column_stack([rng.uniform(POA[0], POA[1], n), rng.uniform(POA[2], POA[3], n)]))


def small(name: str, **extra):
    config = {"hidden": 16, "layers": 1, "embedding_dim": 8, "bounds": POA, **extra}
    if name == "sh_siren":
        config["legendre_polys"] = 6
    return get_model(name, **config)


def test_registry_lists_the_families_and_their_search_spaces():
    assert list_models("location_encoder") == ["sh_siren", "space2vec_grid", "space2vec_theory", "rff", "geoclip"]
    assert TRAINABLE == ("sh_siren", "space2vec_grid", "space2vec_theory", "rff")
    from urbanrepml.models.registry import model_spec

    for name in TRAINABLE:
        space = model_spec(name).search_space(10)
        assert {"lr", "temperature", "hidden", "layers"} <= set(space)
    assert "legendre_polys" in model_spec("sh_siren").search_space(10)
    assert "sigmas" in model_spec("rff").search_space(10)


def test_spherical_harmonics_are_the_real_orthonormal_harmonics():
    """Against scipy: Y_l^m = sqrt(2) Re / Im of the complex harmonic (Condon-Shortley phase included), Y_l^0 = Re."""
    from scipy.special import sph_harm_y

    rng = np.random.default_rng(0)
    lat, lon = rng.uniform(-89, 89, 60), rng.uniform(-180, 180, 60)
    big_l = 7
    got = SphericalHarmonics(big_l, "globe")(torch.from_numpy(np.column_stack([lat, lon]))).double().numpy()
    theta, phi = np.deg2rad(90 - lat), np.deg2rad(lon)
    for ell in range(big_l):
        for m in range(-ell, ell + 1):
            y = sph_harm_y(ell, abs(m), theta, phi)
            want = np.sqrt(2) * y.real if m > 0 else np.sqrt(2) * y.imag if m < 0 else y.real
            np.testing.assert_allclose(got[:, ell * ell + ell + m], want, atol=1e-5)


def test_high_degrees_stay_finite():
    out = SphericalHarmonics(120, "region", POA)(poa_points(10))
    assert out.shape == (10, 14400) and torch.isfinite(out).all()


def test_inputs_are_lat_lon_and_swapping_them_changes_the_output():
    ll = torch.tensor([[-30.05, -51.2], [-30.0, -51.15]], dtype=torch.float64)
    swapped = ll.flip(1)
    for name in TRAINABLE:
        model = small(name).eval()
        assert not torch.allclose(model(ll), model(swapped)), name
    # SatCLIP's harmonics run on (lon, lat): the globe frame hands them the columns in that order
    pe = SphericalHarmonics(3, "globe")
    assert torch.equal(pe.lonlat(ll), swapped)
    # Y_1^0 is sqrt(3/4pi) sin(lat): a function of latitude only
    assert pe(torch.tensor([[30.0, 10.0], [30.0, -100.0]]))[:, 2].unique().numel() == 1


def test_region_frame_and_equal_earth():
    frame = RegionFrame(POA)
    ll = torch.tensor([[(POA[0] + POA[1]) / 2, (POA[2] + POA[3]) / 2], [POA[1], POA[3]]], dtype=torch.float64)
    km = frame.local_km(ll)
    assert torch.allclose(km[0], torch.zeros(2, dtype=torch.float64))
    assert 5 < float(km[1, 0]) < 8 and 6 < float(km[1, 1]) < 8  # the corner is ~6.5 km east and ~7 km north
    assert float(frame.normalised(ll).abs().max()) == pytest.approx(1.0)
    sphere = frame.region_sphere(torch.tensor([[80.0, 170.0]], dtype=torch.float64))  # far outside: clamped
    assert float(sphere.abs().max()) <= 60 * 1.45 + 1e-9
    # GeoCLIP's projection: the origin stays, longitude spans about [-2.7, 2.7] / 2.7 ... symmetric
    ee = equal_earth(torch.tensor([[0.0, 0.0], [0.0, 180.0], [0.0, -180.0]]))
    assert float(ee[0].abs().max()) == 0 and float(ee[1, 0]) == pytest.approx(-float(ee[2, 0]))


def test_space2vec_and_fourier_feature_widths():
    ll = poa_points(5)
    assert Space2VecGrid(8, 0.1, 20.0, POA)(ll).shape == (5, 32)
    assert Space2VecTheory(8, 0.1, 20.0, POA)(ll).shape == (5, 48)
    assert GaussianFourierFeatures(4.0, 16, "region", POA)(ll).shape == (5, 32)
    assert GaussianFourierFeatures(4.0, 16, "globe", POA)(ll).shape == (5, 32)


@pytest.mark.parametrize("latlon", [([91.0], [0.0]), ([0.0], [181.0]), ([np.nan], [0.0]), ([0.0, 1.0], [0.0])])
def test_check_latlon_refuses_bad_coordinates(latlon):
    with pytest.raises(UrbanReprError):
        check_latlon(*latlon, where="test")


@pytest.mark.parametrize("bad", [dict(legendre_polys=0), dict(frame="mercator"), dict(network="transformer"), dict(hidden=0)])
def test_bad_settings_are_one_clear_error(bad):
    with pytest.raises(UrbanReprError):
        get_model("sh_siren", **{"legendre_polys": 4, **bad})
    with pytest.raises(UrbanReprError, match="sigmas"):
        get_model("rff", sigmas="1,x")


@pytest.mark.parametrize("name", TRAINABLE)
def test_scripted_encoders_match_and_checkpoints_round_trip(name, tmp_path):
    torch.manual_seed(0)
    model = ContrastiveLocationModel(small(name), in_dim=5, projection_hidden=0, temperature=0.5,
                                     input_mean=torch.arange(5.0), input_std=torch.full((5,), 2.0)).eval()
    ll, x = poa_points(30), torch.randn(30, 5)
    with torch.no_grad():
        before = model.embed_locations(ll), model.project(x)
        scripted = torch.jit.script(model.encoder)
        assert torch.equal(scripted(ll), before[0])
    from urbanrepml.models.registry import model_spec

    config = {**model_spec(name).defaults, "hidden": 16, "layers": 1, "embedding_dim": 8, "bounds": POA}
    if name == "sh_siren":
        config["legendre_polys"] = 6
    save(checkpoint(model, name, config), tmp_path / "ckpt.pt")
    again = load(tmp_path / "ckpt.pt")
    with torch.no_grad():
        assert torch.equal(again.embed_locations(ll), before[0]) and torch.equal(again.project(x), before[1])
    assert set(again.state_dict()) == set(model.state_dict())  # every key, buffers too
    assert float(again.scale().detach()) == pytest.approx(2.0)


def test_a_checkpoint_missing_a_key_is_refused():
    model = ContrastiveLocationModel(small("rff"), in_dim=3)
    state = checkpoint(model, "rff", {"hidden": 16, "layers": 1, "embedding_dim": 8, "bounds": POA})
    state["state_dict"].pop(next(k for k in state["state_dict"] if k.endswith(".b")))  # a Fourier-frequency buffer
    with pytest.raises(UrbanReprError, match="does not match"):
        rebuild(state)
    with pytest.raises(UrbanReprError, match="not a location-encoder checkpoint"):
        rebuild({"state_dict": {}})


def test_infonce_is_low_for_matched_pairs_and_symmetric():
    torch.manual_seed(0)
    a = torch.nn.functional.normalize(torch.randn(16, 8), dim=1)
    matched = symmetric_infonce(a, a, torch.tensor(20.0))
    shuffled = symmetric_infonce(a, a[torch.randperm(16)], torch.tensor(20.0))
    assert float(matched) < float(shuffled)
    b = torch.nn.functional.normalize(torch.randn(16, 8), dim=1)
    assert float(symmetric_infonce(a, b, torch.tensor(5.0))) == pytest.approx(float(symmetric_infonce(b, a, torch.tensor(5.0))))


def _toy_service():
    """A bank whose keys are one-hot, queried by an encoder that returns one-hot too (so retrieval is known)."""

    class OneHot(torch.nn.Module):
        out_dim = 4

        def forward(self, latlon: torch.Tensor) -> torch.Tensor:
            return torch.nn.functional.one_hot(latlon[:, 0].round().long() % 4, 4).float()

    keys = torch.eye(4)[[0, 0, 1, 2, 3]]
    values = torch.tensor([[1.0], [3.0], [10.0], [20.0], [30.0]])
    latlon = torch.tensor([[0.0, 0.0], [4.0, 0.0], [1.0, 0.0], [2.0, 0.0], [3.0, 0.0]], dtype=torch.float64)
    return LocationService(OneHot(), keys, values, latlon, logit_scale=1000.0)


def test_retrieval_excludes_the_own_record_by_position_and_by_place():
    service = _toy_service()
    query = torch.tensor([[0.0, 0.0], [0.0, 0.5], [4.0, 0.0]], dtype=torch.float64)
    _, combined, idx, cos = service.retrieve(query, 1, torch.tensor([-1, 1, -1]))
    # row 0 sits exactly on record 0 (excluded by place) -> record 1; row 1 names record 1 as its own -> record 0;
    # row 2 sits on record 1 -> record 0
    assert idx[:, 0].tolist() == [1, 0, 0]
    assert combined[:, 0].tolist() == [3.0, 1.0, 1.0]
    # k = 2: the two records of key 0 weigh equally, the rest (cosine 0 at scale 1000) nothing
    _, combined, idx, _ = service.retrieve(torch.tensor([[0.0, 0.5]], dtype=torch.float64), 2, torch.tensor([-1]))
    assert sorted(idx[0].tolist()) == [0, 1] and float(combined[0, 0]) == pytest.approx(2.0)
    scripted = torch.jit.script(service)
    own = torch.tensor([-1, 1, -1])
    assert torch.equal(scripted.retrieve(query, 1, own)[2], service.retrieve(query, 1, own)[2])


def test_retrieval_bounds_on_k_and_bank_size():
    service = _toy_service()
    q, own = torch.zeros(1, 2, dtype=torch.float64), torch.tensor([-1])
    with pytest.raises(ValueError, match="k must be"):
        service.retrieve(q, 5, own)
    with pytest.raises(ValueError, match="k must be"):
        service.retrieve(q, 0, own)
    one = LocationService(service.encoder, torch.eye(4)[:1], torch.ones(1, 1), torch.zeros(1, 2, dtype=torch.float64))
    with pytest.raises(ValueError, match="at least 2"):
        one.retrieve(q, 1, own)
    assert LocationService(service.encoder).bank_size() == 0


def test_service_from_model_projects_the_bank():
    model = ContrastiveLocationModel(small("space2vec_grid"), in_dim=3).eval()
    values, ll = torch.randn(12, 3), poa_points(12)
    service = service_from_model(model, values, ll)
    with torch.no_grad():
        want = torch.nn.functional.normalize(model.project(values), dim=1)
    assert torch.allclose(service.keys, want) and service.bank_size() == 12
    assert float(service.logit_scale) == pytest.approx(float(model.scale()))


@pytest.mark.skipif(not HAS_GEOCLIP, reason="geoclip is not installed (pip install --no-deps geoclip==1.3.0)")
def test_geoclip_pretrained_encoder_loads_offline_without_its_image_side():
    import sys

    before = set(sys.modules)
    from urbanrepml.models.location.geoclip import build_geoclip

    model = build_geoclip()
    out = model(torch.tensor([[-30.05, -51.2], [48.85, 2.35]]))
    assert out.shape == (2, 512) and torch.isfinite(out).all()
    assert not torch.allclose(out[0], out[1])
    # loading it imports neither the geoclip package (its image side) nor torchvision/transformers
    # (other tests of the session may have imported transformers already: only new imports count)
    new = set(sys.modules) - before
    assert "geoclip" not in sys.modules and not any(m.startswith(("torchvision", "transformers")) for m in new)


def test_retrieval_skips_many_records_at_the_query_place():
    """More records at the query's place than the candidate slack: the row falls back to masking the whole bank."""

    class Ones(torch.nn.Module):
        out_dim = 2

        def forward(self, latlon: torch.Tensor) -> torch.Tensor:
            return torch.ones(latlon.shape[0], 2)

    m, here = 30, 12
    keys = torch.tensor([[1.0, 1.0]] * here + [[1.0, 1.0 - 0.01 * i] for i in range(1, m - here + 1)])
    latlon = torch.tensor([[5.0, 5.0]] * here + [[float(i), 0.0] for i in range(m - here)], dtype=torch.float64)
    service = LocationService(Ones(), keys, torch.arange(m, dtype=torch.float32)[:, None], latlon, logit_scale=1.0)
    query = torch.tensor([[5.0, 5.0], [40.0, 40.0]], dtype=torch.float64)
    for s in (service, torch.jit.script(service)):
        _, _, idx, _ = s.retrieve(query, 3, torch.tensor([-1, -1]))
        assert idx[0].tolist() == [12, 13, 14]  # the 12 records at the query's place are its own
        assert set(idx[1].tolist()) <= set(range(here))  # elsewhere they are simply the most similar
