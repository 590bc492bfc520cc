"""The generic training loop on a task that is not fusion: a tiny conv net telling dark from bright images."""

from __future__ import annotations

import io
import random

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from urbanrepml.errors import UrbanReprError
from urbanrepml.training import LoopConfig, Shard, Task, Trainer, TrainHooks, fit

torch.set_num_threads(1)


class BrightnessTask:
    """Random 3x16x16 images of two classes, class 1 brighter on average; a tiny conv net; accuracy monitored."""

    name = "tiny_cnn"
    monitor = "val_accuracy"
    mode = "max"
    data_parallel = True

    def __init__(self, n_train: int = 64, n_val: int = 32, batch_size: int = 16, seed: int = 0):
        rng = np.random.default_rng(seed)

        def images(n):
            y = np.arange(n) % 2
            x = rng.normal(0.0, 1.0, (n, 3, 16, 16)) + np.where(y == 1, 0.3, -0.3)[:, None, None, None]
            return torch.tensor(x, dtype=torch.float32), torch.tensor(y)

        self.train_x, self.train_y = images(n_train)
        self.val_x, self.val_y = images(n_val)
        self.batch_size = batch_size

    def build_model(self, device):
        self.train_x, self.train_y, self.val_x, self.val_y = (t.to(device) for t in (
            self.train_x, self.train_y, self.val_x, self.val_y))
        return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                             nn.Dropout(0.2), nn.Linear(4, 2))

    def _batches(self, x, y, order):
        for i in range(0, len(order), self.batch_size):
            idx = torch.from_numpy(order[i:i + self.batch_size]).to(x.device)
            yield x[idx], y[idx]

    def train_batches(self, epoch: int, shard: Shard):
        return self._batches(self.train_x, self.train_y, shard.indices(len(self.train_y), epoch))

    def val_batches(self, epoch: int, shard: Shard):
        return self._batches(self.val_x, self.val_y, shard.indices(len(self.val_y), epoch, shuffle=False))

    @staticmethod
    def _stats(logits, y, loss):
        return {"loss_x_n": loss.item() * len(y), "correct": float((logits.argmax(1) == y).sum()), "n": float(len(y))}

    def train_step(self, net, batch):
        x, y = batch
        logits = net(x)
        loss = F.cross_entropy(logits, y)
        return loss, self._stats(logits, y, loss)

    def val_step(self, net, batch):
        x, y = batch
        logits = net(x)
        return self._stats(logits, y, F.cross_entropy(logits, y))

    def epoch_metrics(self, train, val):
        return {"train_loss": train["loss_x_n"] / train["n"], "train_accuracy": train["correct"] / train["n"],
                "val_loss": val["loss_x_n"] / val["n"], "val_accuracy": val["correct"] / val["n"]}

    def output(self, model):
        accuracy = float((model(self.val_x).argmax(1) == self.val_y).float().mean())
        return {"weights": {k: v.clone() for k, v in model.state_dict().items()}, "val_accuracy": accuracy}


class ScriptedScore(BrightnessTask):
    """The same task with an extra validation metric ``score`` that follows a script (to force a plateau)."""

    def __init__(self, script):
        super().__init__()
        self.script = script

    def train_batches(self, epoch, shard):
        self.epoch = epoch
        return super().train_batches(epoch, shard)

    def epoch_metrics(self, train, val):
        return {**super().epoch_metrics(train, val), "score": self.script[self.epoch - 1]}


class BufferingHooks(TrainHooks):
    """Buffers epoch metrics and writes them as one batch per flush; keeps checkpoints as serialised bytes."""

    def __init__(self):
        self.buffer, self.batches, self.checkpoints, self.bests = [], [], {}, []

    def epoch_end(self, epoch, metrics):
        self.buffer.append((epoch, dict(metrics)))

    def flush(self):
        if self.buffer:
            self.batches.append(self.buffer)
            self.buffer = []

    def checkpoint(self, state, epoch):
        assert not self.buffer, "metrics are flushed before every checkpoint"
        f = io.BytesIO()
        torch.save(state, f)
        self.checkpoints[epoch] = f.getvalue()

    def best(self, state, epoch):
        self.bests.append((epoch, state["metric"], state[state["metric"]]))

    def load(self, epoch):
        return torch.load(io.BytesIO(self.checkpoints[epoch]), weights_only=True)


def _same_weights(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _no_time(history):
    return [{k: v for k, v in h.items() if k != "epoch_seconds"} for h in history]


def test_learns_checkpoints_every_n_epochs_and_hooks_get_batched_metrics():
    task = BrightnessTask()
    assert isinstance(task, Task)
    hooks = BufferingHooks()
    result = fit(task, LoopConfig(epochs=12, lr=0.05, checkpoint_every=4), hooks, progress=False)
    first, last = result.history[0], result.history[-1]
    assert last["train_loss"] < 0.5 * first["train_loss"]
    assert result.output["val_accuracy"] > 0.9 and result.best_value > 0.9
    assert result.monitor == "val_accuracy" and result.epochs_run == 12 and not result.stopped_early
    assert sorted(hooks.checkpoints) == [4, 8, 12]
    assert [[e for e, _ in batch] for batch in hooks.batches] == [[1, 2, 3, 4], [5, 6, 7, 8], [9, 10, 11, 12]]
    assert set(hooks.batches[0][0][1]) == {"train_loss", "train_accuracy", "val_loss", "val_accuracy", "grad_norm",
                                          "lr", "epoch_seconds", "best_val_accuracy"}
    lrs = [h["lr"] for h in result.history]  # one warm-up epoch, then cosine decay
    assert lrs[0] == pytest.approx(0.05) and all(a >= b for a, b in zip(lrs[1:], lrs[2:], strict=False)) and lrs[-1] < 0.01
    assert hooks.bests[-1] == (result.best_epoch, "val_accuracy", result.best_value)
    assert _same_weights(result.output["weights"], hooks.load(12)["best_model"])


def test_early_stopping_on_a_plateau_restores_the_best_weights():
    script = [0.2, 0.5, 0.7, 0.6, 0.7, 0.65, 0.9, 0.95, 0.99, 1.0]
    hooks = BufferingHooks()
    result = fit(ScriptedScore(script), LoopConfig(epochs=10, lr=0.05, patience=3, monitor="score", mode="max",
                                                   checkpoint_every=1, device="cpu"), hooks, progress=False)
    assert result.stopped_early and result.epochs_run == 6  # epochs 4, 5, 6 did not beat 0.7
    assert result.best_epoch == 3 and result.best_value == 0.7 and result.monitor == "score"
    assert sorted(hooks.checkpoints) == [1, 2, 3, 4, 5, 6]
    assert [e for e, _, _ in hooks.bests] == [1, 2, 3]
    at3, at6 = hooks.load(3), hooks.load(6)
    assert _same_weights(result.output["weights"], at3["model"])
    assert not _same_weights(result.output["weights"], at6["model"])
    assert at6["bad_epochs"] == 3 and at6["best_epoch"] == 3
    again = fit(ScriptedScore(script), LoopConfig(epochs=10, lr=0.05, patience=3, monitor="score", mode="max",
                                                  checkpoint_every=1, device="cpu"), resume_state=at6, progress=False)
    assert again.stopped_early and again.history == [] and _same_weights(again.output["weights"], at3["model"])


class TiedScore(ScriptedScore):
    """``score`` (monitored, max) plateaus; ``second`` (the task's tie-break, same direction) tells the tied epochs apart."""

    def __init__(self, script, second):
        super().__init__(script)
        self.second = second
        self.monitor, self.mode, self.tie_break = "score", "max", "second"

    def epoch_metrics(self, train, val):
        return {**super().epoch_metrics(train, val), "second": self.second[self.epoch - 1]}


def test_a_tie_on_the_monitored_metric_is_broken_by_the_tasks_second_metric():
    script, second = [0.5, 0.8, 0.8, 0.8, 0.7, 0.8], [0.1, 0.2, 0.4, 0.3, 0.9, 0.4]
    hooks = BufferingHooks()
    result = fit(TiedScore(script, second), LoopConfig(epochs=6, lr=0.05, checkpoint_every=2, device="cpu"), hooks,
                 progress=False)
    # epoch 3 ties epoch 2 on score and beats it on second; 4 and 6 tie without beating 3; 5 is worse on score
    assert result.best_epoch == 3 and [e for e, _, _ in hooks.bests] == [1, 2, 3]
    assert hooks.load(4)["best_tie"] == 0.4
    resumed = fit(TiedScore(script, second), LoopConfig(epochs=6, lr=0.05, checkpoint_every=2, device="cpu"),
                  resume_state=hooks.load(4), progress=False)
    assert resumed.best_epoch == 3
    # without a tie-break the first of the tied epochs stays the best
    plain = fit(ScriptedScore(script), LoopConfig(epochs=6, lr=0.05, monitor="score", mode="max", device="cpu"),
                progress=False)
    assert plain.best_epoch == 2


def test_resume_from_a_mid_way_checkpoint_equals_an_uninterrupted_run():
    cfg = LoopConfig(epochs=8, lr=0.05, checkpoint_every=3, seed=1, device="cpu")  # bit-identical: a CPU claim
    whole = BufferingHooks()
    full = fit(BrightnessTask(), cfg, whole, progress=False)
    torch.manual_seed(999)  # the resumed run must not depend on the RNGs it finds
    np.random.seed(5)
    random.seed(3)
    rest = BufferingHooks()
    resumed = fit(BrightnessTask(), cfg, rest, resume_state=whole.load(3), progress=False)
    assert resumed.resumed_from == 3 and [h["epoch"] for h in resumed.history] == [4, 5, 6, 7, 8]
    assert _no_time(resumed.history) == _no_time(full.history[3:])
    assert _same_weights(resumed.output["weights"], full.output["weights"])
    for epoch in (6, 8):
        assert _same_weights(rest.load(epoch)["model"], whole.load(epoch)["model"])
    with pytest.raises(UrbanReprError, match="other settings.*lr=0.05"):
        other = LoopConfig(epochs=8, lr=0.01, checkpoint_every=3, seed=1, device="cpu")
        fit(BrightnessTask(), other, resume_state=whole.load(3), progress=False)


def test_bad_settings_and_tasks_are_one_clear_line():
    with pytest.raises(UrbanReprError, match="epochs must be >= 1"):
        LoopConfig(epochs=0)
    with pytest.raises(UrbanReprError, match="mode must be 'min' or 'max'"):
        LoopConfig(mode="up")
    with pytest.raises(UrbanReprError, match="not a training task"):
        Trainer(object(), LoopConfig())
    with pytest.raises(UrbanReprError, match="reported no 'val_f1' metric"):
        fit(BrightnessTask(), LoopConfig(epochs=1, monitor="val_f1"), progress=False)
    with pytest.raises(UrbanReprError, match="not a training checkpoint"):
        fit(BrightnessTask(), LoopConfig(epochs=1), resume_state={"epoch": 1}, progress=False)


def _ddp_rank(rank: int, world: int, port: int, out: str) -> None:
    import os

    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        task = BrightnessTask()
        trainer = Trainer(task, LoopConfig(epochs=3, lr=0.05, checkpoint_every=10, device="cpu"), progress=False)
        result = trainer.fit(BufferingHooks())
        torch.save({"weights": trainer.model.state_dict(), "output": result.output, "history": _no_time(result.history)},
                   f"{out}/rank{rank}.pt")
        # Drain gloo's work queue before the DDP reducer (the group's last owner) is freed at return: freeing it joins
        # gloo's thread while holding the GIL, and a finished all-reduce that thread has not destroyed yet needs the
        # GIL -> a deadlock seen under load (the suite hung here for 600 s).
        dist.barrier()
    finally:
        dist.destroy_process_group()


@pytest.mark.e2e
def test_data_parallel_ranks_share_the_data_and_stay_in_step(tmp_path):
    import socket

    import torch.multiprocessing as mp

    a, b = Shard(0, 2, 7).indices(64, 3), Shard(1, 2, 7).indices(64, 3)
    assert len(a) == len(b) == 32 and sorted(np.concatenate([a, b])) == list(range(64))  # disjoint halves
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.start_processes(_ddp_rank, args=(2, port, str(tmp_path)), nprocs=2, join=True, start_method="fork")
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in (0, 1))
    assert _same_weights(r0["weights"], r1["weights"])  # gradients averaged across ranks
    assert r0["output"] is not None and r1["output"] is None  # only rank 0 produces the output
    assert r0["history"] == r1["history"]  # metrics summed over both ranks' shares
    assert r0["history"][-1]["val_accuracy"] > 0.5
