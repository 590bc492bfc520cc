"""Train / val / test splits of an image index that never cut through a ``group``.

Three methods, each assigning whole *units* to one split:

- ``group``: the unit is the group (sequence, capture, scene). Units are ordered by a stable hash
  (BLAKE2b of ``salt`` and the unit id, the same on every machine and Python run) and laid end to
  end by image count; a unit goes to the split whose share of the ratio line holds the unit's
  midpoint. Shares come close to the ratios by image count, the result does not depend on row
  order, and every split with a positive ratio gets a unit when there are enough units.
- ``time``: a group's time is its earliest ``captured_at``; groups up to ``train_until`` train,
  up to ``val_until`` validate, later ones test. A boundary is a year (``2016``: the end of 2016),
  a month (``2016-06``) or a date (``2016-06-30``: the end of that day). Groups without any time
  stay unassigned (null) and are counted.
- ``blocks``: the unit is a spatial block: the H3 cell at ``block_resolution`` holding an image,
  joined with every other block that shares a group with it (connected components of blocks and
  groups), so neither a block nor a group is ever cut; then as ``group``.

- ``concept``: stratified by meta concept: the groups of each ``meta_concept`` (a group's first one)
  are split as ``group`` among themselves, so every concept is in every split in the ratios
  (70/15/15 for concept geolocation) and no group is cut.

Headline numbers use ``time`` or ``blocks`` splits (design notes); ``group`` is the default for
building datasets.
"""

from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd

from urbanrepml.errors import UrbanReprError
from urbanrepml.images import SPLITS

METHODS = ("none", "group", "time", "blocks", "concept")
DEFAULT_RATIOS = (0.8, 0.15, 0.05)


def parse_ratios(text: str) -> tuple[float, float, float]:
    """``"0.8,0.15,0.05"`` -> three non-negative shares summing to 1 (they are normalised)."""
    try:
        values = tuple(float(v) for v in str(text).split(","))
    except ValueError:
        values = ()
    if len(values) != 3 or any(not np.isfinite(v) or v < 0 for v in values) or sum(values) <= 0:
        raise UrbanReprError(f"parameter ratios: {text!r} must be three non-negative numbers train,val,test, e.g. 0.8,0.15,0.05")
    total = sum(values)
    return tuple(v / total for v in values)  # type: ignore[return-value]


def stable_order(units: np.ndarray, salt: str = "") -> np.ndarray:
    """Positions that sort ``units`` (strings) by a hash that is the same on every machine and run."""
    keys = [hashlib.blake2b(f"{salt}\0{u}".encode(), digest_size=8).digest() for u in units]
    return np.array(sorted(range(len(units)), key=lambda i: (keys[i], str(units[i]))), dtype=np.int64)


def assign_units(units: np.ndarray, ratios: tuple[float, float, float], salt: str = "") -> np.ndarray:
    """Split label of every image, given each image's unit id: whole units go to one split (see the module docstring)."""
    names, inverse, sizes = np.unique(np.asarray(units).astype(str), return_inverse=True, return_counts=True)
    order = stable_order(names, salt)
    cum = np.cumsum(sizes[order])
    mid = (cum - sizes[order] / 2.0) / cum[-1]
    bounds = np.cumsum(ratios)[:-1]
    label_of_ordered = np.searchsorted(bounds, mid, side="right")
    # Each split with a positive share gets a unit when there are enough: take the unit at the edge of the
    # neighbouring split that has the most units.
    positive = [k for k in range(3) if ratios[k] > 0]
    if len(names) >= len(positive):
        for k in positive:
            if (label_of_ordered == k).any():
                continue
            counts = np.bincount(label_of_ordered, minlength=3)
            donor = max((d for d in range(3) if counts[d] > 1), key=lambda d: (counts[d], -abs(d - k)))
            where = np.flatnonzero(label_of_ordered == donor)
            label_of_ordered[where[-1] if donor < k else where[0]] = k
    labels = np.empty(len(names), dtype=object)
    labels[order] = np.array(SPLITS, dtype=object)[label_of_ordered]
    return labels[inverse]


def split_by_group(frame: pd.DataFrame, ratios: tuple[float, float, float] = DEFAULT_RATIOS, salt: str = "") -> pd.Series:
    """Whole groups to train/val/test by stable hash (see the module docstring); a Series on ``frame.index``."""
    return pd.Series(assign_units(frame["group"].to_numpy(), ratios, salt), index=frame.index, name="split", dtype=object)


def period_end(text: str, *, name: str) -> pd.Timestamp:
    """The last instant of a year, month, day or time given as text (``2016`` -> 2016-12-31 23:59:59.999999999)."""
    try:
        return pd.Period(str(text).strip()).end_time
    except (ValueError, TypeError):
        raise UrbanReprError(f"parameter {name}: {text!r} is not a year, month or date (e.g. 2016, 2016-06, 2016-06-30)") from None


def split_by_time(frame: pd.DataFrame, train_until: str, val_until: str) -> pd.Series:
    """Groups by their first capture time: up to ``train_until`` train, up to ``val_until`` val, later test."""
    if not train_until or not val_until:
        raise UrbanReprError("a time split needs train_until and val_until (e.g. 2016 and 2018)")
    t_end, v_end = period_end(train_until, name="train_until"), period_end(val_until, name="val_until")
    if v_end < t_end:
        raise UrbanReprError(f"val_until {val_until} ends before train_until {train_until}; validation comes after training")
    start = frame.groupby("group")["captured_at"].min()
    if start.isna().all():
        raise UrbanReprError("no image has a captured_at time, so a time split is impossible; use split group or blocks")
    label = np.where(start <= t_end, "train", np.where(start <= v_end, "val", "test")).astype(object)
    label[start.isna().to_numpy()] = None
    per_image = label[start.index.get_indexer(frame["group"].to_numpy())]
    return pd.Series(per_image, index=frame.index, name="split", dtype=object)


def block_units(frame: pd.DataFrame, block_resolution: int) -> np.ndarray:
    """Each image's unit for a ``blocks`` split: the connected component of its H3 block and its group."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    from urbanrepml.areas import h3ops

    if not 0 <= block_resolution <= 15:
        raise UrbanReprError(f"parameter block_resolution must be an H3 resolution 0..15, got {block_resolution}")
    blocks = h3ops.latlon_to_cells(frame["lat"].to_numpy(), frame["lon"].to_numpy(), block_resolution)
    b_names, b_idx = np.unique(blocks, return_inverse=True)
    g_names, g_idx = np.unique(frame["group"].to_numpy().astype(str), return_inverse=True)
    nb = len(b_names)
    n = nb + len(g_names)
    graph = coo_matrix((np.ones(len(frame)), (b_idx, nb + g_idx)), shape=(n, n))
    _, comp = connected_components(graph, directed=False)
    return comp[b_idx].astype(str)


def split_by_blocks(frame: pd.DataFrame, block_resolution: int = 6,
                    ratios: tuple[float, float, float] = DEFAULT_RATIOS, salt: str = "") -> pd.Series:
    """Whole spatial blocks (joined through shared groups) to train/val/test; a Series on ``frame.index``."""
    units = block_units(frame, block_resolution)
    return pd.Series(assign_units(units, ratios, salt), index=frame.index, name="split", dtype=object)


def split_by_concept(frame: pd.DataFrame, ratios: tuple[float, float, float] = (0.7, 0.15, 0.15),
                     salt: str = "") -> pd.Series:
    """Stratified by ``meta_concept``: each concept's groups split as ``group`` (see the module docstring)."""
    if "meta_concept" not in frame.columns or frame["meta_concept"].isna().any():
        raise UrbanReprError("split concept needs a meta_concept on every image")
    first = frame.groupby("group", sort=False)["meta_concept"].first()
    out = pd.Series(np.full(len(frame), None, dtype=object), index=frame.index, name="split")
    for concept in sorted(first.unique()):
        groups = first.index[first == concept].to_numpy()
        labels = dict(zip(groups.astype(str), assign_units(groups, ratios, f"{salt}\0{concept}"), strict=True))
        sel = frame["group"].astype(str).isin(labels).to_numpy()
        out[sel] = frame.loc[sel, "group"].astype(str).map(labels).to_numpy()
    return out


def assign_splits(frame: pd.DataFrame, method: str, *, ratios: str = "0.8,0.15,0.05", train_until: str | None = None,
                  val_until: str | None = None, block_resolution: int = 6, salt: str = "") -> pd.Series:
    """The ``split`` column by ``method`` (``none``, ``group``, ``time``, ``blocks``, ``concept``)."""
    if method == "none":
        return pd.Series(np.full(len(frame), None, dtype=object), index=frame.index, name="split")
    if method == "group":
        return split_by_group(frame, parse_ratios(ratios), salt)
    if method == "time":
        return split_by_time(frame, train_until or "", val_until or "")
    if method == "blocks":
        return split_by_blocks(frame, block_resolution, parse_ratios(ratios), salt)
    if method == "concept":
        return split_by_concept(frame, parse_ratios(ratios), salt)
    raise UrbanReprError(f"parameter split: expected one of {', '.join(METHODS)}, got {method!r}")


def split_counts(frame: pd.DataFrame) -> dict[str, int]:
    """Images and groups per split (``images_train``, ``groups_train``, ..., ``images_unassigned``)."""
    split = frame["split"].fillna("unassigned")
    out: dict[str, int] = {}
    for name in (*SPLITS, "unassigned"):
        sel = split == name
        out[f"images_{name}"] = int(sel.sum())
        out[f"groups_{name}"] = int(frame.loc[sel.to_numpy(), "group"].nunique())
    return out


def sequence_segments(frame: pd.DataFrame, segment_size: int) -> pd.Series:
    """Each image's segment: its group cut, in capture order, into runs of ``segment_size`` images.

    A sequence-aware unit for datasets of few long sequences (one walk, one drive): segments are
    contiguous in time, so a split of whole segments keeps neighbouring frames together and cuts a
    sequence only between segments. Returns ``<group>/<n>`` on ``frame.index``.
    """
    if segment_size < 1:
        raise UrbanReprError(f"segment_size must be >= 1, got {segment_size}")
    key = frame.assign(_t=pd.to_datetime(frame["captured_at"]), _id=frame.index.astype(str))
    key = key.sort_values(["group", "_t", "_id"], na_position="last")
    rank = key.groupby("group", sort=False).cumcount().to_numpy() // segment_size
    seg = pd.Series([f"{g}/{r}" for g, r in zip(key["group"], rank, strict=True)], index=key.index)
    return seg.reindex(frame.index)
