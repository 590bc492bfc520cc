"""Entry point `locenc_embed`: a registered location encoder -> per-cell table of the area, or embeddings of given points."""

from urbanrepml.stages.cli import main_for

main = main_for("locenc_embed")

if __name__ == "__main__":
    main()
