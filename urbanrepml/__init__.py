"""UrbanRepML: dense urban embeddings on H3 hexagons by late fusion, tracked in MLflow.

Stages:
    areas       study areas -> H3 cells, parent maps, neighbour graphs (cached)
    modalities  stage 1: source files -> per-modality embedding tables
    fusion      stage 2: baselines and multi-resolution U-Nets -> fused embeddings
    analysis    stage 3: targets, spatial block CV probes, clustering, maps
    tracking    the only package that imports MLflow at module level
"""

__version__ = "0.1.0"
