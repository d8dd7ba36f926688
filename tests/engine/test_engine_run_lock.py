"""The output-folder lock of train_net.py (codetr.engine.run_lock, issue 19), against real other
processes: a live owner is refused by name, a SIGKILLed owner's lock is taken over, a released lock
leaves no file; without flock support the recorded pid decides. (tests/test_train_net.py runs it
end to end.)"""
import json
import logging
import multiprocessing
import os
import signal
import socket
import time

import pytest

from codetr.engine import run_lock
from codetr.engine.run_lock import LOCK_NAME, OutputDirLock, OutputDirLockedError, lock_output_dir

FORK = multiprocessing.get_context("fork")


def _hold(output_dir, ready):
    OutputDirLock(output_dir).acquire()
    ready.set()
    time.sleep(3600)


@pytest.fixture
def holder(tmp_path):
    """A forked process that holds the lock of tmp_path/"out" (killed at the end)."""
    out = str(tmp_path / "out")
    ready = FORK.Event()
    proc = FORK.Process(target=_hold, args=(out, ready), daemon=True)
    proc.start()
    assert ready.wait(60), "the holder did not take the lock"
    yield out, proc
    if proc.is_alive():
        proc.kill()
    proc.join()


def test_a_live_owner_is_refused_by_name(holder):
    out, proc = holder
    with pytest.raises(OutputDirLockedError) as e:
        OutputDirLock(out).acquire()
    msg = str(e.value)
    # the holder is a child process, as rank 0 of a multi-process run: its launcher is named too
    assert msg.startswith(f"train.output_dir={out!r} is in use by another run (pid {proc.pid} (launched by pid "
                          f"{os.getpid()}) on host {socket.gethostname()}, started "), msg
    assert os.path.join(out, LOCK_NAME) in msg and "choose another train.output_dir" in msg
    assert proc.is_alive()
    with open(os.path.join(out, LOCK_NAME)) as f:
        assert json.load(f)["pid"] == proc.pid  # the refused attempt changed nothing


def test_the_lock_of_a_killed_owner_is_taken_over(holder, caplog):
    out, proc = holder
    os.kill(proc.pid, signal.SIGKILL)
    proc.join()
    path = os.path.join(out, LOCK_NAME)
    assert os.path.isfile(path)  # left behind
    with caplog.at_level(logging.WARNING, logger=run_lock.__name__):
        lock = OutputDirLock(out).acquire()
    try:
        assert lock.taken_over["pid"] == proc.pid
        expected = f"of a run that is no longer alive (pid {proc.pid} (launched by pid {os.getpid()}) on host "
        assert expected in caplog.text, caplog.text
        with open(path) as f:
            record = json.load(f)
        assert record["pid"] == os.getpid() and record["host"] == socket.gethostname()
        assert abs(record["started"] - time.time()) < 3600 and isinstance(record["command"], str)
    finally:
        lock.release()
    assert not os.path.exists(path)


def test_release_removes_the_file_and_frees_the_folder(tmp_path):
    out = str(tmp_path / "new" / "out")  # created by the lock
    with lock_output_dir(out) as lock:
        assert lock.taken_over is None and os.path.isfile(lock.path)
        # one owner per folder, also within a process
        with pytest.raises(OutputDirLockedError, match=f"pid {os.getpid()} "):
            OutputDirLock(out).acquire()
    assert os.listdir(out) == []
    with lock_output_dir(out):  # free again
        pass
    with lock_output_dir(out, enabled=False) as lock:  # the non-main processes of a run take none
        assert lock is None and os.listdir(out) == []


def test_without_flock_the_recorded_pid_decides(tmp_path, monkeypatch):
    """On a file system without flock: a record of a live process on this host, or of any
    process on another host, is respected; one of a dead process on this host is taken over."""
    monkeypatch.setattr(run_lock, "_try_flock", lambda fd: None)
    out = str(tmp_path)
    path = os.path.join(out, LOCK_NAME)
    child = FORK.Process(target=time.sleep, args=(0,))
    child.start()
    child.join()  # a pid that no longer runs
    for pid, host, refused in ((os.getppid(), socket.gethostname(), True), (child.pid, "elsewhere", True),
                               (child.pid, socket.gethostname(), False)):
        with open(path, "w") as f:
            json.dump({"pid": pid, "host": host, "started": 0.0, "command": "train_net.py ..."}, f)
        if refused:
            with pytest.raises(OutputDirLockedError, match=f"pid {pid} on host {host}, started "):
                OutputDirLock(out).acquire()
        else:
            lock = OutputDirLock(out).acquire()
            assert lock.taken_over["pid"] == pid
            lock.release()
