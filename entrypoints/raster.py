"""Entry point `raster`: per-cell mean, std and pixel count of every band of the chosen rasters."""

from urbanrepml.stages.cli import main_for

main = main_for("raster")

if __name__ == "__main__":
    main()
