"""Stage 2: fusion of modality embeddings (inputs alignment, baselines, U-Nets, training loop)."""
