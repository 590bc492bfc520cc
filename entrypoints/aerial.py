"""Entry point `aerial`: per-cell tiles of an orthophoto (or a tile folder) -> image encoder -> per-cell embedding."""

from urbanrepml.stages.cli import ArgumentParser, integer, optional
from urbanrepml.errors import cli_main
from urbanrepml.modalities.aerial import AerialModality
from urbanrepml.stages.modality import run_modality_stage


@cli_main
def main(argv=None):
    parser = ArgumentParser(__doc__)
    parser.add_argument("--resolution", type=integer, default=9)
    parser.add_argument("--imagery", type=optional, default=None, help="orthophoto GeoTIFF or folder of <region_id>.png tiles")
    parser.add_argument("--weights", type=optional, default=None, help="torch file or Hugging Face folder; empty = built-in random CNN")
    parser.add_argument("--tile_px", type=integer, default=64)
    args = parser.parse_args(argv)
    run_modality_stage(AerialModality(args.imagery, args.weights, args.tile_px), args.study_area, args.resolution)


if __name__ == "__main__":
    main()
