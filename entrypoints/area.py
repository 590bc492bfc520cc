"""Entry point `area`: boundary -> H3 cells per resolution, parent maps, 1-ring graphs (cached), logged."""

from urbanrepml.stages.cli import main_for

main = main_for("area")

if __name__ == "__main__":
    main()
