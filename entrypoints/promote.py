"""Entry point `promote`: probe versions lacking a probe record, move `champion` only for a measurable gain."""

from urbanrepml.stages.cli import ArgumentParser
from urbanrepml.errors import cli_main


@cli_main
def main(argv=None):
    parser = ArgumentParser(__doc__)
    parser.add_argument("--metric", default="mean_r2", help="probe metric deciding promotion (e.g. mean_r2, r2_log1p_jobs)")
    parser.add_argument("--min_gain", type=float, default=0.0, help="required margin over the champion and both baselines")
    args = parser.parse_args(argv)

    from urbanrepml.stages.promote import run_promote_stage

    run_promote_stage(args.study_area, args.metric, args.min_gain)


if __name__ == "__main__":
    main()
