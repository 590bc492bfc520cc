"""Side-by-side benchmark harness: warm-up, paired repeats, medians, spreads and per-pair ratios.

A benchmark names two or more *sides* (ours first, then references), each a
callable that does the work once and returns a :class:`Run`. :func:`compare`
runs every side ``warmup`` times (discarded), then ``repeats`` rounds, each
round running the sides one after the other (A, B, A, B, ...), so a machine
whose speed drifts does not favour one side. :func:`report` prints every raw
figure, each side's median with its spread (min/max and interquartile range),
and the ratio computed pair by pair: the median of the per-round ratios.

Sides that must be measured alone (peak memory is per process) run in a fresh
subprocess each time: :func:`subprocess_side` starts the script with a child
flag, and the child calls :func:`emit` with the seconds it timed (imports left
out) to hand them back together with its peak RSS::

    import harness

    def child(which):                         # in the child process
        start = time.perf_counter()
        ...                                    # the work
        harness.emit(harness.Run(time.perf_counter() - start))

    parser = argparse.ArgumentParser()
    harness.add_arguments(parser, repeats=5)
    args = parser.parse_args()
    result = harness.compare(
        [harness.Side("ours", harness.subprocess_side([sys.executable, __file__, "--child", "ours"])),
         harness.Side("reference", harness.subprocess_side([...]), repeats=args.reference_repeats)],
        repeats=args.repeats, warmup=args.warmup)
    harness.report(result)
    harness.save(result, args.json)

In-process sides wrap a plain function with :func:`timed`.
"""

from __future__ import annotations

import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field

RESULT_PREFIX = "BENCH-RESULT "


@dataclass
class Run:
    """One measured run of one side.

    Attributes:
        seconds: wall-clock seconds of the work (imports and set-up left out).
        peak_rss_mb: peak resident memory of the process that did the work, if measured.
        stages: seconds of named parts of the work, if the side reports them.
        info: anything else worth printing once (counts, settings).
    """

    seconds: float
    peak_rss_mb: float | None = None
    stages: dict[str, float] = field(default_factory=dict)
    info: dict = field(default_factory=dict)


@dataclass
class Side:
    """A named thing to measure.

    Attributes:
        name: label in the report.
        run: does the work once and returns a :class:`Run`.
        repeats: rounds this side takes part in; None takes every round. A side with
            fewer repeats runs in rounds spread evenly over all of them.
        warmup: warm-up runs of this side; None takes the comparison's setting.
    """

    name: str
    run: Callable[[], Run]
    repeats: int | None = None
    warmup: int | None = None


@dataclass
class Summary:
    """Median and spread of a list of figures."""

    n: int
    median: float
    low: float
    high: float
    q1: float
    q3: float

    @classmethod
    def of(cls, values: Sequence[float]) -> Summary:
        """Summary of ``values`` (at least one)."""
        values = sorted(values)
        if len(values) >= 2:
            q1, _, q3 = statistics.quantiles(values, n=4, method="inclusive")
        else:
            q1 = q3 = values[0]
        return cls(len(values), statistics.median(values), values[0], values[-1], q1, q3)


@dataclass
class Result:
    """Everything :func:`compare` measured.

    Attributes:
        sides: side names, ours first.
        rounds: per round, each side's :class:`Run` or None where it sat the round out.
        warmups: warm-up runs of each side (not in any figure).
        machine: CPU count and load average when the comparison started and ended.
    """

    sides: list[str]
    rounds: list[dict[str, Run | None]]
    warmups: dict[str, list[Run]]
    machine: dict

    def runs(self, side: str) -> list[Run]:
        """The measured runs of ``side``, in order."""
        return [r[side] for r in self.rounds if r.get(side) is not None]

    def seconds(self, side: str) -> Summary:
        """Median and spread of the seconds of ``side``."""
        return Summary.of([r.seconds for r in self.runs(side)])

    def ratios(self, reference: str, ours: str | None = None) -> list[float]:
        """``reference`` seconds over ``ours`` seconds, one per round both ran (speed-up of ours)."""
        ours = ours or self.sides[0]
        return [r[reference].seconds / r[ours].seconds for r in self.rounds
                if r.get(reference) is not None and r.get(ours) is not None and r[ours].seconds > 0]

    def as_dict(self) -> dict:
        """Plain data for JSON: raw runs, summaries and ratios."""
        out = {"sides": self.sides, "machine": self.machine,
               "rounds": [{k: (asdict(v) if v is not None else None) for k, v in r.items()} for r in self.rounds],
               "warmups": {k: [asdict(v) for v in runs] for k, runs in self.warmups.items()},
               "summary": {s: asdict(self.seconds(s)) for s in self.sides if self.runs(s)}}
        out["ratios"] = {s: self.ratios(s) for s in self.sides[1:]}
        return out


def _load() -> str:
    try:
        return " ".join(f"{v:.2f}" for v in os.getloadavg())
    except OSError:
        return "n/a"


def _rounds_for(repeats: int, total: int) -> set[int]:
    """``repeats`` round numbers spread evenly over ``total`` rounds."""
    if repeats >= total:
        return set(range(total))
    if repeats <= 0:
        return set()
    if repeats == 1:
        return {total // 2}
    return {round(k * (total - 1) / (repeats - 1)) for k in range(repeats)}


def compare(sides: Sequence[Side], repeats: int, warmup: int = 1, log: Callable[[str], None] | None = print) -> Result:
    """Warm up every side, then run ``repeats`` rounds of the sides in turn (A, B, A, B, ...).

    Args:
        sides: what to measure, ours first; ratios are each other side over the first.
        repeats: rounds; a side with its own smaller ``repeats`` sits some out.
        warmup: warm-up runs per side before the first round (a side may override it).
        log: where raw figures go as they come (None for quiet).

    Returns:
        The :class:`Result`.
    """
    say = log or (lambda _: None)
    names = [s.name for s in sides]
    width = max(len(n) for n in names)
    machine = {"cpus": os.cpu_count(), "python": platform.python_version(), "load_before": _load()}
    plural = "s, each in turn" if len(sides) > 1 else ""
    say(f"# {len(sides)} side{plural}; {warmup} warm-up, {repeats} rounds; load average {machine['load_before']}")
    warmups: dict[str, list[Run]] = {}
    for side in sides:
        warmups[side.name] = []
        for k in range(warmup if side.warmup is None else side.warmup):
            run = side.run()
            warmups[side.name].append(run)
            say(f"  warm-up {k + 1}  {side.name:<{width}}  {_figure(run)}")
    plan = {s.name: _rounds_for(repeats if s.repeats is None else s.repeats, repeats) for s in sides}
    for s in sides:
        if len(plan[s.name]) < repeats:
            say(f"# {s.name} runs in {len(plan[s.name])} of {repeats} rounds ({', '.join(str(r + 1) for r in sorted(plan[s.name]))})")
    rounds: list[dict[str, Run | None]] = []
    for number in range(repeats):
        this: dict[str, Run | None] = {}
        for side in sides:
            this[side.name] = side.run() if number in plan[side.name] else None
            if this[side.name] is not None:
                say(f"  round {number + 1:>2}  {side.name:<{width}}  {_figure(this[side.name])}")
        rounds.append(this)
    machine["load_after"] = _load()
    return Result(names, rounds, warmups, machine)


def _figure(run: Run) -> str:
    mem = f"  peak RSS {run.peak_rss_mb:,.0f} MB" if run.peak_rss_mb is not None else ""
    return f"{run.seconds:9.3f} s{mem}"


def _spread(s: Summary, unit: str = "s", digits: int = 3) -> str:
    f = f"{{:.{digits}f}}"
    return (f"median {f.format(s.median)} {unit}  min {f.format(s.low)}  max {f.format(s.high)}  "
            f"IQR {f.format(s.q1)}-{f.format(s.q3)}  (n={s.n})")


def report(result: Result, log: Callable[[str], None] = print, ratios: bool = True) -> None:
    """Print raw figures per round, each side's median and spread, stages, memory and per-pair ratios.

    Args:
        result: what :func:`compare` returned.
        log: where the lines go.
        ratios: print ratios to the first side (False where the sides are not alternatives).
    """
    sides = result.sides
    width = max(len(n) for n in sides)
    col = max(12, width)
    header = "  ".join(f"{n:>{col}}" for n in sides)
    others = sides[1:] if ratios else []
    ratio_head = "".join(f"  {n + '/' + sides[0]:>16}" for n in others)
    log(f"raw seconds per round:\n  round  {header}{ratio_head}")
    for number, r in enumerate(result.rounds, 1):
        cells = "  ".join(f"{r[n].seconds:{col}.3f}" if r.get(n) else f"{'-':>{col}}" for n in sides)
        per_pair = "".join(f"  {r[n].seconds / r[sides[0]].seconds:15.1f}x" if r.get(n) and r.get(sides[0]) else f"  {'-':>16}"
                           for n in others)
        log(f"  {number:>5}  {cells}{per_pair}")
    log("seconds:")
    for name in sides:
        if result.runs(name):
            log(f"  {name:<{width}}  {_spread(result.seconds(name))}")
    _report_memory(result, width, log)
    _report_stages(result, width, log)
    for name in others:
        pairs = result.ratios(name)
        if not pairs:
            continue
        s = Summary.of(pairs)
        of_medians = result.seconds(name).median / result.seconds(sides[0]).median
        log(f"ratio {name}/{sides[0]} (speed-up), pair by pair: median {s.median:.1f}x  min {s.low:.1f}x  max {s.high:.1f}x  "
            f"IQR {s.q1:.1f}-{s.q3:.1f}x  ({s.n} pair{'s' if s.n != 1 else ''}); ratio of medians {of_medians:.1f}x")
    log(f"load average before {result.machine['load_before']}, after {result.machine['load_after']} "
        f"({result.machine['cpus']} CPUs)")


def _report_memory(result: Result, width: int, log: Callable[[str], None]) -> None:
    lines = []
    for name in result.sides:
        peaks = [r.peak_rss_mb for r in result.runs(name) if r.peak_rss_mb is not None]
        if peaks:
            lines.append(f"  {name:<{width}}  {_spread(Summary.of(peaks), 'MB', 0)}")
    if lines:
        log("peak RSS (each run in a fresh process):")
        for line in lines:
            log(line)


def _report_stages(result: Result, width: int, log: Callable[[str], None]) -> None:
    for name in result.sides:
        runs = result.runs(name)
        stages = [k for k in runs[0].stages] if runs else []
        if not stages:
            continue
        log(f"stages of {name} (median seconds):")
        for stage in stages:
            values = [r.stages[stage] for r in runs if stage in r.stages]
            log(f"  {stage:<{max(width, 28)}}  {statistics.median(values):9.3f}")


def timed(fn: Callable[[], object]) -> Callable[[], Run]:
    """A side's ``run`` that times ``fn`` in this process.

    ``fn`` may return a :class:`Run`-like dict with ``stages``/``info`` to pass on;
    any other return value is ignored.
    """

    def run() -> Run:
        start = time.perf_counter()
        out = fn()
        seconds = time.perf_counter() - start
        extra = out if isinstance(out, dict) else {}
        return Run(seconds, stages=dict(extra.get("stages", {})), info=dict(extra.get("info", {})))

    return run


def subprocess_side(argv: Sequence[str], env: dict[str, str] | None = None) -> Callable[[], Run]:
    """A side's ``run`` that starts ``argv`` in a fresh process and reads the :class:`Run` it emits.

    Args:
        argv: the command; the child must call :func:`emit` once.
        env: extra environment variables for the child.
    """

    def run() -> Run:
        proc = subprocess.run(list(argv), capture_output=True, text=True, env={**os.environ, **(env or {})}, check=False)
        lines = [line for line in proc.stdout.splitlines() if line.startswith(RESULT_PREFIX)]
        if proc.returncode != 0 or not lines:
            raise RuntimeError(f"{' '.join(argv)} failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
        return Run(**json.loads(lines[-1][len(RESULT_PREFIX):]))

    return run


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, in MB."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024  # bytes on macOS, KiB on Linux


def emit(run: Run) -> None:
    """In a child process: print ``run`` for :func:`subprocess_side`, with this process's peak RSS filled in."""
    if run.peak_rss_mb is None:
        run.peak_rss_mb = peak_rss_mb()
    print(RESULT_PREFIX + json.dumps(asdict(run)), flush=True)


def add_arguments(parser, repeats: int = 5, warmup: int = 1, aliases: Sequence[str] = ()) -> None:
    """Add the harness options to an :class:`argparse.ArgumentParser`: ``--repeats``, ``--warmup``, ``--json``.

    Args:
        parser: the parser.
        repeats: default rounds.
        warmup: default warm-up runs per side.
        aliases: other spellings of ``--repeats`` a script already accepted (e.g. ``--repeat``).
    """
    parser.add_argument("--repeats", *aliases, type=int, default=repeats, help=f"measured rounds per side (default {repeats})")
    parser.add_argument("--warmup", type=int, default=warmup, help=f"warm-up runs per side, not counted (default {warmup})")
    parser.add_argument("--json", default=None, help="also write raw runs and summaries to this JSON file")


def save(result: Result | dict[str, Result], path: str | None) -> None:
    """Write :meth:`Result.as_dict` (of one result, or of each named result) to ``path``; nothing when ``path`` is None."""
    if path:
        data = {k: r.as_dict() for k, r in result.items()} if isinstance(result, dict) else result.as_dict()
        with open(path, "w") as fh:
            json.dump(data, fh, indent=1, default=str)
