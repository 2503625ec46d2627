"""keepalived as the daemon's supervised child: started, reloaded and stopped by the daemon.

Nobody starts keepalived by hand: `KeepalivedProcess.start()` forks it (foreground, `-n`)
from the "ha-super" thread, which restarts it with back-off when it dies. It is in the
daemon's network namespace (it inherits it) and gets SIGTERM when the daemon dies
(PR_SET_PDEATHSIG): on SIGTERM keepalived removes its VIPs and sends a priority-0 advert,
so the peer takes over at once instead of after the advert timeout. A config change is a
SIGHUP (keepalived keeps the roles of instances that stay).
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

from appliance.ha.keepalived_conf import Paths

log = logging.getLogger(__name__)

KEEPALIVED = "keepalived"
STOP_TIMEOUT = 5.0
BACKOFF_MIN, BACKOFF_MAX, STABLE_S = 0.5, 10.0, 30.0
PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """In the child before exec: SIGTERM when the forking thread's process goes."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


def binary() -> str | None:
    return shutil.which(KEEPALIVED) or next(
        (p for p in ("/usr/sbin/keepalived", "/sbin/keepalived") if os.path.exists(p)), None
    )


class KeepalivedProcess:
    """One keepalived for one appliance; see the module docstring."""

    def __init__(self, paths: Paths, on_exit: Callable[[str], None] | None = None) -> None:
        self.paths = paths
        self.on_exit = on_exit  # told (with why) when keepalived died and is restarted
        self.proc: subprocess.Popen[bytes] | None = None
        self.restarts = 0
        self.error: str | None = None
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._log = paths.root / "keepalived.log"

    @property
    def pid(self) -> int | None:
        proc = self.proc
        return proc.pid if proc is not None and proc.poll() is None else None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._supervise, name="ha-super", daemon=True)
        self._thread.start()

    def reload(self) -> None:
        """Re-read keepalived.conf (already rewritten by the caller)."""
        with self._lock:
            if self.proc is not None and self.proc.poll() is None:
                self.proc.send_signal(signal.SIGHUP)

    def stop(self) -> None:
        """SIGTERM (keepalived releases its VIPs), killed past STOP_TIMEOUT."""
        with self._lock:
            self._stopping.set()
            proc = self.proc
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                log.error("keepalived did not stop in time: killed", extra={"pid": proc.pid})
                proc.kill()
                proc.wait()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(STOP_TIMEOUT)

    def _spawn(self) -> subprocess.Popen[bytes] | None:
        exe = binary()
        if exe is None:
            raise OSError("keepalived is not installed (scripts/setup installs it)")
        p = self.paths
        cmd = [exe, "-n", "-l", "-D", "-P", "-f", str(p.conf), "-p", str(p.pid),
               "-r", str(p.vrrp_pid)]  # fmt: skip
        with self._lock:
            if self._stopping.is_set():
                return None
            out = open(self._log, "ab")  # noqa: SIM115 - the child owns it from here
            try:
                self.proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT,
                                             stdin=subprocess.DEVNULL,
                                             preexec_fn=_die_with_parent)  # fmt: skip
            finally:
                out.close()
        log.info("keepalived started", extra={"pid": self.proc.pid, "restarts": self.restarts})
        return self.proc

    def _supervise(self) -> None:
        backoff = BACKOFF_MIN
        while not self._stopping.is_set():
            try:
                proc = self._spawn()
                if proc is None:
                    break
                started = time.monotonic()
                self.error = None
                status = proc.wait()
                if self._stopping.is_set():
                    break
                if time.monotonic() - started >= STABLE_S:
                    backoff = BACKOFF_MIN
                self.restarts += 1
                self.error = f"keepalived exited with status {status}; restarting"
                log.error("keepalived exited; restarting it",
                          extra={"status": status, "restart_in_s": backoff,
                                 "log": str(self._log)})  # fmt: skip
            except OSError as exc:
                self.error = f"keepalived could not start: {exc}"
                log.error("keepalived could not start", extra={"error": str(exc)})
            except Exception as exc:  # supervision must go on
                self.error = f"keepalived supervision failed: {exc!r}"
                log.exception("keepalived supervision failed; retrying")
            if self.on_exit is not None and self.error:
                with contextlib.suppress(Exception):
                    self.on_exit(self.error)
            if self._stopping.wait(backoff):
                break
            backoff = min(backoff * 2, BACKOFF_MAX)

    def log_tail(self, limit: int = 2000) -> str:
        try:
            return Path(self._log).read_text(errors="replace")[-limit:]
        except OSError:
            return ""
