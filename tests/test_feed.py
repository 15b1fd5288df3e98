"""The train feed over in-memory arrays: the DataSet's batches in order, split into replica
shares, its position recorded after every step, and a pipeline that leaves the process's
memory allocator as it found it."""
from __future__ import annotations

import ctypes
import sys
import textwrap

import numpy as np
import pytest

from datasets.data import DataSet
from learning.feed import TrainFeed
from commands import PythonProcess
from tiny import tiny_data



@pytest.mark.parametrize("replicas", [1, 2])
def test_an_epoch_is_the_datasets_batches_in_order_split_into_replica_shares(replicas):
    images, labels = tiny_data(10)
    feed = TrainFeed(DataSet(images, labels, seed=3), batch_size=4, num_replicas=replicas)
    reference = DataSet(images, labels, seed=3)
    got = list(feed.epoch(0).as_numpy_iterator())
    # 10 // 4 = 2 steps, each cut into `replicas` consecutive shares of 4 / replicas examples.
    assert len(got) == 2 * replicas
    for step in range(2):
        want_images, want_labels = reference.next_batch(4)
        shares = got[step * replicas:(step + 1) * replicas]
        np.testing.assert_array_equal(np.concatenate([s[0] for s in shares]), want_images)
        np.testing.assert_array_equal(np.concatenate([s[1] for s in shares]), want_labels)
        assert all(s[0].shape == (4 // replicas, *images.shape[1:]) for s in shares)
        assert feed.state_after(step + 1) == reference.get_state()


def test_an_epoch_started_mid_way_continues_from_the_restored_position():
    images, labels = tiny_data(12)
    feed = TrainFeed(DataSet(images, labels, seed=5), batch_size=3, num_replicas=1)
    reference = DataSet(images, labels, seed=5)
    reference.next_batch(3)
    feed.restore(reference.get_state(), steps_done=1)
    got = list(feed.epoch(0, start_step=1).as_numpy_iterator())
    assert len(got) == 3                                    # steps 2, 3 and 4 of 4
    for got_images, got_labels in got:
        want_images, want_labels = reference.next_batch(3)
        np.testing.assert_array_equal(got_images, want_images)
        np.testing.assert_array_equal(got_labels, want_labels)


_ALLOCATOR_CHECK = textwrap.dedent("""
    import ctypes, resource, sys
    import numpy as np
    from datasets.data import DataSet
    from learning.feed import TrainFeed

    libc = ctypes.CDLL("libc.so.6")
    libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
    libc.free.argtypes = [ctypes.c_void_p]

    def faults_of_a_reused_buffer(size=8 << 20):
        # glibc serves a freed large block again from its heap (its mmap threshold adapts):
        # filling it again costs no page faults. With the threshold pinned low, every
        # malloc of it is a fresh mmap: size / 4096 faults each time.
        for _ in range(3):
            block = libc.malloc(size); ctypes.memset(block, 1, size); libc.free(block)
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        block = libc.malloc(size); ctypes.memset(block, 1, size); libc.free(block)
        return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before

    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (8, 16, 16, 3), dtype=np.uint8)
    labels = rng.integers(0, 3, (8, 16, 16), dtype=np.uint8)
    feed = TrainFeed(DataSet(images, labels, seed=0), batch_size=4, num_replicas=1)
    assert len(list(feed.epoch(0))) == 2
    print(faults_of_a_reused_buffer())
""")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc only")
def test_feeding_arrays_leaves_the_mmap_threshold_of_malloc_adaptive(tmp_path):
    # Under Python 3.11, Dataset.from_generator pins glibc's mmap threshold at 128 KiB for the
    # whole process; every tensor above it then page-faults anew at every step (a fifth of an
    # epoch's CPU time at 96 px). The check runs in a process of its own: the pin is process-wide.
    try:
        ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):
        pytest.skip("not glibc")
    process = PythonProcess(tmp_path, "-c", _ALLOCATOR_CHECK)
    stdout, stderr = process.communicate(timeout=300)
    assert process.returncode == 0, stderr[-2000:]
    faults = int(stdout.split()[-1])
    assert faults < 512, f"{faults} page faults to refill a reused 8 MiB block (2048 = pinned)"
