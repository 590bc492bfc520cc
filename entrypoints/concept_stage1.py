"""Entry point `concept_stage1`: concept-aware geolocation (docs/concept-geolocation.md)."""

from urbanrepml.stages.cli import main_for

main = main_for("concept_stage1")

if __name__ == "__main__":
    main()
