"""The distribution strategy and what the workers of a cluster must agree on.

``--distribute``:

* ``none``: one device (the first GPU, with its input prefetched onto it, else the CPU);
* ``mirrored``: ``tf.distribute.MirroredStrategy`` over the local GPUs (or the CPU);
* ``multiworker``: ``tf.distribute.MultiWorkerMirroredStrategy``, configured by the standard
  ``TF_CONFIG`` environment variable (``{"cluster": {"worker": ["host:port", ...]}, "task":
  {"type": "worker", "index": i}}``); every worker runs the same command;
* ``auto`` (the default): multiworker when ``TF_CONFIG`` names more than one worker, mirrored
  when more than one GPU is visible, else none.

The chief (task ``chief``, or worker 0 when the cluster has no chief) is the only process that
writes the run folder. The others need a few things from it, sent by collectives (so a
``--save-dir`` that is not shared between the machines works too): the saved config of a run
to resume (``broadcast_bytes``), the restored variables (``broadcast_variables``), and the
stop requests and checkpoint deadlines of every worker, OR-ed at each check (``agree``).
Validation scores are made of every worker's share of the images (``sum_over_workers``).
"""
from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from common.errors import ConfigError

__all__ = ["Cluster", "cluster_from_environment", "make_strategy", "broadcast_bytes",
           "broadcast_variables", "sum_over_workers", "agree"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Cluster:
    """This process's place in the cluster (one worker, index 0, when there is no TF_CONFIG)."""

    num_workers: int = 1
    worker_index: int = 0
    is_chief: bool = True

    @property
    def distributed(self) -> bool:
        return self.num_workers > 1


def cluster_from_environment(environ: dict[str, str] | None = None) -> Cluster:
    """Read ``TF_CONFIG``; a malformed value is a ConfigError naming it."""
    raw = (os.environ if environ is None else environ).get("TF_CONFIG")
    if not raw:
        return Cluster()
    try:
        config = json.loads(raw)
        cluster = config.get("cluster", {})
        workers = list(cluster.get("worker", []))
        chiefs = list(cluster.get("chief", []))
        task = config.get("task", {})
        task_type, index = task.get("type", "worker"), int(task.get("index", 0))
    except (ValueError, AttributeError, TypeError) as error:
        raise ConfigError(f"TF_CONFIG is not valid JSON of the form {{\"cluster\": {{\"worker\": "
                          f"[\"host:port\", ...]}}, \"task\": {{\"type\": \"worker\", \"index\": "
                          f"0}}}}: {error}") from None
    members = chiefs + workers
    if task_type not in ("chief", "worker") or not members:
        raise ConfigError(f"TF_CONFIG: task type must be chief or worker and the cluster must "
                          f"list its workers, got task {task!r} and cluster {cluster!r}")
    position = index if task_type == "chief" else len(chiefs) + index
    if not 0 <= position < len(members):
        raise ConfigError(f"TF_CONFIG: task index {index} is outside the cluster's "
                          f"{len(members)} member(s)")
    is_chief = task_type == "chief" or (not chiefs and index == 0)
    return Cluster(num_workers=len(members), worker_index=position, is_chief=is_chief)


def make_strategy(distribute: str, environ: dict[str, str] | None = None) -> tuple[Any, Cluster]:
    """The strategy for ``--distribute`` and this process's place in the cluster.

    MultiWorkerMirroredStrategy must be created before TensorFlow runs anything else: call this
    right after the imports."""
    import tensorflow as tf

    cluster = cluster_from_environment(environ)
    if distribute == "auto":
        if cluster.distributed:
            distribute = "multiworker"
        elif len(tf.config.list_physical_devices("GPU")) > 1:
            distribute = "mirrored"
        else:
            distribute = "none"
        logger.info("--distribute auto: %s", distribute)
    if distribute == "multiworker":
        if not cluster.distributed:
            raise ConfigError("--distribute multiworker needs TF_CONFIG naming at least two "
                              "workers (docs/several-machines.md); use --distribute "
                              "none or mirrored on one machine")
        strategy = tf.distribute.MultiWorkerMirroredStrategy()
        logger.info("multi-worker training: worker %d of %d%s, %d replica(s) in all",
                    cluster.worker_index, cluster.num_workers,
                    " (chief)" if cluster.is_chief else "", strategy.num_replicas_in_sync)
        return strategy, cluster
    if cluster.distributed:
        raise ConfigError(f"TF_CONFIG names {cluster.num_workers} workers but --distribute is "
                          f"{distribute}: use --distribute multiworker (or auto), or unset "
                          f"TF_CONFIG")
    if distribute == "mirrored":
        return tf.distribute.MirroredStrategy(), cluster
    return one_device_strategy(), cluster


def one_device_strategy() -> Any:
    """One device: the first GPU through ``OneDeviceStrategy``, whose input path prefetches the
    batches onto it (the same path as several GPUs: learning/feed.py), else the default
    strategy (the CPU)."""
    import tensorflow as tf

    if tf.config.list_logical_devices("GPU"):
        return tf.distribute.OneDeviceStrategy("/gpu:0")
    return tf.distribute.get_strategy()


def _from_chief(strategy: Any, value: np.ndarray, is_chief: bool) -> np.ndarray:
    """Every worker gets the chief's ``value`` (same shape everywhere): a SUM over workers in
    which only the chief contributes."""
    return _sum_over_workers(strategy, value if is_chief else np.zeros_like(value))


def _sum_over_workers(strategy: Any, value: np.ndarray) -> np.ndarray:
    """SUM over the workers of each worker's ``value`` (counted once per worker: the value
    goes to the first local replica, zeros to the others), as one collective call."""
    import tensorflow as tf

    value = np.asarray(value)
    local_replicas = max(1, strategy.num_replicas_in_sync // _num_workers(strategy))
    reduce = _REDUCERS.get(id(strategy))
    if reduce is None:
        def replica_sum(x: Any) -> Any:
            context = tf.distribute.get_replica_context()
            first = tf.equal(context.replica_id_in_sync_group % local_replicas, 0)
            return context.all_reduce(tf.distribute.ReduceOp.SUM,
                                      tf.where(first, x, tf.zeros_like(x)))

        @tf.function
        def reduce(x: Any) -> Any:
            return strategy.run(replica_sum, args=(x,))
        _REDUCERS[id(strategy)] = reduce
    result = strategy.experimental_local_results(reduce(tf.constant(value)))[0]
    return np.asarray(result.numpy())


_REDUCERS: dict[int, Any] = {}


def _num_workers(strategy: Any) -> int:
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None:
        return 1
    spec = resolver.cluster_spec().as_dict()
    return max(1, sum(len(v) for k, v in spec.items() if k in ("chief", "worker")))


def sum_over_workers(strategy: Any, value: Sequence[float] | np.ndarray) -> np.ndarray:
    """The element-wise sum over the workers of each worker's ``value`` (float64)."""
    value = np.asarray(value, np.float64)
    if _num_workers(strategy) == 1:
        return value
    return _sum_over_workers(strategy, value)


def agree(strategy: Any, flags: Sequence[bool]) -> list[bool]:
    """Each flag OR-ed over the workers (every worker calls this at the same points)."""
    if _num_workers(strategy) == 1:
        return [bool(f) for f in flags]
    return [bool(v > 0) for v in sum_over_workers(strategy, [float(bool(f)) for f in flags])]


def broadcast_bytes(strategy: Any, data: bytes | None, is_chief: bool) -> bytes:
    """The chief's ``data`` on every worker (non-chief workers pass None)."""
    if _num_workers(strategy) == 1:
        return data or b""
    size = int(_from_chief(strategy, np.array([len(data or b"")], np.float64), is_chief)[0])
    payload = np.zeros(size, np.float64)
    if is_chief:
        payload[:] = np.frombuffer(data, np.uint8)
    received = _from_chief(strategy, payload, is_chief)
    return bytes(np.rint(received).astype(np.uint8))


def broadcast_variables(strategy: Any, variables: Sequence[Any], is_chief: bool) -> None:
    """Give every worker's copy of ``variables`` the chief's values (after the chief alone
    restored them from disk): one collective per dtype over the flattened values."""
    if _num_workers(strategy) == 1:
        return
    by_dtype: dict[str, list[Any]] = {}
    for variable in variables:
        by_dtype.setdefault(np.dtype(variable.dtype.name if hasattr(variable.dtype, "name")
                                     else variable.dtype).name, []).append(variable)
    for dtype_name, group in sorted(by_dtype.items()):
        values = [np.asarray(v.numpy()) for v in group]
        # Floats travel in their own type; integers (counters far below 2**53) as float64.
        wire = np.float64 if np.dtype(dtype_name).kind in "iub" else np.dtype(dtype_name)
        flat = np.concatenate([v.astype(wire).ravel() for v in values]) if values else \
            np.zeros(0, wire)
        received = _from_chief(strategy, flat, is_chief)
        offset = 0
        for variable, value in zip(group, values):
            part = received[offset:offset + value.size].reshape(value.shape)
            variable.assign(part.astype(value.dtype))
            offset += value.size
