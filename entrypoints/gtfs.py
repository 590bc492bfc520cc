"""Entry point `gtfs`: stops, departures on one service day, and a distance-decayed accessibility potential per cell."""

from urbanrepml.stages.cli import main_for

main = main_for("gtfs")

if __name__ == "__main__":
    main()
