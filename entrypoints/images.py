"""Entry point `images`: build an image index (chips, photos, metadata) with splits that keep groups whole, logged."""

from urbanrepml.stages.cli import main_for

main = main_for("images")

if __name__ == "__main__":
    main()
