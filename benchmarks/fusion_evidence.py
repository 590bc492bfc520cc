"""Evidence for the fusion defaults: candidates x training seeds x fold seeds, probed like the ``probe`` stage.

For each candidate (a set of ``fuse`` parameters that differ from the defaults) and each training seed, a
network is trained on the study area's modality tables (the newest in the tracking store, as ``fuse`` reads
them) and its embeddings are scored with the ridge probe on spatial folds of res-7 blocks for each fold seed,
beside the free baselines (concat, ring, ringconcat) of the same transformed inputs, on the same cells and
folds. Targets meet embeddings only in the probe folds. Prints a markdown table: mean ± standard deviation over
all (training seed, fold seed) pairs, per headline target and for the headline mean.

    python benchmarks/fusion_evidence.py                                  # the default candidates
    python benchmarks/fusion_evidence.py --candidates default,log1p,none --train_seeds 0,1,2 --fold_seeds 0,1,2

Candidates are named in ``CANDIDATES``; ``default`` is ``fuse``'s defaults. Needs the area's modality tables
in the tracking store (``python -m urbanrepml fuse`` builds them on first use).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

CANDIDATES: dict[str, dict] = {
    "default": {},
    "log1p": {"transform": "log1p"},
    "none": {"transform": "none"},
    "inner": {"join": "inner"},
    "members1": {"members": 1},
    "unet3": {"resolutions": "7,8,9", "hidden_dims": "64,128,256", "members": 1},
    "visible": {"visible_weight": 0.1},
    "lr003": {"lr": 0.003},
    "lr005": {"lr": 0.005},
    "epochs300": {"epochs": 300},
    "members8": {"members": 8},
    "patience40": {"patience": 40},
    "code_ringconcat": {"embedding": "code_ringconcat"},
    "maskcell03": {"mask_cell": 0.3},
    "dropout0": {"dropout": 0.0},
}


def _score(values, index, cells, y, fold, counts, seed):
    from urbanrepml.analysis.probes import cross_validate

    frame = pd.DataFrame(values, index=index)
    return cross_validate(frame.loc[cells], y, fold, "ridge", counts=counts, seed=seed)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--study_area", default="porto_alegre")
    ap.add_argument("--candidates", default="default,log1p,none")
    ap.add_argument("--train_seeds", default="0,1,2")
    ap.add_argument("--fold_seeds", default="0,1,2")
    ap.add_argument("--out", default="", help="also write the raw scores as JSON here")
    args = ap.parse_args(argv)

    from urbanrepml.analysis.folds import make_folds
    from urbanrepml.analysis.targets import load_targets
    from urbanrepml.areas import build_area
    from urbanrepml.config import load_study_area
    from urbanrepml.modalities import current_sources_digests
    from urbanrepml.stages.fuse import Params
    from urbanrepml.tasks.fusion.baselines import baseline_tables
    from urbanrepml.tasks.fusion.inputs import load_fusion_inputs
    from urbanrepml.tasks.fusion.train import train
    from urbanrepml.tracking import configure_tracking
    from urbanrepml.tracking.fusion import store_tables

    configure_tracking()
    spec = load_study_area(args.study_area)
    train_seeds = [int(s) for s in args.train_seeds.split(",")]
    fold_seeds = [int(s) for s in args.fold_seeds.split(",")]
    tables, provenance = store_tables(spec.name, 9, sources=current_sources_digests(spec))
    rows: list[dict] = []
    inputs_cache: dict = {}
    for name in args.candidates.split(","):
        params = Params(study_area=args.study_area, **CANDIDATES[name])
        cfg = params.train_config()
        area = build_area(spec, sorted(set(cfg.resolutions) | {params.resolution}))
        key = (params.join, params.transform)
        if key not in inputs_cache:
            inputs = load_fusion_inputs(spec, params.resolution, tables, area=area, provenance=provenance, join=params.join,
                                        transform=params.transform)
            targets = load_targets(spec, params.resolution, area=area)
            cells = targets.frame.index.intersection(inputs.region_ids).sort_values()
            y = targets.frame.loc[cells]
            folds = {s: make_folds(cells, "spatial", 7, 5, s) for s in fold_seeds}
            base = baseline_tables(inputs, area, params.ring_k, params.ring_weighting)
            for b, table in base.items():
                for fs in fold_seeds:
                    cv = _score(table.frame.to_numpy(), inputs.region_ids, cells, y, folds[fs], targets.counts, fs)
                    rows.append({"candidate": f"baseline {b} ({params.transform}, {params.join})", "train_seed": -1,
                                 "fold_seed": fs, "mean_r2": cv.mean_r2, "mean_r2_all": cv.mean_r2_all,
                                 **{t: m["r2"] for t, m in cv.metrics.items()}})
            inputs_cache[key] = (inputs, targets, cells, y, folds, base)
        inputs, targets, cells, y, folds, base = inputs_cache[key]
        for ts in train_seeds:
            cfg.seed = ts
            start = time.perf_counter()
            result = train(inputs.x, inputs.cells, cfg, progress=False, groups=inputs.column_groups, present=inputs.presence)
            seconds = time.perf_counter() - start
            values = result.embedding
            if params.embedding == "code_ringconcat":  # as fuse registers it: [code | ringconcat features]
                values = np.concatenate([values, base["ringconcat"].frame.to_numpy()], axis=1)
            for fs in fold_seeds:
                cv = _score(values, inputs.region_ids, cells, y, folds[fs], targets.counts, fs)
                rows.append({"candidate": name, "train_seed": ts, "fold_seed": fs, "mean_r2": cv.mean_r2,
                             "mean_r2_all": cv.mean_r2_all, "seconds": seconds, "best_epoch": result.best_epoch,
                             **{t: m["r2"] for t, m in cv.metrics.items()}})
                print(json.dumps(rows[-1]), flush=True)
            if args.out:
                Path(args.out).write_text(json.dumps(rows, indent=1))
    frame = pd.DataFrame(rows)
    if args.out:
        Path(args.out).write_text(json.dumps(rows, indent=1))
    headline = [c for c in ("log1p_population", "log1p_jobs") if c in frame.columns] or \
        [c for c in frame.columns if c not in ("candidate", "train_seed", "fold_seed", "mean_r2", "mean_r2_all",
                                                 "seconds", "best_epoch")]
    cols = [*headline, "mean_r2", "mean_r2_all"]
    print(f"\n| candidate | runs | {' | '.join(cols)} | s/fuse |")
    print("|---" * (len(cols) + 3) + "|")
    for cand, g in frame.groupby("candidate", sort=False):
        cells_txt = " | ".join(f"{g[c].mean():.3f} ± {g[c].std(ddof=0):.3f}" for c in cols)
        secs = f"{g['seconds'].mean():.0f}" if "seconds" in g and g["seconds"].notna().any() else "-"
        print(f"| {cand} | {len(g)} | {cells_txt} | {secs} |")


if __name__ == "__main__":
    main()
