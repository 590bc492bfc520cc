"""Entry point `tune`: an Optuna study over fusion hyperparameters, scored by the spatial-CV probe, tracked in MLflow."""

from urbanrepml.stages.cli import main_for

main = main_for("tune")

if __name__ == "__main__":
    main()
