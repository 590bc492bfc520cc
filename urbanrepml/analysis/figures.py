"""Plotly figures of stage 3 (no MLflow here; the stage logs them with ``tracking.log_figure``).

Maps use :func:`urbanrepml.analysis.maps.cells_map` (plain lon/lat axes: no base map to fetch).
"""

from __future__ import annotations

import pandas as pd

from urbanrepml.analysis.maps import cells_map


def target_maps(regions_gdf, y: pd.Series, pred: pd.Series, target: str, label: str) -> dict[str, object]:
    """Three maps of one target on the probed cells: values, out-of-fold predictions, residuals (y − prediction)."""
    cells = y.dropna().index
    gdf = regions_gdf.loc[cells]
    resid = (y - pred).loc[cells]
    return {
        f"target_{target}": cells_map(gdf, y.loc[cells], title=f"{target}: target ({len(cells)} cells)", color_name=target),
        f"oof_prediction_{target}": cells_map(gdf, pred.loc[cells], title=f"{target}: out-of-fold prediction ({label})",
                                              color_name="prediction"),
        f"residual_{target}": cells_map(gdf, resid, title=f"{target}: residual y − prediction ({label})", color_name="residual",
                                        colorscale="RdBu_r", zmid=0.0),
    }


def fold_map(regions_gdf, fold: pd.Series, title: str):
    """Map of the fold of every probed cell (discrete colours)."""
    k = int(fold.max()) + 1 if len(fold) else 1
    palette = ["#1b9e77", "#d95f02", "#7570b3", "#e7298a", "#66a61e", "#e6ab02", "#a6761d", "#666666", "#1f78b4", "#b2df8a"]
    scale = []
    for i in range(k):
        c = palette[i % len(palette)]
        scale += [(i / k, c), ((i + 1) / k, c)]
    return cells_map(regions_gdf.loc[fold.index], fold.astype(float), title=title, color_name="fold", colorscale=scale,
                     zmin=-0.5, zmax=k - 0.5, colorbar={"tickvals": list(range(k))})


def r2_bars(scores: dict[str, dict[str, float]], title: str):
    """Grouped bars: out-of-fold R² per target (x) for each feature set (colour), e.g. model vs baselines."""
    import plotly.graph_objects as go

    fig = go.Figure()
    for name, per_target in scores.items():
        targets = list(per_target)
        fig.add_trace(go.Bar(name=name, x=targets, y=[per_target[t] for t in targets],
                             text=[f"{per_target[t]:.3f}" for t in targets], textposition="outside"))
    fig.update_layout(barmode="group", title=title, yaxis_title="out-of-fold R²", xaxis_title="target",
                      margin={"l": 60, "r": 20, "t": 50, "b": 60})
    return fig


def cluster_scores(scores: pd.DataFrame, title: str):
    """Silhouette and Calinski-Harabasz against k, one line per resolution (``scores``: resolution, k, silhouette, calinski_harabasz)."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    fig = make_subplots(rows=1, cols=2, subplot_titles=("silhouette", "Calinski-Harabasz"))
    for res, part in scores.groupby("resolution"):
        fig.add_trace(go.Scatter(x=part["k"], y=part["silhouette"], mode="lines+markers", name=f"res {res}", legendgroup=str(res)),
                      row=1, col=1)
        fig.add_trace(go.Scatter(x=part["k"], y=part["calinski_harabasz"], mode="lines+markers", name=f"res {res}",
                                 legendgroup=str(res), showlegend=False), row=1, col=2)
    fig.update_xaxes(title_text="k")
    fig.update_layout(title=title)
    return fig
