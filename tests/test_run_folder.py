"""The run folder: the lock, when a folder holds a run, crash-safe writes under SIGKILL, stale
temporary files, the background writer's order and errors, chief-only writes."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from common.files import atomic_write_bytes, remove_stale_temporaries
from learning.checkpoint import load_state, save_state
from learning.run_folder import (BackgroundWriter, RunFolder, RunFolderError,
                                 RunFolderLockedError, default_run_name)

ROOT = Path(__file__).resolve().parents[1]


def test_a_second_process_on_a_live_folder_is_refused_with_the_holders_pid(tmp_path):
    with RunFolder(tmp_path / "run").open(resume=False):
        code = textwrap.dedent(f"""
            from learning.run_folder import RunFolder, RunFolderLockedError
            try:
                RunFolder({str(tmp_path / "run")!r}).open(resume=False)
            except RunFolderLockedError as error:
                print(error)
        """)
        result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                                text=True, timeout=60, env=dict(os.environ, PYTHONPATH=str(ROOT)))
        assert f"in use by another training process (pid {os.getpid()} on" in result.stdout
    # The lock dies with its holder: the folder opens again.
    RunFolder(tmp_path / "run").open(resume=False).close()


def test_the_lock_is_also_refused_inside_one_process(tmp_path):
    first = RunFolder(tmp_path).open(resume=False)
    try:
        with pytest.raises(RunFolderLockedError, match=f"pid {os.getpid()}"):
            RunFolder(tmp_path).open(resume=False)
    finally:
        first.close()


def test_a_folder_holds_a_run_only_once_its_first_resume_state_exists(tmp_path):
    run = RunFolder(tmp_path)
    # A stopped attempt left its config and log but no state: a new run may reuse the folder
    # (and starts clean), resuming it explains why there is nothing to continue.
    (tmp_path / RunFolder.CONFIG).write_text("{}")
    (tmp_path / RunFolder.LOG).write_text("old attempt\n")
    (tmp_path / RunFolder.TENSORBOARD).mkdir()
    with pytest.raises(RunFolderError, match="stopped before writing its first resume state"):
        run.open(resume=True)
    run.open(resume=False).close()
    assert not (tmp_path / RunFolder.LOG).exists()
    assert not (tmp_path / RunFolder.TENSORBOARD).exists()
    # With a state, a new run is refused and resume is accepted.
    save_state(tmp_path / RunFolder.STATE, {"x": np.zeros(2)}, {"epoch": 1})
    with pytest.raises(RunFolderError, match="already holds a run .* --resume"):
        RunFolder(tmp_path).open(resume=False)
    RunFolder(tmp_path).open(resume=True).close()
    with pytest.raises(RunFolderError, match="not found"):
        RunFolder(tmp_path / "nothing").open(resume=True)


def test_default_run_names_do_not_collide_within_a_second():
    names = {default_run_name("runs") for _ in range(200)}
    assert len(names) == 200
    assert all(str(name).startswith("runs/gcn-") for name in names)


def test_stale_temporary_files_of_killed_writes_are_removed_at_start(tmp_path):
    stale = [tmp_path / ".last_state.npz.k2j3.tmp", tmp_path / ".best_model.keras.x9.tmp.keras"]
    for path in stale:
        path.write_bytes(b"partial")
    keep = [tmp_path / "notes.tmp", tmp_path / ".hidden"]
    for path in keep:
        path.write_bytes(b"user file")
    RunFolder(tmp_path).open(resume=False).close()
    assert not any(path.exists() for path in stale)
    assert all(path.exists() for path in keep)


def test_the_background_writer_keeps_the_order_and_raises_a_failed_write(tmp_path):
    writer = BackgroundWriter()
    done = []
    for i in range(5):
        writer.submit(lambda i=i: (time.sleep(0.01 * (5 - i)), done.append(i)))
    writer.flush()
    assert done == [0, 1, 2, 3, 4]

    def full_disk():
        raise OSError(28, "No space left on device")

    writer.submit(full_disk)
    writer.submit(lambda: done.append("after"))   # not run: the queue stops at the failure
    with pytest.raises(OSError, match="No space left"):
        writer.flush()
    assert done[-1] == 4
    writer.close()


def test_other_workers_write_nothing(tmp_path):
    run = RunFolder(tmp_path / "run", is_chief=False).open(resume=False)
    run.write_json(RunFolder.CONFIG, {"a": 1})
    run.in_background(lambda: (tmp_path / "run" / "oops").write_text("x"))
    run.write_history([{"epoch": 1}], {"epochs": []})
    with run.summaries():
        pass
    run.close()
    assert not (tmp_path / "run").exists()


_KEEP_SAVING = textwrap.dedent("""
    import sys, numpy as np
    from learning.checkpoint import save_state
    from common.files import atomic_write_bytes
    path, big = sys.argv[1], sys.argv[2]
    print("ready", flush=True)
    for i in range(10 ** 9):
        # ~24 MB each: a write takes long enough for a kill to land inside it.
        save_state(path, {"w": np.full(3_000_000, i, np.float64)}, {"i": i})
        atomic_write_bytes(big, bytes([i % 256]) * 5_000_000)
""")


def test_sigkill_during_writes_always_leaves_a_loadable_state(tmp_path):
    state, big = tmp_path / "last_state.npz", tmp_path / "best_model.keras"
    rng = np.random.default_rng(0)
    loaded = []
    for attempt in range(6):
        process = subprocess.Popen([sys.executable, "-c", _KEEP_SAVING, str(state), str(big)],
                                   cwd=ROOT, stdout=subprocess.PIPE, text=True,
                                   env=dict(os.environ, PYTHONPATH=str(ROOT)))
        assert process.stdout.readline().strip() == "ready"
        deadline = time.time() + 30
        while not state.exists() and time.time() < deadline:   # at least one finished write
            time.sleep(0.01)
        time.sleep(rng.uniform(0.05, 0.6))
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
        arrays, meta = load_state(state)                      # never torn
        assert np.all(arrays["w"] == meta["i"])
        data = big.read_bytes()
        assert len(data) == 5_000_000 and len(set(data)) == 1
        loaded.append(meta["i"])
    # The kills landed in different writes, and the temp files they left are cleaned up.
    assert len(set(loaded)) > 1
    remove_stale_temporaries(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best_model.keras", "last_state.npz"]


def test_atomic_writes_keep_the_users_file_permissions(tmp_path):
    path = atomic_write_bytes(tmp_path / "a.bin", b"x")
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask
