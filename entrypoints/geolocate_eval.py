"""Entry point `geolocate_eval`: score a registered image geolocator on a dataset."""

from urbanrepml.stages.cli import main_for

main = main_for("geolocate_eval")

if __name__ == "__main__":
    main()
