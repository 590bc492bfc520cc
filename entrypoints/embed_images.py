"""Entry point `embed_images`: an image index + a frozen encoder -> an image embedding table.

The table is written as parquet and as a dim_*/geometry CSV, cached and logged.
"""

from urbanrepml.stages.cli import main_for

main = main_for("embed_images")

if __name__ == "__main__":
    main()
