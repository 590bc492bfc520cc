"""Entry point `datasets`: list the registered datasets, or fetch one by name and checksum."""

from urbanrepml.stages.cli import main_for

main = main_for("datasets")

if __name__ == "__main__":
    main()
