"""Entry point `concepts`: concept-aware geolocation (docs/concept-geolocation.md)."""

from urbanrepml.stages.cli import main_for

main = main_for("concepts")

if __name__ == "__main__":
    main()
