"""One live train_net.py run per output folder (issue 19).

Two runs writing into one ``train.output_dir`` corrupt each other (``metrics.json`` holds both,
``log.txt`` two runs, checkpoints overwrite each other), and the rerun guard
(``check_output_dir``) only sees finished checkpoints. So a run's main process (rank 0) holds
``<output_dir>/train_net.lock`` for as long as it runs: an exclusive ``fcntl.flock`` on the file,
which holds the owner's pid, host, start time and command line. Another run (training or
``--eval-only``) into the folder is refused with ``OutputDirLockedError`` naming that process.

The kernel releases a flock when its process dies, however it dies (SIGKILL included): a lock
file left behind by a dead run is therefore free, and the next run takes it over, with a warning
naming the dead owner. On a file system without flock support (some network mounts), a lock
file whose owner is alive on this host, or on another host, is respected, and one whose owner
is dead on this host is taken over. The owner removes the file when it exits.
"""
from __future__ import annotations

import contextlib
import errno
import json
import logging
import multiprocessing
import os
import socket
import sys
import time
from typing import Dict, Iterator, Optional

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX
    fcntl = None

__all__ = ["LOCK_NAME", "OutputDirLock", "OutputDirLockedError", "lock_output_dir"]

logger = logging.getLogger(__name__)

LOCK_NAME = "train_net.lock"


class OutputDirLockedError(RuntimeError):
    """The output folder belongs to another live run."""


def _describe(owner: Dict) -> str:
    started = owner.get("started")
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(started)) if isinstance(started, (int, float)) else "?"
    pid = f"pid {owner.get('pid', '?')}"
    if owner.get("launcher_pid") is not None:
        pid += f" (launched by pid {owner['launcher_pid']})"
    return f"{pid} on host {owner.get('host', '?')}, started {when}: {owner.get('command', '?')}"


def _pid_alive(pid) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    return True


def _try_flock(fd: int) -> Optional[bool]:
    """True: this process now holds the flock of ``fd``; False: another process holds it; None:
    the file system does not support flock."""
    if fcntl is None:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False
    except OSError as e:
        if e.errno in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
            return None
        raise


def _owner_alive(owner: Dict) -> bool:
    """Without flock: whether the recorded owner may be alive (another host's: assumed so)."""
    if not owner or owner.get("pid") == os.getpid() and owner.get("host") == socket.gethostname():
        return False
    return owner.get("host") != socket.gethostname() or _pid_alive(owner.get("pid"))


def _same_file(fd: int, path: str) -> bool:
    try:
        return os.path.samestat(os.fstat(fd), os.stat(path))
    except FileNotFoundError:
        return False


class OutputDirLock:
    """The lock of one output folder; ``acquire`` / ``release`` (or ``with``).

    Args:
        output_dir: the run's ``train.output_dir`` (created if missing).
    """

    def __init__(self, output_dir: str):
        self.output_dir = output_dir
        self.path = os.path.join(output_dir, LOCK_NAME)
        self._fd: Optional[int] = None
        self.taken_over: Optional[Dict] = None  # the record of a dead owner replaced by ``acquire``

    def _read(self, fd: int) -> Dict:
        os.lseek(fd, 0, os.SEEK_SET)
        data = os.read(fd, 1 << 16)
        try:
            owner = json.loads(data.decode("utf-8")) if data.strip() else {}
        except (UnicodeDecodeError, json.JSONDecodeError):
            owner = {"command": f"(unreadable lock file {self.path})"}
        return owner if isinstance(owner, dict) else {}

    def _refuse(self, owner: Dict) -> None:
        raise OutputDirLockedError(
            f"train.output_dir={self.output_dir!r} is in use by another run ({_describe(owner)}); its lock file is "
            f"{self.path}. Two runs writing into one folder corrupt each other's metrics, logs and checkpoints: "
            "wait for that run to finish or stop it, or choose another train.output_dir."
        )

    def acquire(self) -> "OutputDirLock":
        """Take the lock or raise ``OutputDirLockedError`` naming its live owner."""
        os.makedirs(self.output_dir, exist_ok=True)
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                held = _try_flock(fd)
                owner = self._read(fd)
                for _ in range(20):  # a new owner writes its record right after taking the lock
                    if owner or held is not False:
                        break
                    time.sleep(0.05)
                    owner = self._read(fd)
                if held is False or (held is None and _owner_alive(owner)):
                    self._refuse(owner)
                # the owner may have removed the file (released) between our open and our lock
                if _same_file(fd, self.path):
                    break
            except BaseException:
                os.close(fd)
                raise
            os.close(fd)
        if owner and owner.get("pid") != os.getpid():
            self.taken_over = owner
            logger.warning("Taking over the lock file %s of a run that is no longer alive (%s)", self.path,
                           _describe(owner))
        record = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.time(),
                  "command": " ".join(sys.argv)}
        launcher = multiprocessing.parent_process()  # train_net's launch: rank 0 is a child process
        if launcher is not None:
            record["launcher_pid"] = launcher.pid
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, (json.dumps(record) + "\n").encode("utf-8"))
        os.fsync(fd)
        self._fd = fd
        return self

    def release(self) -> None:
        """Remove the lock file and drop the lock (idempotent)."""
        if self._fd is None:
            return
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass
        os.close(self._fd)  # closing drops the flock
        self._fd = None

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        self.release()


@contextlib.contextmanager
def lock_output_dir(output_dir: str, enabled: bool = True) -> Iterator[Optional[OutputDirLock]]:
    """Hold the lock of ``output_dir`` for the ``with`` block (``enabled``: this is the main
    process; the other processes of a run take no lock)."""
    if not enabled:
        yield None
        return
    lock = OutputDirLock(output_dir).acquire()
    try:
        yield lock
    finally:
        lock.release()
