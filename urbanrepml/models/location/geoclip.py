"""GeoCLIP's pretrained global location encoder (512-d), loaded from the installed ``geoclip`` wheel.

The ``geoclip`` package (``pip install --no-deps geoclip==1.3.0``) ships the encoder's code and
weights (``geoclip/model/weights/location_encoder_weights.pth``). Importing ``geoclip`` itself
would import its image side (transformers, torchvision, Pillow), so only the location-encoder
module is loaded here: the package folders are registered under a private name and
``model/location_encoder.py`` is imported from them, with its own relative imports (``misc``,
``rff``). Nothing is downloaded; the Hugging Face Hub is switched to offline mode first.

:class:`GeoCLIPLocationEncoder` wraps it so it reads like the project's encoders: (lat, lon)
degrees in (GeoCLIP's own order too), (N, 512) out.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
import types
from pathlib import Path

from torch import Tensor, nn

from urbanrepml.errors import UrbanReprError

GEOCLIP_VERSION = "1.3.0"
INSTALL_HINT = f"pip install --no-deps geoclip=={GEOCLIP_VERSION}"
_ALIAS = "_urbanrepml_geoclip"


def geoclip_dir() -> Path:
    """The installed ``geoclip`` package folder (its ``__init__`` is not run); one clear error when missing."""
    spec = importlib.util.find_spec("geoclip")
    if spec is None or not spec.submodule_search_locations:
        raise UrbanReprError(f"GeoCLIP is not installed; install its wheel without dependencies: {INSTALL_HINT}")
    return Path(list(spec.submodule_search_locations)[0])


def geoclip_weights_path() -> Path:
    """The pretrained location-encoder weights inside the installed wheel."""
    path = geoclip_dir() / "model" / "weights" / "location_encoder_weights.pth"
    if not path.is_file():
        raise UrbanReprError(f"the installed geoclip package has no {path.name}; reinstall it: {INSTALL_HINT}")
    return path


def _location_module():
    """``geoclip/model/location_encoder.py`` imported under a private package name (no ``geoclip/__init__``)."""
    name = f"{_ALIAS}.model.location_encoder"
    if name in sys.modules:
        return sys.modules[name]
    root = geoclip_dir()
    for pkg, folder in ((_ALIAS, root), (f"{_ALIAS}.model", root / "model")):
        if pkg not in sys.modules:
            module = types.ModuleType(pkg)
            module.__path__ = [str(folder)]
            sys.modules[pkg] = module
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        raise UrbanReprError(f"cannot load GeoCLIP's location encoder ({exc}); reinstall it: {INSTALL_HINT}") from None


class GeoCLIPLocationEncoder(nn.Module):
    """GeoCLIP's pretrained ``LocationEncoder`` (random Fourier features at 3 scales, Equal Earth projection).

    Shapes:
        ``latlon`` (N, 2) degrees (lat, lon) -> (N, 512).
    """

    out_dim = 512

    def __init__(self):
        super().__init__()
        module = _location_module()
        geoclip_weights_path()  # a clear error before GeoCLIP's own loader fails
        self.encoder = module.LocationEncoder(from_pretrained=True)
        self.encoder.eval()

    def forward(self, latlon: Tensor) -> Tensor:
        return self.encoder(latlon.float())


def build_geoclip() -> GeoCLIPLocationEncoder:
    """GeoCLIP's pretrained global location encoder (eval mode)."""
    return GeoCLIPLocationEncoder().eval()
