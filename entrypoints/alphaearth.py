"""Entry point `alphaearth`: mean dequantised AlphaEarth embedding (A00..A63) per cell."""

from urbanrepml.stages.cli import main_for

main = main_for("alphaearth")

if __name__ == "__main__":
    main()
