"""Entry point `tune`: an Optuna study over fusion hyperparameters, scored by the spatial-CV probe, tracked in MLflow."""

from urbanrepml.stages.cli import ArgumentParser, integer, optional
from urbanrepml.errors import cli_main
from tuning.space import DEFAULT_MAX_EPOCHS


@cli_main
def main(argv=None):
    parser = ArgumentParser(__doc__)
    parser.add_argument("--n_trials", type=integer, default=10, help="trials to add to the study in this run")
    parser.add_argument("--timeout", type=float, default=0, help="seconds after which no new trial starts (0: none)")
    parser.add_argument("--study_name", type=optional, default=None, help="default tune-<study_area>; the same name continues")
    parser.add_argument("--storage", type=optional, default=None, help="sqlite:///..., postgresql://..., journal:<file>; default optuna.db beside the tracking store")
    parser.add_argument("--pruner", default="median", help="median | hyperband | none")
    parser.add_argument("--sampler", default="tpe", help="tpe | random")
    parser.add_argument("--seed", type=integer, default=0)
    parser.add_argument("--n_workers", type=integer, default=1, help="worker processes sharing the study")
    parser.add_argument("--max_epochs", type=integer, default=DEFAULT_MAX_EPOCHS, help="largest epoch budget a trial may draw")
    parser.add_argument("--models", default="full_unet,cone_unet,ring", help="fusion models to search over")
    parser.add_argument("--heartbeat_interval", type=integer, default=10, help="seconds between trial heartbeats (RDB storages)")
    args = parser.parse_args(argv)

    from tuning.objective import FusionObjective
    from tuning.study import run_tuning

    objective = FusionObjective(args.study_area, models=args.models, max_epochs=args.max_epochs, seed=args.seed)
    run_tuning(args.study_area, objective, n_trials=args.n_trials, timeout=args.timeout, study_name=args.study_name,
               storage=args.storage, pruner=args.pruner, sampler=args.sampler, seed=args.seed, n_workers=args.n_workers,
               heartbeat_interval=args.heartbeat_interval, max_resource=args.max_epochs)


if __name__ == "__main__":
    main()
