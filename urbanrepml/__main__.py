"""``python -m urbanrepml <stage> [--parameter value ...]``: run any entry point directly."""

from urbanrepml.stages.cli import main

if __name__ == "__main__":
    main()
