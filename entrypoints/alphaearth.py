"""Entry point `alphaearth`: AlphaEarth 64-d satellite embeddings (local GeoTIFF/COG or Earth Engine) -> per-cell mean."""

from urbanrepml.stages.cli import ArgumentParser, integer, optional
from urbanrepml.errors import cli_main
from urbanrepml.modalities.alphaearth import AlphaEarthModality
from urbanrepml.stages.modality import run_modality_stage


@cli_main
def main(argv=None):
    parser = ArgumentParser(__doc__)
    parser.add_argument("--resolution", type=integer, default=9)
    parser.add_argument("--year", type=integer, default=2024)
    parser.add_argument("--source", default="local", choices=["local", "ee"])
    parser.add_argument("--path", type=optional, default=None, help="GeoTIFF/COG file or folder of tiles (source=local)")
    args = parser.parse_args(argv)
    run_modality_stage(AlphaEarthModality(args.year, args.source, args.path), args.study_area, args.resolution)


if __name__ == "__main__":
    main()
