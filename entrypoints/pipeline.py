"""Entry point `pipeline`: modalities -> fuse -> probe -> promote for one study area, as nested runs, with a summary."""

from urbanrepml.stages.cli import ArgumentParser, integer
from urbanrepml.errors import cli_main


@cli_main
def main(argv=None):
    parser = ArgumentParser(__doc__)
    parser.add_argument("--model", default="full_unet", help="fusion model: concat, ring, full_unet, cone_unet")
    parser.add_argument("--epochs", type=integer, default=60)
    parser.add_argument("--seed", type=integer, default=0)
    args = parser.parse_args(argv)

    from urbanrepml.stages.pipeline import run_pipeline

    run_pipeline(args.study_area, model=args.model, epochs=args.epochs, seed=args.seed)


if __name__ == "__main__":
    main()
