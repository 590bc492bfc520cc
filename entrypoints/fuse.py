"""Entry point `fuse`: modality tables -> fused embeddings (concat, ring, full_unet, cone_unet), tracked and registered."""

from urbanrepml.stages.cli import ArgumentParser, boolean, integer, optional
from urbanrepml.errors import cli_main
from urbanrepml.stages.fuse import FuseParams, run_fuse_stage

TYPES = {int: integer, float: float, bool: boolean, str: str}


@cli_main
def main(argv=None):
    parser = ArgumentParser(__doc__)
    for name, field in FuseParams.__dataclass_fields__.items():
        if name != "study_area":
            kind = TYPES.get(type(field.default), optional)
            parser.add_argument(f"--{name}", type=kind, default=field.default)
    run_fuse_stage(FuseParams(**vars(parser.parse_args(argv))))


if __name__ == "__main__":
    main()
