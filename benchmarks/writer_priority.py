"""The writer thread's priority: the loop's epochs with its background writes at several nice
values, side by side in one run.

    python benchmarks/writer_priority.py                      # 128 px, nice 0 and 10, 6 rounds
    python benchmarks/writer_priority.py --size 64 --rounds 10

A training epoch runs alongside the previous epoch's writes (a 180 MiB resume state, a 91 MiB
best model when the score improved, the learning curve about once a minute): about 1 s of CPU
on the run folder's writer thread here. On a machine whose cores the step's thread pool keeps
busy, that CPU comes out of the steps. The idea measured here: start the writer thread at a
higher nice value (lower priority), so that it would write in the step's idle moments.
The result (benchmarks/RESULTS.md): the niced writer made the epochs slower, not faster, so
learning/run_folder.py's writer keeps the process's priority. Only this script's writers are
niced.

ONE ``MomentumOptimizer.train`` run (the harness of benchmarks/train_speed.py: same model, data
and recipe, no validation, every per-epoch write) whose epochs take turns among writer threads
of the given nice values (in turn, the order rotated each round): the writes of an epoch go to
the next epoch's writer. The curve is drawn after every epoch by default (``--curve-every 0``;
a run draws it at most once a minute): with a fixed period it would land on the same writer
round after round. One round = one epoch per nice value, then one epoch of the loop's compiled
steps alone (``steps``: no loop, no writes), the reference. The script prints each epoch's
images/s, the writes' wall and CPU seconds, and per round the ratios loop(nice n) / loop(nice
first) and loop(nice n) / steps, with medians and ranges. Linux only: there a thread's nice
value is its own.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from benchmarks.train_speed import (Loop, Steps, make_data,  # noqa: E402  (quiets TF)
                                     summary)

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402

from learning import loop as loop_module  # noqa: E402
from learning.precision import POLICIES  # noqa: E402
from learning.run_folder import BackgroundWriter, RunFolder  # noqa: E402


def lower_thread_priority(increment: int) -> None:
    """Raise the calling thread's nice value by ``increment`` (capped at 19). On Linux
    ``setpriority`` on a thread id changes that thread only."""
    if increment > 0:
        tid = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, tid, min(19, os.getpriority(os.PRIO_PROCESS, tid)
                                                 + increment))


class TimedWriter(BackgroundWriter):
    """A writer thread ``niceness`` below the process's priority that records, per batch of
    jobs, the wall time from the first submit to the last job's end and the CPU time of the
    jobs (the thread's)."""

    def __init__(self, niceness: int) -> None:
        self.niceness = niceness
        super().__init__()
        self.batches: list[list[float]] = []     # [first submit, last end, cpu seconds]
        self._lock = threading.Lock()

    def start_batch(self) -> None:
        self.batches.append([0.0, 0.0, 0.0])

    def submit(self, job: Callable[[], Any]) -> None:
        batch = self.batches[-1]
        if not batch[0]:
            batch[0] = time.perf_counter()

        def timed() -> None:
            cpu = time.thread_time()
            job()
            with self._lock:
                batch[1] = time.perf_counter()
                batch[2] += time.thread_time() - cpu

        super().submit(timed)

    def _work(self) -> None:            # the thread's body: set its priority, then serve jobs
        lower_thread_priority(self.niceness)
        super()._work()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--images", type=int, default=320, help="images per epoch")
    parser.add_argument("--size", type=int, default=128, help="image and model input size")
    parser.add_argument("--batch", type=int, default=8, help="batch size")
    parser.add_argument("--rounds", type=int, default=6, help="interleaved rounds")
    parser.add_argument("--nice", default="0,10",
                        help="the writer threads' nice increments, comma-separated")
    parser.add_argument("--precision", choices=("fp32", *POLICIES), default="fp32")
    parser.add_argument("--curve-every", type=float, default=0.0,
                        help="seconds between learning-curve drawings (a run's is "
                             f"{loop_module.CURVE_EVERY_SECONDS:g}; 0: every epoch, the same "
                             "writes after every epoch whatever the epoch's length)")
    args = parser.parse_args()
    args.steps_per_execution = 1
    loop_module.CURVE_EVERY_SECONDS = args.curve_every
    nices = [int(n) for n in args.nice.split(",")]
    if not sys.platform.startswith("linux"):
        parser.error("thread priorities are set on Linux only")
    keras.mixed_precision.set_global_policy(POLICIES.get(args.precision, "float32"))
    args.rounds_total = args.rounds * len(nices)
    images, labels = make_data(args.images, args.size)
    print(f"GCN {args.size}x{args.size} {args.precision}, batch {args.batch}, {args.images} "
          f"images per epoch; writer nice {nices}, {args.rounds} rounds after a warm-up; "
          f"TF {tf.__version__}, Keras {keras.__version__}, {os.cpu_count()} CPUs", flush=True)

    loop_args = argparse.Namespace(**{**vars(args), "rounds": args.rounds_total})
    writers = {n: TimedWriter(n) for n in nices}
    rates: dict[str, list[float]] = {**{f"nice {n}": [] for n in nices}, "steps": []}
    epochs_started = [0]
    images_per_epoch = (args.images // args.batch) * args.batch

    with tempfile.TemporaryDirectory(prefix="writer_priority_") as tmp:
        loop = Loop(images, labels, loop_args, Path(tmp) / "run")
        steps = Steps(images, labels, args)
        steps.epoch()                                       # warm-up: tracing

        def nice_of(epoch: int) -> int:     # epoch 1 is the warm-up, epoch 2 the first round's
            # Round r runs the nice values rotated by r, so that none always comes first.
            index, round_index = (epoch - 2) % len(nices), (epoch - 2) // len(nices)
            return nices[(index + round_index) % len(nices)]

        def before(run: RunFolder) -> None:
            # The writes of the epoch that ended go to this epoch's writer (the benchmark's one
            # reach into the folder: a run has one writer thread).
            epochs_started[0] += 1
            run.flush()
            writer = writers[nice_of(epochs_started[0])]
            writer.start_batch()
            if run._writer not in writers.values():        # noqa: SLF001 - the run's own
                run._writer.close()                        # noqa: SLF001
            run._writer = writer                           # noqa: SLF001

        def between(seconds: float) -> None:               # after each loop epoch
            n = nice_of(epochs_started[0])
            rates[f"nice {n}"].append(images_per_epoch / seconds)
            line = (f"  epoch {epochs_started[0]:2d}: writer nice {n:2d} "
                    f"{rates[f'nice {n}'][-1]:5.1f} img/s")
            batch = writers[n].batches[-1]
            if batch[0]:
                line += f" (writes {batch[1] - batch[0]:.2f} s wall, {batch[2]:.2f} s cpu)"
            if (epochs_started[0] - 2) % len(nices) == len(nices) - 1:   # a round is complete
                rates["steps"].append(images_per_epoch / steps.epoch())
                line += f" | steps {rates['steps'][-1]:5.1f} img/s"
            print(line, flush=True)

        loop.run(between, before)
        for writer in writers.values():
            writer.close()

    print()
    first = f"nice {nices[0]}"
    for n in nices:
        name = f"nice {n}"
        batches = [b for b in writers[n].batches if b[0]]
        walls = [b[1] - b[0] for b in batches]
        cpus = [b[2] for b in batches]
        line = (f"writer {name}: {statistics.median(rates[name]):.2f} img/s; loop / steps "
                f"{summary([a / b for a, b in zip(rates[name], rates['steps'])])}")
        if name != first:
            line += (f"; / {first} "
                     f"{summary([a / b for a, b in zip(rates[name], rates[first])])}")
        if walls:
            line += (f"; writes per epoch {statistics.median(walls):.2f} s wall, "
                     f"{statistics.median(cpus):.2f} s cpu (medians)")
        print(line)
    print(f"steps alone: {statistics.median(rates['steps']):.2f} img/s")


if __name__ == "__main__":
    main()
