"""Entry point `probe`: out-of-fold scores of embeddings (model or table) against the study area's targets, with baselines."""

from urbanrepml.stages.probe import run_probe_stage
from urbanrepml.stages.cli import ArgumentParser, integer, optional
from urbanrepml.errors import cli_main


@cli_main
def main(argv=None):
    parser = ArgumentParser(__doc__)
    parser.add_argument("--model_uri", type=optional, default=None, help="models:/... (default: the area's @champion, else @candidate)")
    parser.add_argument("--table", type=optional, default=None, help="path of an embedding table to probe instead of a model")
    parser.add_argument("--probe", default="ridge", choices=["ridge", "ols", "mlp"])
    parser.add_argument("--block_resolution", type=integer, default=7, help="H3 resolution of the spatial blocks")
    parser.add_argument("--folds", type=integer, default=5)
    parser.add_argument("--cv", default="spatial", choices=["spatial", "random"], help="random only for comparison")
    parser.add_argument("--seed", type=integer, default=0)
    args = parser.parse_args(argv)
    run_probe_stage(args.study_area, model_uri=args.model_uri, table=args.table, probe=args.probe,
                    block_resolution=args.block_resolution, folds=args.folds, cv=args.cv, seed=args.seed)


if __name__ == "__main__":
    main()
