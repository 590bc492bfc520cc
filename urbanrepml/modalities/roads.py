"""Roads modality: OSM highway ways -> per-cell length by class, intersections, dead ends, connectivity.

Network: every way whose ``highway`` value is one of :data:`ROAD_CLASSES`
(``*_link`` folded into its road, e.g. ``primary_link`` -> ``primary``). Each pair
of consecutive way nodes is a straight segment; its length is the great-circle
distance between the nodes.

Lengths per cell (``length_<class>_m``, ``length_total_m``): every segment is cut
into equal pieces no longer than ``step_m`` (default: 1/20 of the resolution's
mean hexagon edge, 10.04 m at resolution 9); each piece's length goes to the cell
containing its midpoint. All vectorised (numpy + one h3 lookup for all
midpoints). A piece straddling a cell border gives its whole length to one side,
so the error is at most ``step_m / 2`` per border crossing, and it averages out
(unbiased); totals over the area are exact for segments fully inside it.

Graph measures per cell, on the node graph (nodes = OSM way nodes, edges =
distinct consecutive node pairs over all ways of the network):
``intersections`` = nodes of degree >= 3, ``dead_ends`` = nodes of degree 1,
``connectivity`` = intersections / (intersections + dead_ends) (0 when neither),
``mean_degree`` = mean degree of the junction and end nodes (degree != 2;
shape points are not counted), 0 when the cell has none. Ways cut at the edge
of the extract show up as dead ends there.

``embedder="stats"`` (default) returns these columns; ``embedder="highway2vec"``
trains SRAI's :class:`~srai.embedders.Highway2VecEmbedder` on per-segment
features (one-hot class, oneway, lanes, maxspeed) and averages the segment
embeddings per cell (segment -> every cell its pieces fall in).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import h3
import numpy as np
import pandas as pd

from urbanrepml.areas import Area, h3ops
from urbanrepml.config import StudyArea
from urbanrepml.constants import REGION_ID
from urbanrepml.errors import UrbanReprError
from urbanrepml.modalities.base import (
    Modality,
    ModalityResult,
    osm_source,
    quiet_lightning,
)
from urbanrepml.params import param
from urbanrepml.sources.osm import OsmWays, haversine_m, read_highways

ROAD_CLASSES = (
    "motorway", "trunk", "primary", "secondary", "tertiary", "unclassified", "residential", "living_street",
    "service", "road", "busway", "pedestrian", "track", "footway", "cycleway", "bridleway", "path", "steps",
)
EMBEDDERS = ("stats", "highway2vec")
STEP_FRACTION = 1 / 20


def default_step_m(resolution: int) -> float:
    return h3.average_hexagon_edge_length(resolution, unit="m") * STEP_FRACTION


def segments(ways: OsmWays) -> dict[str, np.ndarray]:
    """Straight segments between consecutive nodes of each way (both nodes located)."""
    n = len(ways.node_id)
    if n < 2:
        empty = np.zeros(0, np.int64)
        return {"a": empty, "b": empty, "way": empty, "length": np.zeros(0)}
    a = np.arange(n - 1)
    same_way = np.ones(n - 1, bool)
    same_way[ways.offsets[1:-1] - 1] = False  # last node of a way -> first node of the next
    keep = same_way & ways.valid[:-1] & ways.valid[1:]
    a = a[keep]
    b = a + 1
    way = np.searchsorted(ways.offsets, a, side="right") - 1
    length = haversine_m(ways.lon[a], ways.lat[a], ways.lon[b], ways.lat[b])
    return {"a": a, "b": b, "way": way, "length": length}


def pieces(ways: OsmWays, seg: dict[str, np.ndarray], step_m: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Cut segments into pieces <= ``step_m``: (segment index, midpoint lat, midpoint lon, piece length)."""
    k = np.maximum(1, np.ceil(seg["length"] / step_m)).astype(np.int64)
    s = np.repeat(np.arange(len(k)), k)
    j = np.arange(len(s)) - np.repeat(np.cumsum(k) - k, k)
    t = (j + 0.5) / k[s]
    a, b = seg["a"][s], seg["b"][s]
    lon = ways.lon[a] + t * (ways.lon[b] - ways.lon[a])
    lat = ways.lat[a] + t * (ways.lat[b] - ways.lat[a])
    return s, lat, lon, seg["length"][s] / k[s]


def node_degrees(ways: OsmWays, seg: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(lat, lon, degree) of every network node; degree = number of distinct neighbouring nodes."""
    ia, ib = ways.node_id[seg["a"]], ways.node_id[seg["b"]]
    loop = ia == ib
    lo, hi = np.minimum(ia, ib)[~loop], np.maximum(ia, ib)[~loop]
    edges = np.unique(np.stack([lo, hi], axis=1), axis=0) if len(lo) else np.zeros((0, 2), np.int64)
    nodes, first = np.unique(ways.node_id[ways.valid], return_index=True)
    valid_pos = np.flatnonzero(ways.valid)[first]
    degree = np.bincount(np.searchsorted(nodes, edges.ravel()), minlength=len(nodes))
    return ways.lat[valid_pos], ways.lon[valid_pos], degree


def road_stats(ways: OsmWays, area_cells: np.ndarray, resolution: int, step_m: float | None = None) -> tuple[pd.DataFrame, dict]:
    """The per-cell stats table for cells of ``area_cells`` with any road (index ``region_id``)."""
    step_m = step_m or default_step_m(resolution)
    seg = segments(ways)
    s, lat, lon, plen = pieces(ways, seg, step_m)
    pos = h3ops.positions(area_cells, h3ops.latlon_to_cells(lat, lon, resolution)) if len(s) else np.zeros(0, np.int64)
    inside = pos >= 0
    n_cls = len(ways.classes)
    cls = ways.way_class[seg["way"][s]]
    lengths = np.bincount(pos[inside] * n_cls + cls[inside], weights=plen[inside], minlength=len(area_cells) * n_cls)
    lengths = lengths.reshape(len(area_cells), n_cls)

    nlat, nlon, degree = node_degrees(ways, seg)
    npos = h3ops.positions(area_cells, h3ops.latlon_to_cells(nlat, nlon, resolution)) if len(degree) else np.zeros(0, np.int64)
    nin = npos >= 0
    npos, degree = npos[nin], degree[nin]
    n = len(area_cells)
    intersections = np.bincount(npos, weights=degree >= 3, minlength=n)
    dead_ends = np.bincount(npos, weights=degree == 1, minlength=n)
    junction = degree != 2
    deg_sum = np.bincount(npos, weights=np.where(junction, degree, 0), minlength=n)
    deg_n = np.bincount(npos, weights=junction, minlength=n)
    any_node = np.bincount(npos, minlength=n) > 0

    present = lengths.sum(0) > 0
    frame = pd.DataFrame(lengths[:, present], columns=[f"length_{c}_m" for c, p in zip(ways.classes, present, strict=False) if p])
    frame["length_total_m"] = lengths.sum(1)
    frame["intersections"] = intersections
    frame["dead_ends"] = dead_ends
    ends = intersections + dead_ends
    frame["connectivity"] = np.divide(intersections, ends, out=np.zeros(n), where=ends > 0)
    frame["mean_degree"] = np.divide(deg_sum, deg_n, out=np.zeros(n), where=deg_n > 0)
    frame.index = pd.Index(h3ops.cells_to_str(area_cells), name=REGION_ID)
    has_data = (frame["length_total_m"].to_numpy() > 0) | any_node
    metrics = {
        "ways": float(len(ways)), "segments": float(len(seg["length"])), "step_m": float(step_m),
        "length_in_area_km": float(lengths.sum() / 1000), "intersections_total": float(intersections.sum()),
        "dead_ends_total": float(dead_ends.sum()),
    }
    return frame.loc[has_data].astype(np.float32), metrics


def segment_features(ways: OsmWays, seg: dict[str, np.ndarray]) -> pd.DataFrame:
    """Per-segment inputs of Highway2Vec: one-hot class, oneway, lanes/4, maxspeed/100 (0 where unknown)."""
    way = seg["way"]
    onehot = np.zeros((len(way), len(ways.classes)), np.float32)
    onehot[np.arange(len(way)), ways.way_class[way]] = 1

    def number(tag: str) -> np.ndarray:
        values = pd.to_numeric(pd.Series([t.get(tag, "") for t in ways.tags]).str.extract(r"^\s*(\d+(?:\.\d+)?)")[0], errors="coerce")
        return values.fillna(0).to_numpy(np.float32)

    oneway = np.array([t.get("oneway") in ("yes", "1", "true", "-1") for t in ways.tags], np.float32)
    frame = pd.DataFrame(onehot, columns=[f"highway_{c}" for c in ways.classes])
    frame["oneway"] = oneway[way]
    frame["lanes"] = number("lanes")[way] / 4
    frame["maxspeed"] = number("maxspeed")[way] / 100
    frame.index = pd.Index([f"segment/{i}" for i in range(len(way))], name="feature_id")
    return frame


def highway2vec_embed(ways: OsmWays, area: Area, resolution: int, step_m: float, embedding_size: int, epochs: int,
                      keep_index: pd.Index, seed: int = 0) -> pd.DataFrame:
    """SRAI Highway2VecEmbedder: segment autoencoder, segment embeddings averaged per cell."""
    import geopandas as gpd
    import pytorch_lightning as pl
    from srai.embedders import Highway2VecEmbedder


    seg = segments(ways)
    s, lat, lon, _ = pieces(ways, seg, step_m)
    cells = area.cells(resolution)
    pos = h3ops.positions(cells, h3ops.latlon_to_cells(lat, lon, resolution))
    pairs = np.unique(np.stack([pos, s], 1)[pos >= 0], axis=0)
    feats = segment_features(ways, seg)
    used = np.unique(pairs[:, 1])
    features_gdf = gpd.GeoDataFrame(feats.iloc[used], geometry=[None] * len(used))
    regions = area.regions_gdf(resolution)
    # joint without a geometry column: SRAI averages every joint column per region
    joint = pd.DataFrame(index=pd.MultiIndex.from_arrays(
        [regions.index[pairs[:, 0]], feats.index[pairs[:, 1]]], names=[REGION_ID, "feature_id"]))
    quiet_lightning()
    pl.seed_everything(seed, workers=False, verbose=False)
    embedder = Highway2VecEmbedder(hidden_size=max(2 * embedding_size, 64), embedding_size=embedding_size)
    trainer_kwargs = dict(max_epochs=epochs, accelerator="cpu", logger=False, enable_checkpointing=False,
                          enable_progress_bar=False, enable_model_summary=False, deterministic=True)
    out = embedder.fit_transform(regions, features_gdf, joint, trainer_kwargs=trainer_kwargs,
                                 dataloader_kwargs={"batch_size": 1024, "shuffle": True})
    out.index.name = REGION_ID
    out = out.reindex(keep_index).fillna(0.0)  # cells with only nodes and no piece midpoint get zeros
    out.columns = [f"highway2vec_{i}" for i in range(out.shape[1])]
    return out.astype(np.float32)


class RoadsModality(Modality):
    """OSM highway network -> per-cell class lengths, intersections, dead ends, connectivity (or Highway2Vec)."""

    name = "roads"

    @dataclass
    class Params:
        """The ``roads`` entry point's own settings."""

        embedder: str = param("stats", "stats (default) or highway2vec", choices=EMBEDDERS)
        embedding_size: int = param(32, "highway2vec output dimensions")

    def __init__(self, embedder: str = "stats", embedding_size: int = 32, epochs: int = 5, step_m: float | None = None):
        if embedder not in EMBEDDERS:
            raise UrbanReprError(f"roads: unknown embedder {embedder!r}; choose one of {', '.join(EMBEDDERS)}")
        if embedding_size < 1:
            raise UrbanReprError(f"roads: embedding_size must be >= 1, got {embedding_size}")
        if step_m is not None and not step_m > 0:
            raise UrbanReprError(f"roads: step_m must be > 0, got {step_m}")
        self.embedder = embedder
        self.embedding_size = int(embedding_size)
        self.epochs = int(epochs)
        self.step_m = step_m

    def source_files(self, spec: StudyArea) -> dict[str, Path]:
        return osm_source(spec)

    def compute(self, spec: StudyArea, area: Area, resolution: int) -> ModalityResult:
        (path,) = self.source_files(spec).values()
        ways = read_highways(path, ROAD_CLASSES)
        step = self.step_m or default_step_m(resolution)
        stats, metrics = road_stats(ways, area.cells(resolution), resolution, step)
        params = {"embedder": self.embedder, "step_m": round(step, 3)}
        notes = [f"Roads: {len(ways)} highway ways; lengths from pieces <= {step:.1f} m assigned by midpoint "
                 f"(error <= {step / 2:.1f} m per cell-border crossing); {int(metrics['intersections_total'])} intersections, "
                 f"{int(metrics['dead_ends_total'])} dead ends in the area."]
        if self.embedder == "stats" or len(stats) == 0:
            return ModalityResult(stats, metrics=metrics, params=params, notes=notes)
        out = highway2vec_embed(ways, area, resolution, step, self.embedding_size, self.epochs, stats.index)
        notes.append(f"Highway2Vec: SRAI Highway2VecEmbedder (hidden {max(2 * self.embedding_size, 64)}, "
                     f"embedding {self.embedding_size}, {self.epochs} epochs, seed 0) on per-segment class/oneway/lanes/maxspeed.")
        return ModalityResult(out, metrics=metrics, params=params, notes=notes)
