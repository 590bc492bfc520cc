"""Entry point `roads`: oSM highway network -> per-cell class lengths, intersections, dead ends, connectivity (or Highway2Vec)."""

from urbanrepml.stages.cli import main_for

main = main_for("roads")

if __name__ == "__main__":
    main()
