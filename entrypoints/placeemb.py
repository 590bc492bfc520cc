"""Entry point `placeemb`: place/building embeddings: train with bandit-chosen triplets, evaluate, register."""

from urbanrepml.stages.cli import main_for

main = main_for("placeemb")

if __name__ == "__main__":
    main()
