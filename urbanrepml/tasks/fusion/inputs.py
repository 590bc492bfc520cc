"""Fusion inputs: the modality tables of one study area and resolution, aligned on one cell set.

API
---
- ``ZERO_FILL``: modalities whose missing cell means "zero" (count-like): ``poi``, ``roads``, ``gtfs``.
- ``FusionInputs``: dataclass with ``study_area``, ``resolution``, ``region_ids`` (pd.Index named
  ``region_id``, in ``Area.region_ids(resolution)`` order), ``cells`` (the same as sorted uint64),
  ``area_positions`` (position of each cell in ``Area.cells(resolution)``), ``blocks``
  (modality -> float32 (N, d_m), z-scored per column), ``x`` (float32 (N, D): blocks
  concatenated + ``has_<modality>`` indicator columns), ``feature_names`` (D names), ``sources``
  (modality -> {path, run_id, sha256, source_uri, n_cells}), ``coverage`` (modality -> share of
  the N cells the table covers). Method ``edge_index(area)`` gives the 1-ring graph among the
  N cells (int64 (2, E), positions into ``x``).
- ``load_fusion_inputs(study_area, resolution, tables, area=None, provenance=None) -> FusionInputs``:
  ``tables`` maps modality -> path (or is a list of paths; the modality comes from the table
  metadata); :func:`urbanrepml.tracking.fusion.store_tables` finds them in the tracking store.
- ``parse_tables_param(value) -> dict | list | None``: the ``fuse -P tables=...`` string
  (``""``, ``"poi=a.parquet,roads=b.parquet"`` or ``"a.parquet,b.parquet"``).

Alignment rules
---------------
``join="outer"`` (default): the cell set is every cell of the area at that resolution. Zero-fill
modalities contribute zeros where they have no row (a true zero count: present); any other
modality (raster, alphaearth, aerial, ...) without a row for a cell gets 0 there (its z-scored
mean) and counts as *absent* in ``presence`` (the masked loss ignores it). ``join="inner"``: the
cell set is the intersection of the cells of every non-zero-fill table (every cell of the area
when all tables are zero-fill). Each modality that misses at least one of the cells adds one
indicator column ``has_<modality>`` (1.0 where the table has the cell, else 0.0; not z-scored).

Columns are transformed by ``transform`` (:func:`transform_block`): ``log1p`` of raw non-negative
columns of zero-fill (count-like) modalities before z-scoring, ``asinh`` of the z-scores, or
``none``. Every block is z-scored per column over the cells that hold a value (zero-filled rows
included); a column with zero variance becomes 0. Indicator columns come after all blocks, in
modality order. Modalities are ordered by name, so ``x`` is deterministic.

Errors (``UrbanReprError``, one line): no tables at all (names the entry points to run), tables
at different resolutions or not at the requested one, from another study area, with cells
outside the area, NaN/inf (checked by ``read_table``), two tables of one modality, and no cell
shared by the inner-joined modalities.

No MLflow here: :mod:`urbanrepml.tracking.fusion` logs inputs and finds tables in the store.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from urbanrepml.areas import Area, build_area, h3ops
from urbanrepml.config import load_study_area
from urbanrepml.constants import FUSED, REGION_ID
from urbanrepml.errors import UrbanReprError
from urbanrepml.tables import EmbeddingTable, TableMeta, file_digest, read_table, to_embedding_frame

ZERO_FILL = frozenset({"poi", "roads", "gtfs"})
INDICATOR_PREFIX = "has_"
JOINS = ("outer", "inner")
TRANSFORMS = ("asinh", "log1p", "none")
DEFAULT_JOIN = "outer"
DEFAULT_TRANSFORM = "asinh"


@dataclass
class FusionInputs:
    """Modality tables aligned on one cell set, z-scored, concatenated. See the module docstring."""

    study_area: str
    resolution: int
    region_ids: pd.Index
    blocks: dict[str, np.ndarray]
    x: np.ndarray
    feature_names: list[str]
    sources: dict[str, dict]
    cells: np.ndarray = field(default_factory=lambda: np.array([], dtype=np.uint64))
    area_positions: np.ndarray = field(default_factory=lambda: np.array([], dtype=np.int64))
    coverage: dict[str, float] = field(default_factory=dict)
    present: np.ndarray | None = None
    join: str = DEFAULT_JOIN
    transform: str = DEFAULT_TRANSFORM

    @property
    def modalities(self) -> list[str]:
        return list(self.blocks)

    @property
    def zero_filled(self) -> list[str]:
        """Modalities whose missing cells count as zeros (``ZERO_FILL``)."""
        return [m for m in self.modalities if m in ZERO_FILL]

    @property
    def n_cells(self) -> int:
        return int(self.x.shape[0])

    @property
    def digests(self) -> dict[str, str]:
        """Modality -> SHA-256 of its table file (for ``TableMeta.input_digests``)."""
        return {m: s["sha256"] for m, s in self.sources.items()}

    @property
    def column_groups(self) -> np.ndarray:
        """int64 (D,): the modality (position in ``modalities``) of each column of ``x``; -1 for indicators."""
        groups = [np.full(self.blocks[m].shape[1], i, dtype=np.int64) for i, m in enumerate(self.modalities)]
        groups.append(np.full(self.x.shape[1] - sum(len(g) for g in groups), -1, dtype=np.int64))
        return np.concatenate(groups)

    @property
    def presence(self) -> np.ndarray:
        """Bool (N, M): whether modality ``m`` has a value for the cell (zero-filled modalities always do)."""
        if self.present is None:
            return np.ones((self.n_cells, len(self.blocks)), dtype=bool)
        return self.present

    def edge_index(self, area: Area) -> np.ndarray:
        """1-ring neighbour edges among these cells: int64 (2, E), positions into ``x``, both directions."""
        return subgraph_edges(area.edge_index(self.resolution), self.area_positions, len(area.cells(self.resolution)))

    def frame(self) -> pd.DataFrame:
        """``x`` as a DataFrame indexed by ``region_id`` with ``feature_names`` as columns."""
        return pd.DataFrame(self.x, index=self.region_ids, columns=self.feature_names)


def subgraph_edges(edge_index: np.ndarray, keep: np.ndarray, n: int) -> np.ndarray:
    """Restrict an edge list over ``n`` nodes to the nodes ``keep`` and renumber them 0..len(keep)-1."""
    new = np.full(n, -1, dtype=np.int64)
    new[np.asarray(keep, dtype=np.int64)] = np.arange(len(keep), dtype=np.int64)
    src, dst = new[edge_index[0]], new[edge_index[1]]
    ok = (src >= 0) & (dst >= 0)
    return np.stack([src[ok], dst[ok]]).astype(np.int64)


def entry_points_hint(resolution: int) -> str:
    return (f"run a modality entry point first, e.g. `mlflow run . -e poi -P resolution={resolution}` "
            f"(also roads, gtfs, raster, alphaearth, aerial), or pass table paths with -P tables=...")


def parse_tables_param(value: str | None) -> dict[str, Path] | list[Path] | None:
    """``""`` -> None; ``"poi=a.parquet,roads=b.parquet"`` -> dict; ``"a.parquet,b.parquet"`` -> list."""
    if value is None or not str(value).strip():
        return None
    items = [v.strip() for v in str(value).split(",") if v.strip()]
    named = ["=" in v for v in items]
    if any(named) and not all(named):
        raise UrbanReprError(f"parameter tables: must be all 'modality=path' or all paths, separated by commas; got {value!r}")
    if all(named):
        out: dict[str, Path] = {}
        for item in items:
            name, path = (s.strip() for s in item.split("=", 1))
            if not name or name in out:
                raise UrbanReprError(f"parameter tables: empty or repeated modality name in {value!r}; "
                                     "write tables=poi=a.parquet,roads=b.parquet")
            if not path:
                raise UrbanReprError(f"parameter tables: modality {name!r} has no path in {value!r}; "
                                     f"write tables={name}=path/to/{name}_res9.parquet (or leave tables empty)")
            out[name] = Path(path)
        return out
    return [Path(v) for v in items]


def _read_all(tables: Mapping[str, str | Path] | Sequence[str | Path]) -> dict[str, EmbeddingTable]:
    """Read (contract-validate) every table; key by modality (given name, else metadata)."""
    items = list(tables.items()) if isinstance(tables, Mapping) else [(None, p) for p in tables]
    out: dict[str, EmbeddingTable] = {}
    for name, path in items:
        table = read_table(path)
        modality = name or table.meta.modality
        if modality in out:
            raise UrbanReprError(
                f"two tables for modality {modality!r}: {out[modality].path} and {path}; pass one per modality"
            )
        out[modality] = table
    return out


def _check_consistent(tables: dict[str, EmbeddingTable], study_area: str, resolution: int) -> None:
    resolutions = {m: t.meta.resolution for m, t in tables.items()}
    if len(set(resolutions.values())) > 1:
        listing = ", ".join(f"{m} res {r}" for m, r in sorted(resolutions.items()))
        raise UrbanReprError(
            f"modality tables are at different resolutions ({listing}); rebuild them at resolution {resolution}"
        )
    for m, t in sorted(tables.items()):
        if t.meta.resolution != resolution:
            raise UrbanReprError(
                f"{t.path}: {m} table is at resolution {t.meta.resolution}, fusion asked for {resolution}; "
                f"rebuild it with -P resolution={resolution} or fuse at resolution {t.meta.resolution}"
            )
        if t.meta.study_area != study_area:
            raise UrbanReprError(
                f"{t.path}: {m} table belongs to study area {t.meta.study_area!r}, not {study_area!r}; "
                f"use the tables of {study_area!r}"
            )


def _zscore(block: np.ndarray, rows: np.ndarray | None = None) -> np.ndarray:
    """Columns z-scored over ``rows`` (all when ``None``); other rows become 0 (the mean); constant columns 0."""
    values = block.astype(np.float64)
    ref = values if rows is None else values[rows]
    if len(ref) == 0:
        return np.zeros(block.shape, dtype=np.float32)
    mean = ref.mean(axis=0)
    std = ref.std(axis=0)
    safe = np.where(std > 0, std, 1.0)
    out = (values - mean) / safe
    out[:, std <= 0] = 0.0
    if rows is not None:
        out[~rows] = 0.0
    return out.astype(np.float32)


def transform_block(block: np.ndarray, transform: str, rows: np.ndarray | None = None, counts: bool = False) -> np.ndarray:
    """One modality block -> z-scored model input under ``transform``.

    ``log1p``: log(1 + v) of every column whose raw values are all >= 0, for count-like (zero-filled)
    modalities (``counts``), before z-scoring; ``asinh``: asinh of the z-scores (heavy tails
    compressed, sign kept); ``none``: z-scores. ``rows``: the rows that hold a value (others become 0).
    """
    if transform not in TRANSFORMS:
        raise UrbanReprError(f"transform must be one of {', '.join(TRANSFORMS)}, got {transform!r}")
    values = block.astype(np.float64)
    if transform == "log1p" and counts:
        ref = values if rows is None else values[rows]
        nonneg = (ref >= 0).all(axis=0) if len(ref) else np.zeros(values.shape[1], dtype=bool)
        values[:, nonneg] = np.log1p(np.maximum(values[:, nonneg], 0.0))
    out = _zscore(values, rows)
    if transform == "asinh":
        out = np.arcsinh(out).astype(np.float32)
    return out


def load_fusion_inputs(
    study_area: str | Path,
    resolution: int,
    tables: Mapping[str, str | Path] | Sequence[str | Path],
    area: Area | None = None,
    provenance: Mapping[str, tuple[str, str]] | None = None,
    join: str = DEFAULT_JOIN,
    transform: str = DEFAULT_TRANSFORM,
) -> FusionInputs:
    """Read, validate and align the modality tables of a study area at ``resolution``.

    Args:
        study_area: bundled name or study-area TOML path.
        resolution: H3 resolution of the tables (the finest fusion resolution).
        tables: ``{modality: path}`` (or a list of paths, modality from metadata); the tables found
            in the tracking store come from :func:`urbanrepml.tracking.fusion.store_tables`.
        area: the built :class:`Area` (must contain ``resolution``); built when omitted.
        provenance: ``{modality: (producer run id, source URI)}`` of tables found in the tracking
            store, recorded in ``sources``; tables without an entry use their own metadata.
        join: ``outer`` (every cell of the area; a missing row of a non-zero-fill modality is 0 plus a
            ``has_<modality>`` flag and counts as absent in ``presence``) or ``inner`` (only cells every
            non-zero-fill modality covers).
        transform: ``asinh``, ``log1p`` or ``none`` (see :func:`transform_block`).
    """
    if join not in JOINS:
        raise UrbanReprError(f"join must be one of {', '.join(JOINS)}, got {join!r}")
    if transform not in TRANSFORMS:
        raise UrbanReprError(f"transform must be one of {', '.join(TRANSFORMS)}, got {transform!r}")
    spec = load_study_area(study_area)
    resolution = int(resolution)
    if area is None or resolution not in area.resolutions:
        area = build_area(spec, [resolution])
    if area.name != spec.name:
        raise UrbanReprError(f"area {area.name!r} given for study area {spec.name!r}")
    provenance = dict(provenance or {})
    run_ids = {m: r for m, (r, _) in provenance.items()}
    source_uris = {m: u for m, (_, u) in provenance.items()}
    if tables is None or len(tables) == 0:
        raise UrbanReprError(f"no modality tables given for study area {spec.name!r}; " + entry_points_hint(resolution))

    read = _read_all(tables)
    _check_consistent(read, spec.name, resolution)

    area_cells = area.cells(resolution)
    table_cells: dict[str, np.ndarray] = {}
    for m, t in read.items():
        cells = h3ops.parse_cells(t.frame.index, what=f"{t.path} '{REGION_ID}'")
        outside = h3ops.positions(area_cells, cells) < 0
        if outside.any():
            raise UrbanReprError(
                f"{t.path}: {int(outside.sum())} cell(s) of the {m} table lie outside study area {spec.name!r} "
                f"at resolution {resolution}, e.g. {list(t.frame.index[outside][:3])}"
            )
        table_cells[m] = cells

    modalities = sorted(read)
    inner = [m for m in modalities if m not in ZERO_FILL]
    keep = np.ones(len(area_cells), dtype=bool)
    for m in inner if join == "inner" else []:
        keep &= np.isin(area_cells, table_cells[m])
    if not keep.any():
        sizes = ", ".join(f"{m} ({len(table_cells[m])} cells)" for m in inner)
        raise UrbanReprError(
            f"no cell of study area {spec.name!r} at resolution {resolution} is shared by the modalities {sizes}; "
            "check that the tables cover the same place, or fuse fewer modalities"
        )
    positions = np.flatnonzero(keep).astype(np.int64)
    cells = area_cells[positions]
    region_ids = pd.Index(h3ops.cells_to_str(cells), name=REGION_ID)

    blocks: dict[str, np.ndarray] = {}
    names: list[str] = []
    indicators: list[tuple[str, np.ndarray]] = []
    coverage: dict[str, float] = {}
    present_cols: list[np.ndarray] = []
    for m in modalities:
        t = read[m]
        rows = h3ops.positions(np.sort(table_cells[m]), cells)
        order = np.argsort(table_cells[m], kind="stable")
        values = t.frame.to_numpy(dtype=np.float32)[order]
        present = rows >= 0
        block = np.zeros((len(cells), values.shape[1]), dtype=np.float32)
        block[present] = values[rows[present]]
        zero_fill = m in ZERO_FILL
        blocks[m] = transform_block(block, transform, rows=None if zero_fill else present, counts=zero_fill)
        coverage[m] = float(present.mean())
        present_cols.append(np.ones(len(cells), dtype=bool) if zero_fill else present)
        feat = t.meta.feature_names if len(t.meta.feature_names) == values.shape[1] else list(t.frame.columns)
        names += [f"{m}.{f}" for f in feat]
        if not present.all():
            indicators.append((f"{INDICATOR_PREFIX}{m}", present.astype(np.float32)))

    parts = [blocks[m] for m in modalities] + [col[:, None] for _, col in indicators]
    x = np.ascontiguousarray(np.concatenate(parts, axis=1), dtype=np.float32)
    names += [n for n, _ in indicators]

    sources: dict[str, dict] = {}
    for m in modalities:
        t = read[m]
        run_id = run_ids.get(m) or t.meta.producer_run_id
        sources[m] = {
            "path": str(Path(t.path).resolve()),
            "run_id": run_id,
            "sha256": file_digest(t.path),
            "source_uri": source_uris.get(m),
            "n_cells": int(len(t.frame)),
            "modality": t.meta.modality,
        }
    return FusionInputs(
        study_area=spec.name, resolution=resolution, region_ids=region_ids, blocks=blocks, x=x,
        feature_names=names, sources=sources, cells=cells, area_positions=positions, coverage=coverage,
        present=np.stack(present_cols, axis=1), join=join, transform=transform,
    )


def fused_table(values: np.ndarray, inputs: FusionInputs, run_id: str, extra: dict) -> EmbeddingTable:
    """Fused embeddings (rows aligned with ``inputs.region_ids``) as a contract table, prefix ``fused``."""
    frame, _ = to_embedding_frame(values, inputs.region_ids, FUSED)
    meta = TableMeta(modality=FUSED, resolution=inputs.resolution, study_area=inputs.study_area, prefix=FUSED,
                     producer_run_id=run_id, input_digests=inputs.digests, extra={k: str(v) for k, v in extra.items()})
    return EmbeddingTable(frame, meta)
