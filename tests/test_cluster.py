"""Several machines: TF_CONFIG, two worker processes on 127.0.0.1 against one process on the
same global batches, chief-only writes, every worker reading its own files, and a SIGTERM to
one worker that the whole cluster survives with a resumable state.

The workers train a tiny model (tests/tiny.py) for a few steps; their train data is a callable
that reads this worker's chunk of every global batch (``datasets.pipeline.shard_indices``), as
train.py's streaming path does, and records which examples it read (tests/cluster_worker.py).
The workers of a cluster are processes of their own; the one-process reference runs in the
test's process.
"""
from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import cluster_worker
import numpy as np
import pytest
from commands import ROOT, process_env

from common.errors import EXIT_SIGTERM, ConfigError
from learning.checkpoint import load_state
from learning.cluster import Cluster, cluster_from_environment, make_strategy
from learning.run_folder import RunFolder


def tf_config(ports: list[int], index: int, chief: bool = False) -> str:
    cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
    return json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}})


def test_tf_config_gives_the_workers_place_and_the_chief():
    assert cluster_from_environment({}) == Cluster(1, 0, True)
    assert cluster_from_environment({"TF_CONFIG": tf_config([1, 2, 3], 0)}) == Cluster(3, 0, True)
    assert cluster_from_environment({"TF_CONFIG": tf_config([1, 2, 3], 2)}) == Cluster(3, 2, False)
    with_chief = json.dumps({"cluster": {"chief": ["h:1"], "worker": ["h:2", "h:3"]},
                             "task": {"type": "worker", "index": 0}})
    assert cluster_from_environment({"TF_CONFIG": with_chief}) == Cluster(3, 1, False)
    with pytest.raises(ConfigError, match="TF_CONFIG is not valid JSON"):
        cluster_from_environment({"TF_CONFIG": "{worker: 1"})
    with pytest.raises(ConfigError, match="task index 5 is outside the cluster's 2"):
        cluster_from_environment({"TF_CONFIG": tf_config([1, 2], 5)})


def test_distribute_options_that_cannot_work_are_clear_errors():
    with pytest.raises(ConfigError, match="needs TF_CONFIG naming at least two workers"):
        make_strategy("multiworker", environ={})
    with pytest.raises(ConfigError, match="TF_CONFIG names 2 workers but --distribute is none"):
        make_strategy("none", environ={"TF_CONFIG": tf_config([1, 2], 0)})
    strategy, cluster = make_strategy("auto", environ={})
    assert strategy.num_replicas_in_sync == 1 and cluster == Cluster()


def free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def start(folders: list[Path], outs: list[Path], mode: str = "train", signal_at=(0, 0),
          epochs: int = 2, log_every: int = 3) -> list[subprocess.Popen]:
    """A cluster of one worker process per folder on 127.0.0.1 (free ports)."""
    ports = free_ports(len(folders))
    return [subprocess.Popen(
        [sys.executable, str(ROOT / "tests" / "cluster_worker.py"), mode, str(folder), str(out),
         str(signal_at[index]), str(epochs), str(log_every)],
        cwd=ROOT, env=process_env(TF_CONFIG=tf_config(ports, index)), stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True)
        for index, (folder, out) in enumerate(zip(folders, outs))]


def finish(processes: list[subprocess.Popen]) -> list[subprocess.CompletedProcess]:
    results = []
    for process in processes:
        try:
            stdout, stderr = process.communicate(timeout=300)
        except subprocess.TimeoutExpired:
            for other in processes:
                other.kill()
            raise
        results.append(subprocess.CompletedProcess(process.args, process.returncode, stdout,
                                                   stderr))
    return results


def outputs(out: Path) -> tuple[list[np.ndarray], dict]:
    with np.load(str(out) + ".npz") as weights:
        arrays = [weights[k] for k in sorted(weights.files, key=lambda k: int(k.split("_")[1]))]
    return arrays, json.loads(Path(str(out) + ".json").read_text())


@pytest.fixture(scope="module")
def two_workers(tmp_path_factory):
    """An uninterrupted two-worker run (separate run folders) and a one-process run (here,
    while the workers run)."""
    root = tmp_path_factory.mktemp("cluster")
    workers = start([root / "chief", root / "other"], [root / "out0", root / "out1"])
    try:
        assert cluster_worker.train("train", str(root / "single"), str(root / "out_single"),
                                    signal_at=0, epochs=2) == 0
    finally:
        done = finish(workers)
    for result in done:
        assert result.returncode == 0, result.stderr[-3000:]
    return root


def test_two_workers_end_with_identical_weights_equal_to_one_process(two_workers):
    root = two_workers
    chief, chief_out = outputs(root / "out0")
    other, other_out = outputs(root / "out1")
    single, single_out = outputs(root / "out_single")
    assert chief_out["chief"] and not other_out["chief"]
    for a, b in zip(chief, other):
        np.testing.assert_array_equal(a, b)
    # Same global batches, gradients summed across processes instead of within one:
    # float32 sums in another order, hence a tolerance.
    for a, b in zip(chief, single):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
    assert chief_out["results"]["step_losses"] == pytest.approx(
        single_out["results"]["step_losses"], rel=1e-5)
    # Validation: each worker scored its share; the sums are the whole set's scores.
    assert chief_out["results"]["eval_scores"] == pytest.approx(
        single_out["results"]["eval_scores"], rel=1e-5)
    assert other_out["results"]["eval_scores"] == chief_out["results"]["eval_scores"]
    # The workers agree (a network round trip) at the log point of each epoch (step 3 of 4,
    # --log-every 3), after its validation and after its end: not after every step.
    assert chief_out["agreements"] == other_out["agreements"] == 2 * 3


def test_each_worker_read_only_its_own_examples(two_workers):
    root = two_workers
    _, chief = outputs(root / "out0")
    _, other = outputs(root / "out1")
    _, single = outputs(root / "out_single")
    per_epoch = 16 // 2                  # 18 examples, 4 whole batches of 4, 2 per worker each
    for epoch in range(2):
        mine = chief["read"][epoch * per_epoch:(epoch + 1) * per_epoch]
        theirs = other["read"][epoch * per_epoch:(epoch + 1) * per_epoch]
        assert not set(mine) & set(theirs)
        assert sorted(mine + theirs) == sorted(
            single["read"][epoch * 16:(epoch + 1) * 16])


def test_only_the_chief_writes_the_run_folder(two_workers):
    root = two_workers
    assert (root / "chief" / RunFolder.STATE).is_file()
    assert (root / "chief" / RunFolder.BEST_MODEL).is_file()
    assert not (root / "other").exists()


def test_sigterm_to_one_worker_stops_the_cluster_and_resume_ends_the_same_run(
        two_workers, tmp_path):
    folders = [tmp_path / "chief", tmp_path / "other"]
    outs = [tmp_path / "out0", tmp_path / "out1"]
    # Worker 1 gets SIGTERM while reading its 11th example: in epoch 2 (8 per epoch).
    stopped = finish(start(folders, outs, signal_at=(0, 11)))
    for result in stopped:
        assert result.returncode == EXIT_SIGTERM, result.stderr[-3000:]
    assert "stopped by SIGTERM" in stopped[1].stdout
    assert "another worker of the cluster was stopped" in stopped[0].stdout
    _, meta = load_state(folders[0] / RunFolder.STATE)
    # The stop came in epoch 2 before its step 2; both stopped at its next log point.
    assert meta["position"]["epoch"] == 2 and meta["position"]["step"] == 3
    assert not folders[1].exists()
    # The whole cluster restarts; worker 1's folder is not shared: it gets the state from the
    # chief.
    resumed = finish(start(folders, outs, mode="resume"))
    for result in resumed:
        assert result.returncode == 0, result.stderr[-3000:]
    _, got = outputs(outs[0])
    _, expected = outputs(two_workers / "out0")
    assert got["results"]["step_losses"] == pytest.approx(
        expected["results"]["step_losses"], rel=1e-5)
    assert got["results"]["learning_rates"] == expected["results"]["learning_rates"]
    assert got["results"]["best_epoch"] == expected["results"]["best_epoch"]
    for a, b in zip(outputs(outs[0])[0], outputs(outs[1])[0]):
        np.testing.assert_array_equal(a, b)
