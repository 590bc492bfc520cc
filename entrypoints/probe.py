"""Entry point `probe`: spatial block cross-validated probes of embeddings against targets, beside the baselines."""

from urbanrepml.stages.cli import main_for

main = main_for("probe")

if __name__ == "__main__":
    main()
