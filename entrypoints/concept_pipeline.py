"""Entry point `concept_pipeline`: concept-aware geolocation (docs/concept-geolocation.md)."""

from urbanrepml.stages.cli import main_for

main = main_for("concept_pipeline")

if __name__ == "__main__":
    main()
