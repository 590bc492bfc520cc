"""Entry point `poi`: oSM POIs (points + polygons matching the Hex2Vec tag filter) -> per-cell sub-category counts or Hex2Vec."""

from urbanrepml.stages.cli import main_for

main = main_for("poi")

if __name__ == "__main__":
    main()
