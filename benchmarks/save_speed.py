"""Best-model saves: Keras' ``SegNet.save`` against the template ``ArchiveWriter``
(models/saving.py); resume states: ``np.savez`` against ``learning.checkpoint.save_state``.

    python benchmarks/save_speed.py                 # GCN 512x512, 3 classes, 6 rounds
    python benchmarks/save_speed.py --rounds 10 --image-size 128

Both write the same ``best_model.keras`` + ``model_config.json`` pair from the same weights into
a temporary folder on the same disk. ``save`` is what a training loop would call on a model
(here a clone holding the snapshot, as the loop's earlier design did: the copy into the clone is
counted); ``write`` takes the host arrays directly. One construction of the writer (a Keras save
of the template) is timed separately: it happens once per run. The two alternate (save, write,
save, write, ...) on this noisy shared machine; the script prints each round's seconds, the
per-round ratio save/write, and the median and range.

The resume state (``last_state.npz``: the weights and one momentum per trainable weight, here
copies of the weights, about 190 MB at any image size) is written the same way, atomically
(``common.files.atomic_write``, fsync included) by ``np.savez`` and by ``save_state``, which
writes the same uncompressed .npz from each array's own buffer; they alternate too. Each
write's CPU time (its thread's) is printed next to its wall time: on the writer thread of a
training run the CPU time is what the training steps lose.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from common.cli import quiet_tensorflow  # noqa: E402

quiet_tensorflow()

import numpy as np  # noqa: E402

from common.files import atomic_write  # noqa: E402
from learning.checkpoint import save_state  # noqa: E402

from models.nn import GCN  # noqa: E402
from models.saving import ArchiveWriter  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--rounds", type=int, default=6, help="interleaved rounds")
    parser.add_argument("--image-size", type=int, default=512, help="the model's input size")
    args = parser.parse_args()

    model = GCN((args.image_size, args.image_size, 3), 3, pretrain="none")
    weights = [np.asarray(w.numpy()) for w in model.keras_model.weights]
    clone = model.clone()
    start = time.perf_counter()
    writer = ArchiveWriter(model)
    setup = time.perf_counter() - start
    with tempfile.TemporaryDirectory(prefix="save_speed_") as tmp:
        def keras_save() -> None:
            clone.keras_model.set_weights(weights)
            clone.save(os.path.join(tmp, "keras"), "best_model.keras")

        def archive_write() -> None:
            writer.write(os.path.join(tmp, "writer"), "best_model.keras", weights)

        os.makedirs(os.path.join(tmp, "writer"))
        keras_save(), archive_write()                       # warm-up
        times: dict[str, list[float]] = {"save": [], "write": []}
        for _ in range(args.rounds):
            for name, call in (("save", keras_save), ("write", archive_write)):
                start = time.perf_counter()
                call()
                times[name].append(time.perf_counter() - start)
        size = os.path.getsize(os.path.join(tmp, "writer", "best_model.keras")) / 2 ** 20

        momentums = [np.array(w.numpy()) for w in model.keras_model.trainable_weights]
        state = {f"model/{i:04d}": w for i, w in enumerate(weights)}
        state.update({f"optimizer/{i:04d}": m for i, m in enumerate(momentums)})
        state_path = os.path.join(tmp, "last_state.npz")

        def savez() -> None:
            atomic_write(state_path, lambda f: np.savez(f, **state))

        def our_state() -> None:
            save_state(state_path, state, {"position": {"epoch": 1}})

        savez(), our_state()                                # warm-up
        state_times: dict[str, list[tuple[float, float]]] = {"savez": [], "state": []}
        for _ in range(args.rounds):
            for name, call in (("savez", savez), ("state", our_state)):
                start, cpu = time.perf_counter(), time.thread_time()
                call()
                state_times[name].append((time.perf_counter() - start, time.thread_time() - cpu))
        state_mb = sum(a.nbytes for a in state.values()) / 2 ** 20

    print(f"GCN {args.image_size}x{args.image_size}, 3 classes: {len(weights)} weight arrays, "
          f"archive {size:.1f} MiB; writer set-up (once per run) {setup:.2f} s")
    print("round   save s   write s   save/write")
    ratios = []
    for i, (a, b) in enumerate(zip(times["save"], times["write"]), start=1):
        ratios.append(a / b)
        print(f"{i:5d}   {a:6.3f}   {b:7.3f}   {a / b:10.2f}")
    print(f"median save {statistics.median(times['save']):.3f} s, write "
          f"{statistics.median(times['write']):.3f} s; save/write median "
          f"{statistics.median(ratios):.2f} (range {min(ratios):.2f}-{max(ratios):.2f})")

    print(f"\nresume state: {len(state)} arrays, {state_mb:.0f} MiB")
    print("round   savez s (cpu)    save_state s (cpu)   cpu savez/save_state")
    cpu_ratios = []
    for i, ((a, ac), (b, bc)) in enumerate(zip(state_times["savez"], state_times["state"]),
                                           start=1):
        cpu_ratios.append(ac / bc)
        print(f"{i:5d}   {a:6.3f} ({ac:5.3f})   {b:9.3f} ({bc:5.3f})   {ac / bc:18.2f}")
    median = {name: [statistics.median(t[k] for t in v) for k in (0, 1)]
              for name, v in state_times.items()}
    print(f"median savez {median['savez'][0]:.3f} s ({median['savez'][1]:.3f} s cpu), "
          f"save_state {median['state'][0]:.3f} s ({median['state'][1]:.3f} s cpu); cpu "
          f"savez/save_state median {statistics.median(cpu_ratios):.2f} (range "
          f"{min(cpu_ratios):.2f}-{max(cpu_ratios):.2f})")


if __name__ == "__main__":
    main()
