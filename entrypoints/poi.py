"""Entry point `poi`: OSM points and polygons -> per-cell counts of Hex2Vec-filter sub-categories (or Hex2Vec)."""

from urbanrepml.stages.cli import ArgumentParser, integer
from urbanrepml.errors import cli_main
from urbanrepml.modalities.poi import EMBEDDERS, PoiModality
from urbanrepml.stages.modality import run_modality_stage


@cli_main
def main(argv=None):
    parser = ArgumentParser(__doc__)
    parser.add_argument("--resolution", type=integer, default=9)
    parser.add_argument("--embedder", default="counts", choices=EMBEDDERS, help="counts (default) or hex2vec")
    parser.add_argument("--embedding_size", type=integer, default=32, help="hex2vec output dimensions")
    args = parser.parse_args(argv)
    run_modality_stage(PoiModality(args.embedder, args.embedding_size), args.study_area, args.resolution)


if __name__ == "__main__":
    main()
