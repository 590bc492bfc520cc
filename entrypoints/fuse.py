"""Entry point `fuse`: modality tables -> fused embeddings (concat, ring, full_unet, cone_unet), tracked and registered."""

from urbanrepml.stages.cli import main_for

main = main_for("fuse")

if __name__ == "__main__":
    main()
