"""Training a learned fusion model: :class:`TrainConfig` and :func:`train` (no file or MLflow code).

The fusion task (:class:`~urbanrepml.tasks.fusion.task.FusionTask`) runs on the
generic loop (:mod:`urbanrepml.training`), which brings seeding, AdamW with
warm-up and cosine decay, gradient clipping, early stopping on the validation
loss, checkpoints and resume (bit-identical on CPU), DDP under ``torchrun``
(``cone_unet`` only), a progress bar and the hooks tracking listens on
(:class:`~urbanrepml.training.hooks.TrainHooks`).

``model`` names the batching, not a different network: ``full_unet`` trains
:class:`~urbanrepml.models.unet.FullAreaUNet` on the whole area at once,
``cone_unet`` the same network on batches of cones.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from urbanrepml.errors import UrbanReprError
from urbanrepml.models.registry import list_models, model_spec  # noqa: E402 - after the registering imports
from urbanrepml.tasks.fusion.split import spatial_split
from urbanrepml.tasks.fusion.task import FusionTask
from urbanrepml.training import Hooks, LoopConfig, Trainer, TrainHooks

# Fusion models with a network to train (the others are closed-form baselines).
LEARNED_MODELS = tuple(m for m in list_models("fusion") if model_spec(m).build is not None)

__all__ = ["FUSE_DEFAULTS", "LEARNED_MODELS", "TrainConfig", "TrainHooks", "TrainResult", "fusion_train_config", "spatial_split", "train"]


@dataclass
class TrainConfig:
    """Settings of a learned fusion model (see docs/fusion.md for the defaults' reasoning).

    ``model`` picks the batching (``full_unet`` or ``cone_unet``); ``resolutions``
    and ``hidden_dims`` are given finest first (any order for ``resolutions``; one
    width serves every level);
    ``patience`` 0 never stops early; ``warmup_epochs`` ``None`` is 10% of
    ``epochs`` (at least 1); ``val_block_resolution`` ``None`` is the coarsest
    resolution, at most 7; ``device`` ``None`` is CUDA when present. ``mask_modality``,
    ``mask_cell``, ``visible_weight``: the masked-prediction objective; ``members``:
    independently seeded networks whose codes are concatenated. The loop's share of the
    settings is :meth:`loop_config`.
    """

    model: str = "full_unet"
    resolutions: tuple[int, ...] = (9,)
    hidden_dims: tuple[int, ...] = (128,)
    convs_per_level: int = 2
    dropout: float = 0.1
    embedding_dim: int | None = None
    lr: float = 1e-2
    weight_decay: float = 0.01
    epochs: int = 200
    warmup_epochs: int | None = None
    consistency_weight: float = 0.5
    grad_clip: float = 1.0
    patience: int = 0
    val_fraction: float = 0.1
    val_block_resolution: int | None = None
    checkpoint_every: int = 10
    seed: int = 0
    cone_root_resolution: int = 6
    cone_k: int = 1
    cone_batch: int = 8
    mask_modality: float = 0.3
    mask_cell: float = 0.5
    visible_weight: float = 0.0
    members: int = 1
    device: str | None = None

    def __post_init__(self):
        self.resolutions = tuple(sorted({int(r) for r in self.resolutions}, reverse=True))
        self.hidden_dims = tuple(int(d) for d in self.hidden_dims)
        if len(self.hidden_dims) == 1 and len(self.resolutions) > 1:
            self.hidden_dims = self.hidden_dims * len(self.resolutions)
        if self.model not in LEARNED_MODELS:
            raise UrbanReprError(f"model must be one of {LEARNED_MODELS} for training, got {self.model!r}")
        if len(self.hidden_dims) != len(self.resolutions):
            raise UrbanReprError(
                f"hidden_dims has {len(self.hidden_dims)} widths but resolutions has {len(self.resolutions)} levels "
                f"({list(self.resolutions)}); give one width per resolution, finest first"
            )
        if min(self.hidden_dims) < 1 or self.convs_per_level < 0 or self.epochs < 1:
            raise UrbanReprError("hidden_dims must be positive, convs_per_level >= 0 and epochs >= 1")
        if not 0 <= self.dropout < 1:
            raise UrbanReprError(f"dropout must be in [0, 1), got {self.dropout}")
        if not 0 <= self.val_fraction < 1:
            raise UrbanReprError(f"val_fraction must be in [0, 1), got {self.val_fraction}")
        for name in ("mask_modality", "mask_cell"):
            if not 0 <= getattr(self, name) < 1:
                raise UrbanReprError(f"{name} must be in [0, 1), got {getattr(self, name)}")
        if self.mask_modality == 0 and self.mask_cell == 0:
            raise UrbanReprError("mask_modality and mask_cell are both 0: nothing is hidden, so there is nothing to predict")
        if self.visible_weight < 0:
            raise UrbanReprError(f"visible_weight must be >= 0, got {self.visible_weight}")
        if self.members < 1:
            raise UrbanReprError(f"members must be >= 1, got {self.members}")
        if self.cone_batch < 1:
            raise UrbanReprError(f"cone_batch must be >= 1, got {self.cone_batch}")
        self.loop_config()  # the loop's settings fail here, not at the first epoch

    def loop_config(self) -> LoopConfig:
        """The generic loop's settings (epochs, optimiser, clipping, early stopping, checkpoints, seed, device)."""
        return LoopConfig(epochs=self.epochs, lr=self.lr, weight_decay=self.weight_decay, warmup_epochs=self.warmup_epochs,
                          grad_clip=self.grad_clip, patience=self.patience, checkpoint_every=self.checkpoint_every,
                          seed=self.seed, device=self.device)

    @property
    def warmup(self) -> int:
        """Warm-up epochs in effect."""
        return self.loop_config().warmup

    @property
    def block_resolution(self) -> int:
        """Resolution of the validation blocks in effect."""
        return self.val_block_resolution if self.val_block_resolution is not None else min(self.resolutions[-1], 7)

    def as_params(self) -> dict:
        """The settings as flat values (tuples joined by commas); stored in checkpoints and compared on resume."""
        d = asdict(self)
        d["resolutions"] = ",".join(map(str, self.resolutions))
        d["hidden_dims"] = ",".join(map(str, self.hidden_dims))
        return d


# The defaults `fuse` trains with; `tune`'s trials get the same through :func:`fusion_train_config`.
FUSE_DEFAULTS = {"patience": 20, "val_fraction": 0.1, "checkpoint_every": 10, "members": 5}


def _ints(name: str, value) -> tuple[int, ...]:
    if isinstance(value, str):
        try:
            return tuple(int(v) for v in value.split(",") if v.strip())
        except ValueError:
            raise UrbanReprError(f"{name} must be integers separated by commas, got {value!r}") from None
    return tuple(int(v) for v in value)


def fusion_train_config(*, resolution: int | None = None, resolutions, hidden_dims, **settings) -> TrainConfig:
    """The one way ``fuse`` and ``tune`` build a :class:`TrainConfig`.

    ``resolutions`` and ``hidden_dims`` may be comma-separated strings (as entry points pass them);
    ``resolution``, when given, must be the finest of ``resolutions``. Settings not given take
    ``FUSE_DEFAULTS`` (early stopping with patience 20 on the held-out blocks' validation loss,
    10% of blocks held out, a checkpoint every 10 epochs, an ensemble of 5), then :class:`TrainConfig`'s defaults.
    """
    res = _ints("resolutions", resolutions)
    if resolution is not None and (not res or max(res) != int(resolution)):
        raise UrbanReprError(f"resolution {resolution} must be the finest of resolutions {list(res)}")
    return TrainConfig(resolutions=res, hidden_dims=_ints("hidden_dims", hidden_dims), **{**FUSE_DEFAULTS, **settings})


@dataclass
class TrainResult:
    """What :func:`train` returns.

    Attributes:
        embedding: (N, embedding_dim) float32 from the best-validation weights, rows in
            the order of the input cells (zero rows on ``torchrun`` ranks other than 0).
        best_epoch: epoch of the lowest validation loss.
        best_val_loss: that loss.
        epochs_run: last epoch trained.
        stopped_early: whether ``patience`` ran out.
        resumed_from: epoch of the checkpoint resumed from, if any.
        history: ``{"epoch": e, **metrics}`` per epoch trained in this call.
    """

    embedding: np.ndarray
    best_epoch: int
    best_val_loss: float
    epochs_run: int
    stopped_early: bool
    resumed_from: int | None = None
    history: list[dict] = field(default_factory=list)


def train(x: np.ndarray, cells: np.ndarray, cfg: TrainConfig, hooks: Hooks | None = None,
          resume_state: dict | None = None, cache_dir=None, progress: bool = True,
          groups: np.ndarray | None = None, present: np.ndarray | None = None) -> TrainResult:
    """Train ``cfg.model`` on inputs ``x`` (N, D) at the finest ``cells`` (sorted ``uint64``).

    Args:
        x: (N, D) finite inputs.
        cells: sorted unique ``uint64`` cells at ``cfg.resolutions[0]``.
        cfg: the settings.
        hooks: where metrics, checkpoints and best weights go (rank 0 only).
        resume_state: a checkpoint of a run with the same settings to continue from.
        cache_dir: where cones are cached (``cone_unet``).
        progress: show a progress bar.
        groups: (D,) column -> modality (-1: indicator), e.g. ``FusionInputs.column_groups``.
        present: (N, M) bool, e.g. ``FusionInputs.presence``.

    Returns:
        The :class:`TrainResult`.
    """
    task = FusionTask(x, cells, cfg, cache_dir=cache_dir, groups=groups, present=present)
    fit = Trainer(task, cfg.loop_config(), params=cfg.as_params(), progress=progress).fit(hooks, resume_state)
    emb = fit.output if fit.output is not None else np.zeros((0, task.embedding_dim), dtype=np.float32)
    return TrainResult(emb, fit.best_epoch, fit.best_value, fit.epochs_run, fit.stopped_early, fit.resumed_from, fit.history)
