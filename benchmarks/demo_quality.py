"""Does the demo keep its promise whatever the seed and the precision? (`make demo-check`)

Runs the `make demo` recipe (read from the Makefile, its one home: `make -s print-demo-args`)
for 3 training seeds x 2 precisions (float32, and bfloat16 `--mixed-precision` where the CPU
has it natively, as the Makefile decides; skipped, and said so, elsewhere) on the demo's
synthetic data, scores each model with test.py in both protocols (the original's frames at the
training size, and every image at its own resolution), and prints one row per run plus the
minimum, median and maximum of pixel accuracy and mean IoU for each protocol, and whether every
run reaches the promise (pixel accuracy >= 0.95 and mean IoU >= 0.85 in both protocols).

Run from the repository root:  make demo-check   (or: .venv/bin/python benchmarks/demo_quality.py
[--seeds 0 1 2] [--out runs/demo-check]); about 6 trainings of the demo, so 60-80 minutes on 2
CPU cores. Each run's folder and test.py output stay in --out; a summary table goes to
<out>/summary.md.
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from common.files import atomic_write_text  # noqa: E402

PROMISE = {"pixel_accuracy": 0.95, "mean_iou": 0.85}       # in both protocols, every run
PROTOCOLS = (("frame", "frames"), ("full_resolution", "full res"))


def demo_args() -> dict[str, str]:
    """The Makefile's demo recipe: DEMO_DATA_ARGS, DEMO_TRAIN_ARGS and BF16 (the
    --mixed-precision flag, empty without native bfloat16)."""
    output = subprocess.run(["make", "-s", "--no-print-directory", "print-demo-args"],
                            cwd=ROOT, check=True, capture_output=True, text=True).stdout
    values = {}
    for line in output.splitlines():
        name, _, value = line.partition("=")
        values[name.strip()] = value.strip()
    missing = {"DEMO_DATA_ARGS", "DEMO_TRAIN_ARGS", "BF16"} - set(values)
    if missing:
        sys.exit(f"error: `make print-demo-args` did not print {', '.join(sorted(missing))}")
    return values


def run(command: list[str], log_path: str) -> None:
    """Run a project command from the repository root, its output into log_path."""
    with open(log_path, "a", encoding="utf-8") as log:
        log.write("$ " + shlex.join(command) + "\n")
        log.flush()
        result = subprocess.run(command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    if result.returncode:
        sys.exit(f"error: `{shlex.join(command)}` failed (exit {result.returncode}); see "
                 f"{log_path}")


def summary_rows(results: list[dict]) -> list[str]:
    """Markdown: one row per run, then min / median / max over the runs."""
    header = ("| run | " + " | ".join(f"{label} pixel acc. | {label} mean IoU"
                                       for _, label in PROTOCOLS) + " | train s |")
    lines = [header, "|" + " --- |" * (2 + 2 * len(PROTOCOLS))]
    for r in results:
        lines.append(f"| {r['precision']} seed {r['seed']} | " + " | ".join(
            f"{r[p]['pixel_accuracy']:.4f} | {r[p]['mean_iou']:.4f}" for p, _ in PROTOCOLS)
            + f" | {r['train_seconds']:.0f} |")
    for name, fn in (("min", min), ("median", statistics.median), ("max", max)):
        lines.append(f"| **{name}** | " + " | ".join(
            f"{fn(r[p]['pixel_accuracy'] for r in results):.4f} | "
            f"{fn(r[p]['mean_iou'] for r in results):.4f}" for p, _ in PROTOCOLS) + " | |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2],
                        help="training seeds (the demo itself trains with seed 0)")
    parser.add_argument("--out", default="runs/demo-check",
                        help="folder for the data, the runs and summary.md")
    args = parser.parse_args()

    recipe = demo_args()
    out = os.path.abspath(args.out)
    data = os.path.join(out, "data")
    os.makedirs(out, exist_ok=True)
    log_path = os.path.join(out, "commands.log")
    python = sys.executable
    precisions = [("fp32", [])]
    if recipe["BF16"]:
        precisions.append(("bf16", shlex.split(recipe["BF16"])))
    else:
        print("bfloat16 runs skipped: this CPU has no native bfloat16 (avx512_bf16 / amx_bf16),"
              " so `make demo` trains in float32 here")
    print(f"Demo recipe (Makefile):\n  data:  {recipe['DEMO_DATA_ARGS']}\n"
          f"  train: {recipe['DEMO_TRAIN_ARGS']}\n"
          f"  runs:  seeds {args.seeds} x {[p for p, _ in precisions]}; commands in {log_path}")

    run([python, "-m", "datasets.synthetic", "--out", data, "--overwrite",
         *shlex.split(recipe["DEMO_DATA_ARGS"])], log_path)
    results = []
    for precision, flags in precisions:
        for seed in args.seeds:
            run_dir = os.path.join(out, f"{precision}-seed{seed}")
            shutil.rmtree(run_dir, ignore_errors=True)     # train.py never overwrites a run
            start = time.time()
            run([python, "train.py", "--data", os.path.join(data, "train"), "--save-dir",
                 run_dir, *shlex.split(recipe["DEMO_TRAIN_ARGS"]), *flags, "--seed", str(seed),
                 "--quiet"], log_path)
            train_seconds = time.time() - start
            test_dir = os.path.join(run_dir, "test")
            run([python, "test.py", "--data", os.path.join(data, "test"), "--model", run_dir,
                 "--out", test_dir, "--quiet"], log_path)
            with open(os.path.join(test_dir, "metrics.json"), encoding="utf-8") as f:
                metrics = json.load(f)
            result = {"precision": precision, "seed": seed, "train_seconds": train_seconds,
                      **{p: metrics[p] for p, _ in PROTOCOLS}}
            results.append(result)
            print(summary_rows([result])[2], flush=True)

    lines = summary_rows(results)
    kept = all(r[p][score] >= bound for r in results for p, _ in PROTOCOLS
               for score, bound in PROMISE.items())
    verdict = (f"{'Every' if kept else 'NOT every'} run reaches pixel accuracy >= "
               f"{PROMISE['pixel_accuracy']} and mean IoU >= {PROMISE['mean_iou']} in both "
               f"protocols ({len(results)} runs).")
    print()
    print("\n".join(lines))
    print()
    print(verdict)
    atomic_write_text(os.path.join(out, "summary.md"), "\n".join(lines) + "\n\n" + verdict + "\n")
    sys.exit(0 if kept else 1)


if __name__ == "__main__":
    main()
