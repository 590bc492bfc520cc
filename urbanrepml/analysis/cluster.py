"""k-means of embeddings over a k range at the table's resolution and coarser ones (no MLflow here).

Coarser resolutions: each parent cell's embedding is the mean of its children's
embeddings (children present in the table). Features are z-scored per column
at each resolution before k-means. Scores: silhouette (on at most
:data:`SILHOUETTE_SAMPLE` cells, seeded) and Calinski-Harabasz; the best k per
resolution is the one with the highest silhouette.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from urbanrepml.areas import h3ops
from urbanrepml.constants import REGION_ID
from urbanrepml.errors import UrbanReprError

SILHOUETTE_SAMPLE = 5000


@dataclass
class ClusterResult:
    """``scores``: rows (resolution, k, silhouette, calinski_harabasz, inertia); ``labels``: res -> best-k labels by region_id."""

    scores: pd.DataFrame
    labels: dict[int, pd.Series]
    best_k: dict[int, int]


def aggregate_to_parent(frame: pd.DataFrame, parent_res: int) -> pd.DataFrame:
    """Mean of the children's rows per parent cell at ``parent_res`` (index ``region_id``, sorted)."""
    parents = h3ops.parent_cells(h3ops.parse_cells(frame.index), parent_res)
    out = frame.groupby(parents).mean()
    out.index = pd.Index(h3ops.cells_to_str(out.index.to_numpy(np.uint64)), name=REGION_ID)
    return out.sort_index()


def cluster_embeddings(frame: pd.DataFrame, resolutions: list[int], k_min: int = 2, k_max: int = 10, seed: int = 0) -> ClusterResult:
    """k-means for k in ``k_min..k_max`` at each resolution in ``resolutions`` (the finest is the table's own)."""
    from sklearn.cluster import KMeans
    from sklearn.metrics import calinski_harabasz_score, silhouette_score

    if k_min < 2 or k_max < k_min:
        raise UrbanReprError(f"need 2 <= k_min <= k_max, got k_min={k_min}, k_max={k_max}")
    own = int(h3ops.cell_resolution(h3ops.parse_cells(frame.index[:1]))[0])
    rows, labels, best = [], {}, {}
    for res in sorted(resolutions, reverse=True):
        data = frame if res == own else aggregate_to_parent(frame, res)
        n = len(data)
        ks = [k for k in range(k_min, k_max + 1) if k < n]
        if not ks:
            if res == own:
                raise UrbanReprError(f"only {n} cell(s) at resolution {res}: too few for k-means with k >= {k_min}")
            continue
        x = data.to_numpy(np.float64)
        std = x.std(axis=0)
        x = (x - x.mean(axis=0)) / np.where(std > 0, std, 1.0)
        best_score, best_labels = -np.inf, None
        for k in ks:
            km = KMeans(n_clusters=k, n_init=4, random_state=seed).fit(x)
            lab = km.labels_
            if len(np.unique(lab)) < 2:
                continue
            sil = float(silhouette_score(x, lab, sample_size=min(SILHOUETTE_SAMPLE, n), random_state=seed))
            ch = float(calinski_harabasz_score(x, lab))
            rows.append({"resolution": res, "k": k, "silhouette": sil, "calinski_harabasz": ch, "inertia": float(km.inertia_)})
            if sil > best_score:
                best_score, best_labels, best[res] = sil, lab, k
        if best_labels is not None:
            labels[res] = pd.Series(best_labels, index=data.index, name="cluster")
    return ClusterResult(pd.DataFrame(rows), labels, best)
