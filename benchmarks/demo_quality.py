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

The table's caption states the machine (CPU model, the flags that decide its speed: avx2,
avx512f, avx512_bf16, amx_bf16; cores; the machine_speed reading R when the shared tool is
found) and each row its precision, so the README's table is this output, pasted. To try a
recipe other than the Makefile's (benchmarks/RESULTS.md, "Demo recipes"), pass
``--data-args``/``--train-args``; ``--precisions`` picks fp32 and/or bf16. Runs made by
separate calls (one seed at a time, say) are tabled together by ``--from-results
<out>/results.jsonl ...``: only rows of the recipe in force are taken, the last of each
precision and seed.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import resource
import shlex
import shutil
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from common.files import atomic_write_text  # noqa: E402
from learning.precision import NATIVE_BFLOAT16_CPU_FLAGS, cpu_flags  # noqa: E402

PROMISE = {"pixel_accuracy": 0.95, "mean_iou": 0.85}       # in both protocols, every run
PROTOCOLS = (("frame", "frames"), ("full_resolution", "full res"))
PRECISION_NAMES = {"fp32": "float32", "bf16": "bfloat16"}
# The CPU flags that decide the demo's speed: vector width, and native bfloat16.
SPEED_FLAGS = ("avx2", "avx512f", *NATIVE_BFLOAT16_CPU_FLAGS)
# The shared speed probe (R, img/s of a bare float32 GCN step at 96 px), beside the checkout.
MACHINE_SPEED = os.path.join(os.path.dirname(ROOT), "shared", "tools", "machine_speed.py")


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


def machine_description(speed_probe: str | None) -> str:
    """The CPU, its speed flags, its cores and (when the probe runs) R, for the caption."""
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as cpuinfo:
            model = next((line.partition(":")[2].strip() for line in cpuinfo
                          if line.startswith("model name")), model)
    except OSError:
        pass
    flags = cpu_flags()
    shown = ("flags unknown" if flags is None else
             " ".join(f for f in SPEED_FLAGS if f in flags) or "none of " + "/".join(SPEED_FLAGS))
    text = f"{model} ({shown}), {os.cpu_count()} cores"
    if speed_probe and os.path.isfile(speed_probe):
        probe = subprocess.run([sys.executable, speed_probe], cwd=ROOT, capture_output=True,
                               text=True)
        reading = probe.stdout.strip().splitlines()[-1:] if probe.returncode == 0 else []
        text += f", machine_speed: {reading[0] if reading else 'failed'}"
    elif speed_probe:
        text += f", machine_speed not run ({speed_probe} not found; --machine-speed PATH)"
    return text


def best_validation(run_dir: str) -> dict[str, float | int]:
    """The best epoch of a run and its validation scores (history.json)."""
    with open(os.path.join(run_dir, "history.json"), encoding="utf-8") as f:
        history = json.load(f)
    row = next(r for r in history["epochs"] if r["epoch"] == history["best_epoch"])
    return {"epoch": row["epoch"], "epochs": len(history["epochs"]),
            "steps": sum(r["steps"] for r in history["epochs"]),
            "accuracy": row.get("eval_accuracy", float("nan")),
            "mean_iou": row.get("eval_mean_iou", float("nan"))}


def summary_rows(results: list[dict]) -> list[str]:
    """Markdown: one row per run, then min / median / max over the runs."""
    columns = ["run", *(f"{label} {score}" for _, label in PROTOCOLS
                        for score in ("pixel acc.", "mean IoU")),
               "best val. mean IoU (epoch)", "train s"]
    lines = ["| " + " | ".join(columns) + " |", "|" + " --- |" * len(columns)]
    for r in results:
        val = r["validation"]
        lines.append(f"| {PRECISION_NAMES[r['precision']]} seed {r['seed']} | " + " | ".join(
            f"{r[p]['pixel_accuracy']:.4f} | {r[p]['mean_iou']:.4f}" for p, _ in PROTOCOLS)
            + f" | {val['mean_iou']:.4f} ({val['epoch']}/{val['epochs']}) | "
              f"{r['train_seconds']:.0f} |")
    for name, fn in (("min", min), ("median", statistics.median), ("max", max)):
        lines.append(f"| **{name}** | " + " | ".join(
            f"{fn(r[p]['pixel_accuracy'] for r in results):.4f} | "
            f"{fn(r[p]['mean_iou'] for r in results):.4f}" for p, _ in PROTOCOLS) + " | | |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2],
                        help="training seeds (the demo itself trains with seed 0)")
    parser.add_argument("--out", default="runs/demo-check",
                        help="folder for the data, the runs and summary.md")
    parser.add_argument("--precisions", nargs="+", choices=sorted(PRECISION_NAMES),
                        default=None, help="default: fp32, and bf16 where the CPU has it "
                        "natively (the Makefile's BF16)")
    parser.add_argument("--data-args", default=None,
                        help="datasets.synthetic options instead of the Makefile's")
    parser.add_argument("--train-args", default=None,
                        help="train.py options instead of the Makefile's")
    parser.add_argument("--machine-speed", default=MACHINE_SPEED, metavar="PATH",
                        help="the machine_speed probe to run for the caption ('' skips it)")
    parser.add_argument("--from-results", nargs="+", default=None, metavar="JSONL",
                        help="train nothing: table the runs recorded in these results.jsonl "
                        "files (of the same recipe) as one check")
    args = parser.parse_args()

    recipe = demo_args()
    for name, override in (("DEMO_DATA_ARGS", args.data_args),
                           ("DEMO_TRAIN_ARGS", args.train_args)):
        if override is not None:
            recipe[name] = override
    out = os.path.abspath(args.out)
    if args.from_results:
        results = recorded_results(args.from_results, recipe)
        sources = len({os.path.abspath(p) for p in args.from_results})
        report(results, recipe, f"by {sources} calls of benchmarks/demo_quality.py on "
               f"{machine_description(args.machine_speed)}", out)
    data = os.path.join(out, "data")
    os.makedirs(out, exist_ok=True)
    log_path = os.path.join(out, "commands.log")
    python = sys.executable
    precisions = [("fp32", [])]
    if args.precisions is not None:
        precisions = [(p, ["--mixed-precision", p] if p != "fp32" else [])
                      for p in args.precisions]
    elif recipe["BF16"]:
        precisions.append(("bf16", shlex.split(recipe["BF16"])))
    else:
        print("bfloat16 runs skipped: this CPU has no native bfloat16 (avx512_bf16 / amx_bf16),"
              " so `make demo` trains in float32 here")
    machine = machine_description(args.machine_speed)
    print(f"Machine: {machine}")
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
            cpu_start = resource.getrusage(resource.RUSAGE_CHILDREN)
            run([python, "train.py", "--data", os.path.join(data, "train"), "--save-dir",
                 run_dir, *shlex.split(recipe["DEMO_TRAIN_ARGS"]), *flags, "--seed", str(seed),
                 "--quiet"], log_path)
            train_seconds = time.time() - start
            cpu_end = resource.getrusage(resource.RUSAGE_CHILDREN)
            # CPU seconds of the training process: less sensitive to a shared machine's load
            # than its wall time (results.jsonl only).
            train_cpu = (cpu_end.ru_utime + cpu_end.ru_stime
                         - cpu_start.ru_utime - cpu_start.ru_stime)
            test_dir = os.path.join(run_dir, "test")
            run([python, "test.py", "--data", os.path.join(data, "test"), "--model", run_dir,
                 "--out", test_dir, "--quiet"], log_path)
            with open(os.path.join(test_dir, "metrics.json"), encoding="utf-8") as f:
                metrics = json.load(f)
            result = {"precision": precision, "seed": seed, "train_seconds": train_seconds,
                      "train_cpu_seconds": train_cpu, "validation": best_validation(run_dir),
                      **{p: metrics[p] for p, _ in PROTOCOLS}}
            results.append(result)
            with open(os.path.join(out, "results.jsonl"), "a", encoding="utf-8") as f:
                f.write(json.dumps({"data_args": recipe["DEMO_DATA_ARGS"],
                                    "train_args": recipe["DEMO_TRAIN_ARGS"], **result}) + "\n")
            print(summary_rows([result])[2], flush=True)

    names = " and ".join(PRECISION_NAMES[p] for p, _ in precisions)
    report(results, recipe, f"with `make demo-check` on {machine}; {names}", out)


def recorded_results(paths: list[str], recipe: dict[str, str]) -> list[dict]:
    """The runs of ``recipe`` recorded in results.jsonl files, the last of each precision and
    seed, in (precision, seed) order; exits naming the files when none is of the recipe."""
    runs: dict[tuple[str, int], dict] = {}
    for path in paths:
        with open(path, encoding="utf-8") as f:
            for line in f:
                row = json.loads(line)
                if (row.get("data_args"), row.get("train_args")) == (
                        recipe["DEMO_DATA_ARGS"], recipe["DEMO_TRAIN_ARGS"]):
                    runs[(row["precision"], row["seed"])] = row
    if not runs:
        sys.exit(f"error: no run of the recipe (data `{recipe['DEMO_DATA_ARGS']}`, train "
                 f"`{recipe['DEMO_TRAIN_ARGS']}`) in {', '.join(paths)}; pass the results.jsonl "
                 f"of runs made with it (or its --data-args/--train-args)")
    order = list(PRECISION_NAMES)
    return [runs[key] for key in sorted(runs, key=lambda k: (order.index(k[0]), k[1]))]


def report(results: list[dict], recipe: dict[str, str], how: str, out: str) -> None:
    """Print the table of ``results`` with its caption and the verdict, write
    <out>/summary.md, and exit 1 unless every run keeps the promise."""
    caption = (f"Measured {datetime.date.today().isoformat()} {how}; recipe: data "
               f"`{recipe['DEMO_DATA_ARGS']}`, train `{recipe['DEMO_TRAIN_ARGS']}`.")
    lines = [caption, "", *summary_rows(results)]
    kept = all(r[p][score] >= bound for r in results for p, _ in PROTOCOLS
               for score, bound in PROMISE.items())
    verdict = (f"{'Every' if kept else 'NOT every'} run reaches pixel accuracy >= "
               f"{PROMISE['pixel_accuracy']} and mean IoU >= {PROMISE['mean_iou']} in both "
               f"protocols ({len(results)} runs).")
    print()
    print("\n".join(lines))
    print()
    print(verdict)
    os.makedirs(out, exist_ok=True)
    atomic_write_text(os.path.join(out, "summary.md"), "\n".join(lines) + "\n\n" + verdict + "\n")
    sys.exit(0 if kept else 1)


if __name__ == "__main__":
    main()
