"""Entry point `roads`: OSM highways -> per-cell length by class, intersections, dead ends, connectivity (or Highway2Vec)."""

from urbanrepml.stages.cli import ArgumentParser, integer
from urbanrepml.errors import cli_main
from urbanrepml.modalities.roads import EMBEDDERS, RoadsModality
from urbanrepml.stages.modality import run_modality_stage


@cli_main
def main(argv=None):
    parser = ArgumentParser(__doc__)
    parser.add_argument("--resolution", type=integer, default=9)
    parser.add_argument("--embedder", default="stats", choices=EMBEDDERS, help="stats (default) or highway2vec")
    parser.add_argument("--embedding_size", type=integer, default=32, help="highway2vec output dimensions")
    args = parser.parse_args(argv)
    run_modality_stage(RoadsModality(args.embedder, args.embedding_size), args.study_area, args.resolution)


if __name__ == "__main__":
    main()
