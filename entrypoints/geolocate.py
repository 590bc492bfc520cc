"""Entry point `geolocate`: image geolocation over H3 cells: train, evaluate against baselines, register."""

from urbanrepml.stages.cli import main_for

main = main_for("geolocate")

if __name__ == "__main__":
    main()
