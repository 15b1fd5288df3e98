"""One worker of tests/test_cluster.py's runs: a tiny model (tests/tiny.py) trained a few steps
on a callable that reads this worker's chunk of every global batch
(``datasets.pipeline.shard_indices``), as train.py's streaming path does, and records which
examples it read. A cluster's workers run it as processes of their own, TF_CONFIG set
(``python tests/cluster_worker.py MODE FOLDER OUT SIGNAL_AT EPOCHS LOG_EVERY``; one cluster per process:
TensorFlow cannot form a second one in a process); the one-process reference runs in the test's
own process (``train``).
"""
from __future__ import annotations

import json
import os
import signal
import sys

import numpy as np


def train(mode: str, folder: str, out: str, signal_at: int, epochs: int,
          log_every: int = 3) -> int:
    """Train (``mode`` "train") or resume ("resume") in ``folder``; write the weights to
    ``out``.npz (when the run ends) and the results (None when stopped), the examples read,
    whether this is the chief and how many times the workers agreed (a network round trip
    each) to ``out``.json. SIGTERM to this process while reading its ``signal_at``-th example
    (0: never). Returns the exit code."""
    import learning.loop
    from learning.cluster import make_strategy

    strategy, cluster = make_strategy("auto")
    agreements, real_agree = [], learning.loop.agree

    def agree(strategy, flags):
        agreements.append(list(flags))
        return real_agree(strategy, flags)

    learning.loop.agree = agree     # restored below: the reference runs in the test's process
    try:
        return _train(mode, folder, out, signal_at, epochs, log_every, strategy, cluster,
                      agreements)
    finally:
        learning.loop.agree = real_agree


def _train(mode, folder, out, signal_at, epochs, log_every, strategy, cluster,
           agreements) -> int:
    import tensorflow as tf
    from tiny import tiny_data, tiny_model, weights_of

    from datasets.data import DataSet
    from datasets.pipeline import epoch_order, shard_indices
    from learning.evaluators import AccuracyEvaluator, MeanIoUEvaluator
    from learning.optimizers import MomentumOptimizer, TrainingInterrupted

    images, labels = tiny_data(18, seed=4, unknown_rows=2)
    val_images, val_labels = tiny_data(5, seed=5, unknown_rows=2)
    read = []

    def train_set(epoch, *, batch_size, skip_batches, shard):
        indices = shard_indices(epoch_order(len(images), 3, epoch), batch_size, shard,
                                skip_batches)

        def examples():
            for index in indices:
                read.append(int(index))
                if len(read) == signal_at:
                    os.kill(os.getpid(), signal.SIGTERM)
                yield images[index], labels[index]
        spec = (tf.TensorSpec(images.shape[1:], tf.uint8),
                tf.TensorSpec(labels.shape[1:], tf.uint8))
        return tf.data.Dataset.from_generator(examples, output_signature=spec)

    w, n = cluster.worker_index, cluster.num_workers
    with strategy.scope():
        model = tiny_model(seed=1)
    opt = MomentumOptimizer(
        model, train_set, AccuracyEvaluator(), DataSet(val_images[w::n], val_labels[w::n]),
        extra_evaluators=[MeanIoUEvaluator(3)], batch_size=4, num_epochs=epochs,
        init_learning_rate=0.2, learning_rate_patience=0, learning_rate_decay=0.5, seed=3,
        warmup_steps=3, log_every=log_every, strategy=strategy)
    results, code = None, 0
    try:
        results = opt.train(folder, details=True, verbose=False, resume=mode == "resume")
        np.savez(out + ".npz", *weights_of(model))
    except TrainingInterrupted as error:
        print("STOPPED", error, flush=True)
        code = error.exit_code
    with open(out + ".json", "w") as f:
        json.dump({"results": results, "read": read, "chief": cluster.is_chief,
                   "agreements": len(agreements)}, f)
    return code


if __name__ == "__main__":
    mode, folder, out, signal_at, epochs, log_every = sys.argv[1:7]
    sys.exit(train(mode, folder, out, int(signal_at), int(epochs), int(log_every)))
