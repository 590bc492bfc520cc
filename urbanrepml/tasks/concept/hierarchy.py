"""The two-level concept hierarchy: every fine "meta" concept under exactly one coarse "parent".

:func:`extract_hierarchy` reads it from the ``meta_concept`` / ``parent_concept`` columns of an image index
and refuses a meta concept found under two parents (one line naming both), and images without concepts.
Index maps are alphabetical: ``metas[i]`` is meta ``i``, ``parents[j]`` parent ``j``, and
``meta_to_parent[i]`` is the parent index of meta ``i``.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

import numpy as np
import pandas as pd

from urbanrepml.errors import UrbanReprError


@dataclass(frozen=True)
class ConceptHierarchy:
    """Alphabetical metas and parents and the parent of each meta (see the module docstring)."""

    metas: tuple[str, ...]
    parents: tuple[str, ...]
    meta_to_parent: tuple[int, ...]

    @property
    def n_meta(self) -> int:
        return len(self.metas)

    @property
    def n_parent(self) -> int:
        return len(self.parents)

    def meta_index(self, names) -> np.ndarray:
        lookup = {m: i for i, m in enumerate(self.metas)}
        unknown = sorted({str(n) for n in names if str(n) not in lookup})
        if unknown:
            raise UrbanReprError(f"meta concept(s) {unknown[:3]} are not in the hierarchy ({', '.join(self.metas)})")
        return np.array([lookup[str(n)] for n in names], dtype=np.int64)

    def parent_of(self, meta_idx: np.ndarray) -> np.ndarray:
        return np.asarray(self.meta_to_parent, dtype=np.int64)[np.asarray(meta_idx, dtype=np.int64)]

    def to_dict(self) -> dict:
        return {"metas": list(self.metas), "parents": list(self.parents), "meta_to_parent": list(self.meta_to_parent)}

    @classmethod
    def from_dict(cls, d: dict) -> ConceptHierarchy:
        return cls(tuple(d["metas"]), tuple(d["parents"]), tuple(int(i) for i in d["meta_to_parent"]))

    @property
    def digest(self) -> str:
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()

    def table(self) -> pd.DataFrame:
        """One row per meta: index, name, parent index, parent name."""
        return pd.DataFrame({"meta_index": range(self.n_meta), "meta_concept": self.metas,
                             "parent_index": self.meta_to_parent,
                             "parent_concept": [self.parents[j] for j in self.meta_to_parent]})


def extract_hierarchy(frame: pd.DataFrame, *, where: str = "concept dataset") -> ConceptHierarchy:
    """The hierarchy of an index's ``meta_concept`` / ``parent_concept`` columns (validated)."""
    for col in ("meta_concept", "parent_concept"):
        if col not in frame.columns:
            raise UrbanReprError(f"{where}: no {col!r} column; build the dataset with concepts (the concepts stage, "
                                 "or images --kind concepts)")
        missing = frame[col].isna() | (frame[col].astype(str).str.strip() == "")
        if missing.any():
            raise UrbanReprError(f"{where}: {int(missing.sum())} image(s) have no {col}, e.g. {list(frame.index[missing][:3])}")
    pairs = frame[["meta_concept", "parent_concept"]].astype(str).drop_duplicates()
    count = pairs.groupby("meta_concept")["parent_concept"].nunique()
    bad = count[count > 1]
    if len(bad):
        meta = bad.index[0]
        under = sorted(pairs.loc[pairs["meta_concept"] == meta, "parent_concept"])
        raise UrbanReprError(f"{where}: meta concept {meta!r} is under {len(under)} parents ({', '.join(under)}); "
                             "each meta concept needs exactly one parent_concept - fix the labels")
    clash = set(pairs["meta_concept"]) & set(pairs["parent_concept"]) - set(
        pairs.loc[pairs["meta_concept"] == pairs["parent_concept"], "meta_concept"])
    if clash:
        raise UrbanReprError(f"{where}: {sorted(clash)[0]!r} is both a meta concept and the parent of other metas; "
                             "rename one level")
    metas = tuple(sorted(pairs["meta_concept"].unique()))
    parents = tuple(sorted(pairs["parent_concept"].unique()))
    parent_of = dict(zip(pairs["meta_concept"], pairs["parent_concept"], strict=True))
    return ConceptHierarchy(metas, parents, tuple(parents.index(parent_of[m]) for m in metas))
