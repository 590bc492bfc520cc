"""Entry point `raster`: GeoTIFF/COG rasters of the study area -> per-cell band mean, std and pixel count."""

from urbanrepml.stages.cli import ArgumentParser, integer
from urbanrepml.errors import cli_main
from urbanrepml.modalities.raster import RasterModality
from urbanrepml.stages.modality import run_modality_stage


@cli_main
def main(argv=None):
    parser = ArgumentParser(__doc__)
    parser.add_argument("--resolution", type=integer, default=9)
    parser.add_argument("--rasters", default="all", help="'all' or comma-separated names from [sources.rasters]")
    parser.add_argument("--min_pixels", type=integer, default=1, help="drop cells with fewer valid pixels")
    args = parser.parse_args(argv)
    run_modality_stage(RasterModality(args.rasters, args.min_pixels), args.study_area, args.resolution)


if __name__ == "__main__":
    main()
