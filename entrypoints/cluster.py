"""Entry point `cluster`: k-means of embeddings over several k and resolutions, with scores and maps."""

from urbanrepml.stages.cli import main_for

main = main_for("cluster")

if __name__ == "__main__":
    main()
