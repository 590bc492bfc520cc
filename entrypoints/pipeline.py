"""Entry point `pipeline`: modalities -> fuse -> probe -> promote, as nested runs of one parent."""

from urbanrepml.stages.cli import main_for

main = main_for("pipeline")

if __name__ == "__main__":
    main()
