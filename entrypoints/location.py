"""Entry point `location`: location modality: a trained location encoder (or GeoCLIP) at the cell centres -> per-cell table."""

from urbanrepml.stages.cli import main_for

main = main_for("location")

if __name__ == "__main__":
    main()
