"""The Advertiser over ExaBGP: a supervised child process, its config file, its API.

ExaBGP (PyPI, pure Python) runs as `sluice bgp-speaker CONF` and starts its API process,
`sluice bgp-bridge SOCKET`, which connects back to this object's Unix socket. Commands
(`neighbor A announce route P next-hop self med 10`) go down that socket; ExaBGP's acks and
session changes (JSON) come up it. Neighbours live in ExaBGP's config file, so a change of
sessions restarts the speaker; a change of routes is only messages.

One thread, "bgp-super", does everything: starts the speaker, accepts its bridge, sends
what `set_routes` asked for (the difference from what this speaker was sent), reads its
reports, restarts it (back-off) when it dies, and stops it. Callers only swap the wanted
routes under a lock and wake the thread: a commit never waits on the speaker.

When the daemon dies the speaker gets SIGTERM from the kernel (parent-death signal), and
the bridge, seeing its socket close, stops it too: its sessions close and the peers
withdraw the routes.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import selectors
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from appliance.bgp.advertiser import OnSession, Routes
from appliance.bgp.child import PARENT_ENV
from appliance.bgp.model import Route, SpeakerConfig

log = logging.getLogger(__name__)

# The speaker must start its bridge within this: two Python start-ups, seconds each on a
# loaded machine.
BRIDGE_TIMEOUT = 60.0
SEND_TIMEOUT = 10.0  # a speaker that takes no command for this long is wedged: restarted
STOP_TIMEOUT = 5.0
BACKOFF_MIN, BACKOFF_MAX, STABLE_S = 0.5, 10.0, 30.0


def sluice_command(*args: str) -> list[str]:
    """The `sluice` binary (the bundle's executable) or the interpreter with the package."""
    if getattr(sys, "frozen", False):
        return [sys.executable, *args]
    return [sys.executable, "-m", "sluice", *args]


def render_config(config: SpeakerConfig, bridge: list[str]) -> str:
    """ExaBGP's config file: the API process and one block per neighbour."""
    run = " ".join(bridge)
    lines = ["process sluice {", f"    run {run};", "    encoder json;", "}"]
    for n in config.neighbors:
        family = "ipv6 unicast" if n.version == 6 else "ipv4 unicast"
        lines += [
            f"neighbor {n.address} {{",
            f"    router-id {config.router_id};",
            f"    local-address {n.local_address or 'auto'};",
            f"    local-as {config.local_as};",
            f"    peer-as {n.remote_as};",
            f"    hold-time {n.hold_time};",
            f"    connect {n.port};",
            "    passive false;",
        ]
        if n.multihop is not None:
            lines.append(f"    outgoing-ttl {n.multihop};")
        if n.password:
            lines.append(f'    md5-password "{n.password}";')
        lines += [
            f"    family {{ {family}; }}",
            "    api { processes [ sluice ]; neighbor-changes; }",
            "}",
        ]
    return "\n".join(lines) + "\n"


# Prefixes per message: ExaBGP takes one command at a time, so a thousand vips with the
# same attributes go as one `announce attributes ... nlri P1 P2 ...` (1000 single
# announcements took it 10 s); well under its 1 MB line limit.
NLRI_PER_LINE = 1000


def attributes(route: Route) -> str:
    parts = [f"next-hop {route.next_hop or 'self'}"]
    if route.med is not None:
        parts.append(f"med {route.med}")
    if route.local_pref is not None:
        parts.append(f"local-preference {route.local_pref}")
    if route.communities:
        parts.append(f"community [ {' '.join(route.communities)} ]")
    if route.as_path:
        parts.append(f"as-path [ {' '.join(str(a) for a in route.as_path)} ]")
    return " ".join(parts)


def _grouped(neighbor: str, verb: str, routes: list[Route], key: Any) -> list[str]:
    """One `neighbor N <verb> attributes A nlri P...` per attribute set (and chunk)."""
    groups: dict[str, list[str]] = {}
    for route in routes:
        groups.setdefault(key(route), []).append(route.prefix)
    lines = []
    for attrs, prefixes in groups.items():
        for i in range(0, len(prefixes), NLRI_PER_LINE):
            chunk = " ".join(prefixes[i:i + NLRI_PER_LINE])
            lines.append(f"neighbor {neighbor} {verb} attributes {attrs} nlri {chunk}")
    return lines


def announce_lines(neighbor: str, routes: list[Route]) -> list[str]:
    return _grouped(neighbor, "announce", routes, attributes)


def withdraw_lines(neighbor: str, routes: list[Route]) -> list[str]:
    # A withdrawal names only the prefixes (the next hop is syntax ExaBGP asks for).
    return _grouped(neighbor, "withdraw", routes,
                    lambda r: f"next-hop {r.next_hop or 'self'}")  # fmt: skip


def diff_lines(sent: Routes, wanted: Routes, resend: frozenset[str] = frozenset()) -> list[str]:
    """Messages that turn `sent` into `wanted`; neighbours in `resend` get all of theirs.
    IPv4 and IPv6 never share a line (they go to different neighbours)."""
    lines: list[str] = []
    for neighbor in sorted(set(sent) | set(wanted)):
        old, new = sent.get(neighbor, {}), wanted.get(neighbor, {})
        gone = [route for prefix, route in old.items() if prefix not in new]
        changed = [route for prefix, route in new.items()
                   if neighbor in resend or old.get(prefix) != route]  # fmt: skip
        lines += withdraw_lines(neighbor, gone) + announce_lines(neighbor, changed)
    return lines


class _Speaker:
    """One ExaBGP process (for one neighbour), its bridge and its supervisor thread."""

    def __init__(self, workdir: Path, command: list[str] | None = None) -> None:
        self.workdir = workdir
        self.command = command or sluice_command("bgp-speaker")
        self.bridge_command = sluice_command("bgp-bridge")
        self.restarts = 0
        self._lock = threading.Lock()
        self._config: SpeakerConfig | None = None
        self._wanted: Routes = {}
        self._sent: Routes = {}  # what the current speaker was told (supervisor thread only)
        self._sessions: dict[str, dict[str, Any]] = {}
        self._state = "stopped"
        self._error: str | None = None
        self._restart = threading.Event()
        self._stopping = threading.Event()
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_w, False)
        self._thread: threading.Thread | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self.acks = self.errors = 0
        self.on_session: OnSession | None = None

    def start(self, config: SpeakerConfig) -> None:
        self.workdir.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(self.workdir, 0o700)  # the config file holds MD5 keys
        self._config = config
        # Made by the calling thread: the speaker it forks inherits its network namespace,
        # and the parent-death signal is tied to this thread, which lives as long as BGP.
        self._thread = threading.Thread(target=self._supervise, name="bgp-super", daemon=True)
        self._thread.start()

    def configure(self, config: SpeakerConfig) -> None:
        with self._lock:
            if config == self._config:
                return
            self._config = config
        self._restart.set()
        self._wake()

    def set_routes(self, routes: Routes) -> None:
        with self._lock:
            self._wanted = {n: dict(r) for n, r in routes.items()}
        self._wake()

    def stop(self) -> None:
        self.request_stop()
        self.join()

    def request_stop(self) -> None:
        self._stopping.set()
        self._wake()

    def join(self) -> None:
        if self._thread is not None:
            self._thread.join(STOP_TIMEOUT * 2)

    def status(self) -> dict[str, Any]:
        with self._lock:
            config, sessions = self._config, {k: dict(v) for k, v in self._sessions.items()}
            wanted = {n: len(r) for n, r in self._wanted.items()}
        rows = []
        for n in config.neighbors if config else ():
            row = {"address": n.address, "remote-as": n.remote_as,
                   "session-state": "idle", **sessions.get(n.address, {})}  # fmt: skip
            row["prefixes-sent"] = wanted.get(n.address, 0) if row["session-state"] == \
                "established" else 0
            rows.append(row)
        out: dict[str, Any] = {"speaker": self._state, "restarts": self.restarts,
                               "neighbor": rows}  # fmt: skip
        if self._proc is not None and self._state == "running":
            out["pid"] = self._proc.pid
        if self._error:
            out["error"] = self._error
        return out

    # -- the supervisor thread ---------------------------------------------------------------
    def _wake(self) -> None:
        if self._state == "stopped" and self._thread is not None and not self._thread.is_alive():
            return  # its pipe is closed (the number may be another file's now)
        with contextlib.suppress(BlockingIOError, OSError):
            os.write(self._wake_w, b"x")

    def _drain_wake(self) -> None:
        with contextlib.suppress(BlockingIOError, OSError):
            os.read(self._wake_r, 4096)

    def _supervise(self) -> None:
        sock_path = self.workdir / "bridge.sock"
        with contextlib.suppress(FileNotFoundError):
            sock_path.unlink()
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(str(sock_path))
        os.chmod(sock_path, 0o600)
        listener.listen(1)
        backoff = BACKOFF_MIN
        try:
            while not self._stopping.is_set():
                self._restart.clear()
                started = time.monotonic()
                try:
                    self._run_once(listener, sock_path)
                except Exception as exc:  # supervision goes on whatever one speaker did
                    log.exception("bgp speaker failed")
                    self._error = str(exc) or type(exc).__name__
                self._set_sessions_down()
                if self._stopping.is_set():
                    break
                if self._restart.is_set():
                    backoff = BACKOFF_MIN
                    continue  # a new config: at once
                self.restarts += 1
                if time.monotonic() - started >= STABLE_S:
                    backoff = BACKOFF_MIN
                self._state = "restarting"
                log.error("bgp speaker exited; restarting", extra={"restart_in_s": backoff})
                if self._stopping.wait(backoff):
                    break
                backoff = min(backoff * 2, BACKOFF_MAX)
        finally:
            listener.close()
            with contextlib.suppress(FileNotFoundError):
                sock_path.unlink()
            self._state = "stopped"
            for fd in (self._wake_r, self._wake_w):
                with contextlib.suppress(OSError):
                    os.close(fd)

    def _run_once(self, listener: socket.socket, sock_path: Path) -> None:
        with self._lock:
            config = self._config
        assert config is not None
        conf = self.workdir / "exabgp.conf"
        fd = os.open(conf, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(render_config(config, [*self.bridge_command, str(sock_path)]))
        env = {**os.environ, PARENT_ENV: str(os.getpid())}
        self._state, self._error = "starting", None
        # stdout and stderr: the daemon's (ExaBGP logs at WARNING to stderr).
        proc = subprocess.Popen([*self.command, str(conf)], stdin=subprocess.DEVNULL,
                                env=env, cwd=self.workdir)  # fmt: skip
        self._proc = proc
        log.info("bgp speaker started", extra={"pid": proc.pid,
                                               "neighbors": len(config.neighbors)})
        try:
            conn = self._accept(listener, proc)
            if conn is None:
                return
            with conn:
                self._state = "running"
                self._serve(conn, proc)
        finally:
            self._end(proc)

    def _accept(self, listener: socket.socket, proc: subprocess.Popen[bytes]) -> \
            socket.socket | None:  # fmt: skip
        deadline = time.monotonic() + BRIDGE_TIMEOUT
        listener.settimeout(0.2)
        while time.monotonic() < deadline:
            if self._stopping.is_set() or self._restart.is_set():
                return None
            if proc.poll() is not None:
                self._error = f"speaker exited with status {proc.returncode} before its bridge"
                return None
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            conn.settimeout(SEND_TIMEOUT)
            return conn
        self._error = f"speaker's bridge did not connect within {BRIDGE_TIMEOUT:.0f} s"
        return None

    def _serve(self, conn: socket.socket, proc: subprocess.Popen[bytes]) -> None:
        self._sent = {}
        resend: set[str] = set()
        buf = b""
        sel = selectors.DefaultSelector()
        sel.register(conn, selectors.EVENT_READ, "conn")
        sel.register(self._wake_r, selectors.EVENT_READ, "wake")
        try:
            while not self._stopping.is_set() and not self._restart.is_set():
                # Send what changed (and everything to a session that just came up: a speaker
                # that forgot nothing makes that a no-op for the peer).
                with self._lock:
                    wanted = self._wanted
                lines = diff_lines(self._sent, wanted, frozenset(resend))
                resend.clear()
                if lines:
                    conn.sendall(("\n".join(lines) + "\n").encode())
                    self._sent = wanted
                for key, _ in sel.select(1.0):
                    if key.data == "wake":
                        self._drain_wake()
                        continue
                    data = conn.recv(65536)
                    if not data:
                        return  # the bridge (so the speaker) is gone
                    buf += data
                    *complete, buf = buf.split(b"\n")
                    for line in complete:
                        up = self._handle(line)
                        if up:
                            resend.add(up)
                if proc.poll() is not None:
                    return
        finally:
            sel.close()

    def _handle(self, line: bytes) -> str | None:
        """One line from ExaBGP; returns the neighbour whose session just came up."""
        text = line.strip()
        if not text:
            return None
        if text == b"done":
            self.acks += 1
            return None
        if text.startswith(b"error"):
            self.errors += 1
            log.error("bgp speaker refused a command", extra={"answer": text[:200].decode()})
            return None
        try:
            msg = json.loads(text)
        except ValueError:
            log.warning("bgp speaker: unreadable message", extra={"line": text[:200].decode(
                errors="replace")})  # fmt: skip
            return None
        if msg.get("type") != "state":
            return None
        neighbor = msg.get("neighbor") or {}
        peer = str((neighbor.get("address") or {}).get("peer", ""))
        state = {"up": "established"}.get(neighbor.get("state"), neighbor.get("state", "?"))
        with self._lock:
            old = self._sessions.get(peer, {}).get("session-state")
            self._sessions[peer] = {"session-state": state, "since": _iso_now()}
        if old != state:
            level = logging.INFO if state in ("established", "connected") else logging.WARNING
            log.log(level, "bgp session changed", extra={"neighbor": peer, "state": state})
            self._tell(peer, old or "idle", state)
        return peer if state == "established" else None

    def _tell(self, peer: str, old: str, new: str) -> None:
        if self.on_session is None or self._stopping.is_set():
            return  # stopping on purpose: not news
        try:
            self.on_session(peer, old, new)
        except Exception:
            log.exception("bgp: session callback failed")

    def _set_sessions_down(self) -> None:
        changed = []
        with self._lock:
            for peer, row in self._sessions.items():
                if row.get("session-state") != "down":
                    changed.append((peer, str(row.get("session-state"))))
                    row.update({"session-state": "down", "since": _iso_now()})
        for peer, old in changed:
            self._tell(peer, old, "down")
        self._sent = {}

    def _end(self, proc: subprocess.Popen[bytes]) -> None:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)  # ExaBGP closes its sessions (a CEASE)
            try:
                proc.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        log.info("bgp speaker stopped", extra={"pid": proc.pid, "status": proc.returncode})
        self._proc = None


class ExaBGPAdvertiser:
    """The Advertiser: one ExaBGP process per neighbour, so that adding, removing or changing
    one neighbour (ExaBGP reads neighbours from its config file only) restarts that session
    alone, never the others (all of this appliance's vips would leave the routers meanwhile).
    About 40 MB of memory per neighbour."""

    name = "exabgp"

    def __init__(self, workdir: Path, command: list[str] | None = None) -> None:
        self.workdir = workdir
        self.command = command
        self.on_session: OnSession | None = None
        self._lock = threading.Lock()
        self._speakers: dict[str, _Speaker] = {}
        self._wanted: Routes = {}
        self._retired = 0  # restarts of speakers since stopped

    @staticmethod
    def _split(config: SpeakerConfig) -> dict[str, SpeakerConfig]:
        return {n.address: SpeakerConfig(config.local_as, config.router_id, (n,))
                for n in config.neighbors}  # fmt: skip

    def _start_one(self, address: str, config: SpeakerConfig) -> _Speaker:
        safe = address.replace(":", "_")
        speaker = _Speaker(self.workdir / safe, self.command)
        speaker.on_session = self.on_session
        speaker.set_routes({address: dict(self._wanted.get(address, {}))})
        speaker.start(config)
        return speaker

    def start(self, config: SpeakerConfig) -> None:
        self.workdir.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.configure(config)

    def configure(self, config: SpeakerConfig) -> None:
        wanted = self._split(config)
        with self._lock:
            gone = [self._speakers.pop(a) for a in list(self._speakers) if a not in wanted]
            for address, one in wanted.items():
                speaker = self._speakers.get(address)
                if speaker is None:
                    self._speakers[address] = self._start_one(address, one)
                else:
                    speaker.configure(one)  # restarts it only if its session changed
        self._stop_all(gone)

    def set_routes(self, routes: Routes) -> None:
        with self._lock:
            self._wanted = {n: dict(r) for n, r in routes.items()}
            speakers = dict(self._speakers)
        for address, speaker in speakers.items():
            speaker.set_routes({address: self._wanted.get(address, {})})

    def stop(self) -> None:
        with self._lock:
            speakers, self._speakers = list(self._speakers.values()), {}
        self._stop_all(speakers)

    def _stop_all(self, speakers: list[_Speaker]) -> None:
        for speaker in speakers:  # all at once: their sessions close together
            speaker.request_stop()
        for speaker in speakers:
            speaker.join()
            self._retired += speaker.restarts

    def status(self) -> dict[str, Any]:
        with self._lock:
            speakers = dict(self._speakers)
        rows: list[dict[str, Any]] = []
        states, errors, restarts = [], [], self._retired
        for speaker in speakers.values():
            st = speaker.status()
            rows += st["neighbor"]
            states.append(st["speaker"])
            restarts += st["restarts"]
            if st.get("error"):
                errors.append(st["error"])
        # The worst state of any speaker stands for all (running only if all run).
        order = ("failed", "restarting", "starting", "stopped", "running")
        state = min(states, key=order.index) if states else "stopped"
        out: dict[str, Any] = {"speaker": state, "restarts": restarts, "neighbor": rows}
        if errors:
            out["error"] = errors[0]
        return out


def _iso_now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
