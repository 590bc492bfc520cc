"""Entry point `difficulty`: fingerprints, near-duplicates and difficulty bands of an image index."""

from urbanrepml.stages.cli import main_for

main = main_for("difficulty")

if __name__ == "__main__":
    main()
