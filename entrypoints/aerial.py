"""Entry point `aerial`: per-cell image tiles -> encoder embedding (``aerial_0..``)."""

from urbanrepml.stages.cli import main_for

main = main_for("aerial")

if __name__ == "__main__":
    main()
