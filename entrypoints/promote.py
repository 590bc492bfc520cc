"""Entry point `promote`: move the champion alias to the version with the best probe evidence."""

from urbanrepml.stages.cli import main_for

main = main_for("promote")

if __name__ == "__main__":
    main()
