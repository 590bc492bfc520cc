"""Entry point `cluster`: k-means over a k range at the embeddings' resolution and two coarser ones, with maps."""

from urbanrepml.stages.probe import run_cluster_stage
from urbanrepml.stages.cli import ArgumentParser, integer, optional
from urbanrepml.errors import cli_main


@cli_main
def main(argv=None):
    parser = ArgumentParser(__doc__)
    parser.add_argument("--model_uri", type=optional, default=None, help="models:/... (default: the area's @champion, else @candidate)")
    parser.add_argument("--table", type=optional, default=None, help="path of an embedding table instead of a model")
    parser.add_argument("--k_min", type=integer, default=2)
    parser.add_argument("--k_max", type=integer, default=10)
    parser.add_argument("--seed", type=integer, default=0)
    args = parser.parse_args(argv)
    run_cluster_stage(args.study_area, model_uri=args.model_uri, table=args.table, k_min=args.k_min, k_max=args.k_max, seed=args.seed)


if __name__ == "__main__":
    main()
