"""Entry point `area`: study area -> H3 cells, parent maps and neighbour graphs, tracked in MLflow."""

from urbanrepml.stages.area import run_area_stage
from urbanrepml.stages.cli import ArgumentParser, integer
from urbanrepml.errors import cli_main


@cli_main
def main(argv=None):
    parser = ArgumentParser(__doc__)
    parser.add_argument("--resolutions", default="7,8,9,10", help="comma-separated H3 resolutions")
    parser.add_argument("--max_cells", type=integer, default=None, help="refuse areas estimated above this many cells")
    args = parser.parse_args(argv)
    run_area_stage(args.study_area, args.resolutions, args.max_cells)


if __name__ == "__main__":
    main()
