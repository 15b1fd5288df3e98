"""Several machines: TF_CONFIG, two worker processes on 127.0.0.1 against one process on the
same global batches, chief-only writes, every worker reading its own files, and a SIGTERM to
one worker that the whole cluster survives with a resumable state: one cluster run, stopped
and resumed, checked against one uninterrupted process.

The workers train a tiny model (tests/tiny.py) for a few steps; their train data is a callable
that reads this worker's chunk of every global batch (``datasets.pipeline.shard_indices``), as
train.py's streaming path does, and records which examples it read (tests/cluster_worker.py).
The workers of a cluster are processes of their own; the one-process reference runs in the
test's process.
"""
from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import NamedTuple

import cluster_worker
import numpy as np
import pytest
from commands import ROOT, PythonProcess, free_ports, tf_config

from common.errors import EXIT_SIGTERM, ConfigError
from learning.checkpoint import load_state
from learning.cluster import Cluster, cluster_from_environment, make_strategy
from learning.run_folder import RunFolder


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


def start(folders: list[Path], outs: list[Path], mode: str = "train", signal_at=(0, 0),
          epochs: int = 2, log_every: int = 3) -> list[PythonProcess]:
    """A cluster of one worker process per folder on 127.0.0.1 (free ports)."""
    ports = free_ports(len(folders))
    return [PythonProcess(
        out.parent, ROOT / "tests" / "cluster_worker.py", mode, folder, out, signal_at[index],
        epochs, log_every, name=out.name, TF_CONFIG=tf_config(ports, index))
        for index, (folder, out) in enumerate(zip(folders, outs))]


def finish(processes: list[PythonProcess]) -> list[subprocess.CompletedProcess]:
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


def report(out: Path) -> dict:
    """What a worker wrote to ``out``.json (cluster_worker.train)."""
    return json.loads(Path(str(out) + ".json").read_text())


def outputs(out: Path) -> tuple[list[np.ndarray], dict]:
    """The final weights of a run that ended, and its report."""
    with np.load(str(out) + ".npz") as weights:
        arrays = [weights[k] for k in sorted(weights.files, key=lambda k: int(k.split("_")[1]))]
    return arrays, report(out)


class ClusterRuns(NamedTuple):
    root: Path
    stopped: list[subprocess.CompletedProcess]
    position: dict                  # the chief's saved state when the cluster had stopped
    other_folder_written: bool      # worker 1's own --save-dir, by then
    resumed: list[subprocess.CompletedProcess]


@pytest.fixture(scope="module")
def cluster_runs(tmp_path_factory) -> ClusterRuns:
    """A two-worker run (separate run folders) stopped by a SIGTERM to worker 1 while it reads
    its 11th example (in epoch 2: 8 per epoch), then the whole cluster restarted with resume;
    and the one-process reference run (here, while the first cluster runs). One cluster run
    does the work of an uninterrupted one and a resumed one: its epoch 1 is the uninterrupted
    run's, and its end must be the one-process run's."""
    root = tmp_path_factory.mktemp("cluster")
    folders = [root / "chief", root / "other"]
    workers = start(folders, [root / "stopped0", root / "stopped1"], signal_at=(0, 11))
    try:
        assert cluster_worker.train("train", str(root / "single"), str(root / "out_single"),
                                    signal_at=0, epochs=2) == 0
    finally:
        stopped = finish(workers)
    position = (load_state(folders[0] / RunFolder.STATE)[1]["position"]
                if (folders[0] / RunFolder.STATE).is_file() else {})
    other_written = folders[1].exists()
    # Worker 1's folder is not shared: it gets the state from the chief.
    resumed = finish(start(folders, [root / "out0", root / "out1"], mode="resume"))
    return ClusterRuns(root, stopped, position, other_written, resumed)


def test_sigterm_to_one_worker_stops_the_whole_cluster_with_a_resumable_state(cluster_runs):
    for result in cluster_runs.stopped:
        assert result.returncode == EXIT_SIGTERM, result.stderr[-3000:]
    assert "stopped by SIGTERM" in cluster_runs.stopped[1].stdout
    assert "another worker of the cluster was stopped" in cluster_runs.stopped[0].stdout
    # The stop came in epoch 2 before its step 2; both stopped at its next log point.
    position = cluster_runs.position
    assert (position.get("epoch"), position.get("step")) == (2, 3)
    for result in cluster_runs.resumed:
        assert result.returncode == 0, result.stderr[-3000:]


def test_resumed_workers_end_with_identical_weights_equal_to_one_process(cluster_runs):
    root = cluster_runs.root
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
    got, expected = chief_out["results"], single_out["results"]
    assert got["step_losses"] == pytest.approx(expected["step_losses"], rel=1e-5)
    assert got["learning_rates"] == expected["learning_rates"]
    assert got["best_epoch"] == expected["best_epoch"]
    # Validation: each worker scored its share; the sums are the whole set's scores.
    assert got["eval_scores"] == pytest.approx(expected["eval_scores"], rel=1e-5)
    assert other_out["results"]["eval_scores"] == got["eval_scores"]


def test_the_workers_agree_at_log_points_validation_and_epoch_ends_only(cluster_runs):
    # A network round trip at the log point of each epoch (step 3 of 4, --log-every 3), after
    # its validation and after its end: not after every step. The stopped run agreed 3 times
    # in epoch 1 and once in epoch 2 (its log point, where both learnt of the stop); the
    # resumed run (from step 3) after epoch 2's validation and end.
    root = cluster_runs.root
    counts = [report(root / name)["agreements"]
              for name in ("stopped0", "stopped1", "out0", "out1")]
    assert counts == [4, 4, 2, 2]


def test_each_worker_read_only_its_own_examples(cluster_runs):
    root = cluster_runs.root
    single = report(root / "out_single")["read"]
    per_epoch = 16 // 2                  # 18 examples, 4 whole batches of 4, 2 per worker each
    # Epoch 1 of the stopped run (epoch 2 was cut short: its reads depend on the timing).
    mine, theirs = (report(root / name)["read"][:per_epoch]
                    for name in ("stopped0", "stopped1"))
    assert not set(mine) & set(theirs)
    assert sorted(mine + theirs) == sorted(single[:16])
    # The resumed run read only epoch 2's last batch (its steps 1-3 were done): 2 each.
    mine, theirs = (report(root / name)["read"] for name in ("out0", "out1"))
    assert len(mine) == len(theirs) == 2 and not set(mine) & set(theirs)
    assert sorted(mine + theirs) == sorted(single[16 + 12:32])


def test_only_the_chief_writes_the_run_folder(cluster_runs):
    root = cluster_runs.root
    assert (root / "chief" / RunFolder.STATE).is_file()
    assert (root / "chief" / RunFolder.BEST_MODEL).is_file()
    assert not cluster_runs.other_folder_written and not (root / "other").exists()
