"""Entry point `gtfs`: GTFS feeds -> stops, departures on a service day and accessibility potential per H3 cell."""

from urbanrepml.stages.cli import ArgumentParser, integer
from urbanrepml.errors import cli_main
from urbanrepml.modalities.gtfs import GTFSModality
from urbanrepml.stages.modality import run_modality_stage


@cli_main
def main(argv=None):
    parser = ArgumentParser(__doc__)
    parser.add_argument("--resolution", type=integer, default=9)
    parser.add_argument("--service_date", default="auto", help="YYYY-MM-DD, or auto = the weekday with most departures")
    parser.add_argument("--decay_km", type=float, default=1.0, help="distance decay of the accessibility potential")
    parser.add_argument("--max_km", type=float, default=3.0, help="stops farther than this from a cell do not count")
    args = parser.parse_args(argv)
    run_modality_stage(GTFSModality(args.service_date, args.decay_km, args.max_km), args.study_area, args.resolution)


if __name__ == "__main__":
    main()
