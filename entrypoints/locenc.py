"""Entry point `locenc`: regional location encoder: train, evaluate (held-out retrieval, probes, RAG), map, register."""

from urbanrepml.stages.cli import main_for

main = main_for("locenc")

if __name__ == "__main__":
    main()
