"""Network-namespace test kit: hosts, veth links, servers and bounded clients.

Load it as a pytest plugin (``pytest_plugins = ["netkit"]`` in ``tests/conftest.py``) and
ask for the ``netkit`` fixture::

    @pytest.mark.datapath
    def test_something(netkit):
        client, server = netkit.host("client"), netkit.host("server")
        link = netkit.link(client, server, ["198.18.0.1/24"], ["198.18.0.2/24"])
        server.start_http_server(8080)
        assert client.http_get("http://198.18.0.2:8080/") == "server"

Every host is a network namespace named ``sl-<id>-<name>`` where ``<id>`` is 8 hex digits
unique to one ``Topology``. Addresses must come from the test ranges 198.18.0.0/15 and
2001:db8::/32 (a project safety rule); anything else raises ``ValueError``. Nothing the kit
creates is visible in the root namespace except an optional bpffs pin directory.

Clean-up always runs: the fixture's finalizer (also when the test fails), an ``atexit``
handler and a SIGTERM handler close every live ``Topology``; a session-start sweep removes
what a killed run (SIGKILL) left behind. Each ``Topology`` holds an ``flock`` on
``/run/sluice-netkit/<id>.lock`` while it lives, so the sweep never touches namespaces of a
concurrent, still running test session.
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import functools
import ipaddress
import itertools
import os
import re
import secrets
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

import pytest

NS_PREFIX = "sl-"
# sl-<8 hex>-<host>: the sweep only ever touches names of exactly this shape.
NS_PATTERN = re.compile(r"^sl-([0-9a-f]{8})-[a-z][a-z0-9]{0,9}$")
HOST_NAME_PATTERN = re.compile(r"^[a-z][a-z0-9]{0,9}$")
LOCK_DIR = Path("/run/sluice-netkit")
BPFFS = Path("/sys/fs/bpf")
PIN_PREFIX = "sluice-test-"
ALLOWED_NETS = (
    ipaddress.ip_network("198.18.0.0/15"),  # RFC 2544 benchmarking
    ipaddress.ip_network("2001:db8::/32"),  # RFC 3849 documentation
)
SERVERS_SCRIPT = Path(__file__).with_name("netkit_servers.py")
# Upper bound for any set-up command (ip, sysctl): they take milliseconds when healthy.
SETUP_TIMEOUT = 10.0
SERVER_READY_TIMEOUT = 5.0
KILL_GRACE = 2.0


# --------------------------------------------------------------------------------------
# Address safety
# --------------------------------------------------------------------------------------


def check_test_network(cidr: str) -> ipaddress.IPv4Interface | ipaddress.IPv6Interface:
    """Return ``cidr`` parsed, or raise ValueError if it is not inside the test ranges.

    The whole network must fit, not just the address: ``198.18.0.1/8`` would install a
    connected route for 198.0.0.0/8 and is refused.
    """
    try:
        iface = ipaddress.ip_interface(cidr)
    except ValueError as exc:
        raise ValueError(f"not an address: {cidr!r}") from exc
    if not any(
        iface.version == net.version and iface.network.subnet_of(net)  # type: ignore[arg-type]
        for net in ALLOWED_NETS
    ):
        raise ValueError(
            f"{cidr} is outside the test ranges 198.18.0.0/15 and 2001:db8::/32 (refused)"
        )
    return iface


def check_test_address(addr: str, *, allow_loopback: bool = False) -> str:
    """Return ``addr`` (no prefix) if it lies in the test ranges, else raise ValueError."""
    ip = ipaddress.ip_address(addr)
    if allow_loopback and ip.is_loopback:
        return addr
    if not any(ip in net for net in ALLOWED_NETS):
        raise ValueError(f"{addr} is outside the test ranges 198.18.0.0/15 and 2001:db8::/32")
    return addr


# --------------------------------------------------------------------------------------
# Preconditions
# --------------------------------------------------------------------------------------


@functools.cache  # the answer does not change during a run
def netns_problem() -> str | None:
    """Why namespaces cannot be used here (not root, no ``ip netns``), or None if they can."""
    if os.geteuid() != 0:
        return "needs root (network namespaces, veth, tc)"
    if shutil.which("ip") is None:
        return "needs iproute2 (`ip`)"
    try:
        res = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"`ip netns list` failed: {exc}"
    if res.returncode != 0:
        return f"`ip netns` unusable: {res.stderr.strip()}"
    return None


def require_netns() -> None:
    """Skip the calling test (with a reason) when network namespaces are not usable."""
    problem = netns_problem()
    if problem:
        pytest.skip(problem)


# --------------------------------------------------------------------------------------
# Ports in the root namespace (the suite runs in two pytest-xdist workers)
# --------------------------------------------------------------------------------------

# Listeners in the root namespace (a daemon's doors on 127.0.0.1, a test's own server) take
# their port from free_port(). Each xdist worker draws from its own block below the kernel's
# ephemeral range (32768-60999), so the two workers never hand out the same port, and no
# outgoing connection (ephemeral ports) can take it between the pick and the listener's bind.
# Inside a test's namespaces any fixed port is fine: nobody else is there.
PORT_BASE, PORT_BLOCK = 21000, 2500  # 21000-23499 gw0, 23500-25999 gw1, ... (< 32768)
_port_next: dict[int, int] = {}  # socket type -> next offset in this worker's block
_port_lock = threading.Lock()


def worker_index() -> int:
    """This pytest-xdist worker's number (gw3 -> 3); 0 without xdist."""
    name = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
    return int(name[2:]) if name[2:].isdigit() else 0


def free_port(kind: str = "tcp", host: str = "127.0.0.1") -> int:
    """A port nothing on ``host`` uses now, for a listener a test starts in the root namespace.

    ``kind``: "tcp" or "udp". Ports go round this worker's block (a port just closed is not
    handed out again soon; the start depends on the pid, so two concurrent sessions on one
    machine rarely start at the same place), and each is checked by binding it without
    SO_REUSEADDR (so one in TIME_WAIT is skipped too).
    """
    stype = {"tcp": socket.SOCK_STREAM, "udp": socket.SOCK_DGRAM}[kind]
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    base = PORT_BASE + (worker_index() % 4) * PORT_BLOCK
    with _port_lock:
        for _ in range(PORT_BLOCK):
            offset = _port_next.get(stype, (os.getpid() * 7919) % PORT_BLOCK)
            _port_next[stype] = (offset + 1) % PORT_BLOCK
            port = base + offset
            with socket.socket(family, stype) as s:
                try:
                    s.bind((host, port))
                except OSError:
                    continue
            return port
    raise RuntimeError(f"no free {kind} port in {base}-{base + PORT_BLOCK - 1} on {host}")


# --------------------------------------------------------------------------------------
# Small subprocess helpers
# --------------------------------------------------------------------------------------


class CommandError(subprocess.CalledProcessError):
    """A kit command failed; unlike CalledProcessError, str() includes its stderr."""

    def __str__(self) -> str:
        err = (
            self.stderr
            if isinstance(self.stderr, str)
            else (self.stderr or b"").decode(errors="replace")
        )
        return f"{super().__str__()}\n{err.strip()}"


def _run(
    cmd: Sequence[str],
    *,
    timeout: float = SETUP_TIMEOUT,
    check: bool = True,
    input: str | bytes | None = None,
    text: bool = True,
) -> subprocess.CompletedProcess[Any]:
    """subprocess.run with captured output and a timeout; CommandError if check fails."""
    res = subprocess.run(
        list(cmd), capture_output=True, text=text, timeout=timeout, input=input, check=False
    )
    if check and res.returncode != 0:
        raise CommandError(res.returncode, res.args, res.stdout, res.stderr)
    return res


def list_netns() -> list[str]:
    """Names of the named network namespaces (``ip netns list``)."""
    res = _run(["ip", "netns", "list"], check=False)
    # Lines look like "name" or "name (id: 3)".
    return [line.split()[0] for line in res.stdout.splitlines() if line.strip()]


def _kill_netns_pids(ns: str) -> None:
    """SIGKILL every process still living in ``ns`` (it would keep the namespace alive)."""
    res = _run(["ip", "netns", "pids", ns], check=False)
    for pid in res.stdout.split():
        with contextlib.suppress(ProcessLookupError, ValueError):
            os.kill(int(pid), signal.SIGKILL)


def _delete_netns(ns: str) -> None:
    _kill_netns_pids(ns)
    res = _run(["ip", "netns", "del", ns], check=False)
    if res.returncode != 0 and ns in list_netns():
        raise RuntimeError(f"cannot delete netns {ns}: {res.stderr.strip()}")


# --------------------------------------------------------------------------------------
# Processes and servers
# --------------------------------------------------------------------------------------


@dataclass(eq=False)  # identity semantics: hashable, compared with `is`
class Server:
    """A server process started by the kit in a host; killed at teardown."""

    host: Host
    kind: str
    addr: str
    port: int
    proc: subprocess.Popen[bytes]
    log: Path  # its stderr, handy when a test fails

    def stop(self) -> None:
        """Stop the server now (teardown would do it anyway)."""
        _terminate(self.proc)


def _terminate(proc: subprocess.Popen[Any]) -> None:
    """SIGTERM the process group, then SIGKILL after a bounded grace period."""
    if proc.poll() is None:
        # Started with start_new_session=True, so pid == pgid: the group holds its children.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=KILL_GRACE)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=KILL_GRACE)
    for stream in (proc.stdin, proc.stdout, proc.stderr):
        if stream is not None:
            with contextlib.suppress(OSError):
                stream.close()


def _wait_ready(proc: subprocess.Popen[bytes], log: Path, deadline: float) -> None:
    """Block until the server prints READY, exits, or the deadline passes (no sleeping)."""
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    buf = b""
    while b"\n" not in buf:
        left = deadline - time.monotonic()
        if left <= 0:
            _terminate(proc)
            raise TimeoutError(f"server not ready in time: {proc.args}\n{_tail(log)}")
        readable, _, _ = select.select([fd], [], [], left)
        if readable:
            chunk = os.read(fd, 256)
            if not chunk:  # EOF: the server died before it was ready
                proc.wait(timeout=KILL_GRACE)
                raise RuntimeError(
                    f"server exited ({proc.returncode}) before ready: {proc.args}\n{_tail(log)}"
                )
            buf += chunk
    if not buf.startswith(b"READY"):
        raise RuntimeError(f"unexpected server output {buf!r}")


def _tail(log: Path, limit: int = 2000) -> str:
    try:
        return log.read_text(errors="replace")[-limit:]
    except OSError:
        return ""


# --------------------------------------------------------------------------------------
# Hosts and links
# --------------------------------------------------------------------------------------


@dataclass(eq=False)  # identity semantics: hashable, compared with `is`
class Host:
    """One network namespace. Create with ``Topology.host(name)``."""

    topo: Topology
    name: str
    ns: str
    procs: list[subprocess.Popen[Any]] = field(default_factory=list)
    logs: dict[int, Path] = field(default_factory=dict)  # pid -> log of popen()/servers

    # --- running things -----------------------------------------------------------------

    def exec_prefix(self) -> list[str]:
        """The argv prefix that runs a command inside this namespace."""
        return ["ip", "netns", "exec", self.ns]

    def run(
        self,
        cmd: Sequence[str],
        timeout: float = 10.0,
        check: bool = False,
        input: str | bytes | None = None,
        text: bool = True,
    ) -> subprocess.CompletedProcess[Any]:
        """Run ``cmd`` in the namespace, output captured, killed after ``timeout`` seconds."""
        return _run(
            [*self.exec_prefix(), *cmd], timeout=timeout, check=check, input=input, text=text
        )

    def popen(self, cmd: Sequence[str], **kwargs: Any) -> subprocess.Popen[Any]:
        """Start ``cmd`` in the namespace in the background; it is killed at teardown.

        stdout/stderr default to a log file in the topology's temp dir, ``self.logs[pid]``
        (a pipe nobody reads would eventually block the process).
        """
        log = self.topo.new_log(self.name)
        kwargs.setdefault("stdin", subprocess.DEVNULL)
        with open(log, "wb") as out:
            kwargs.setdefault("stdout", out)
            kwargs.setdefault("stderr", out)
            # Own session: teardown signals the whole process group.
            kwargs.setdefault("start_new_session", True)
            proc = subprocess.Popen([*self.exec_prefix(), *cmd], **kwargs)
        self.procs.append(proc)
        self.logs[proc.pid] = log
        return proc

    def _start_server(self, kind: str, port: int, addr: str, extra: Sequence[str] = ()) -> Server:
        if addr not in ("::", "0.0.0.0"):  # wildcards bind only inside the namespace
            check_test_address(addr, allow_loopback=True)
        log = self.topo.new_log(self.name)
        cmd = [
            sys.executable, str(SERVERS_SCRIPT), kind, "--addr", addr, "--port", str(port),
            *extra,
        ]  # fmt: skip
        with open(log, "wb") as err:
            proc = subprocess.Popen(
                [*self.exec_prefix(), *cmd],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,  # the READY line
                stderr=err,
                start_new_session=True,
            )
        self.procs.append(proc)
        self.logs[proc.pid] = log
        _wait_ready(proc, log, time.monotonic() + SERVER_READY_TIMEOUT)
        return Server(self, kind, addr, port, proc, log)

    def start_http_server(self, port: int, addr: str = "::", body: str | None = None) -> Server:
        """HTTP/1.0 server answering every GET with ``body`` (default: the host's name).

        Returns once the socket is listening. ``::`` is dual-stack (v4 and v6).
        """
        return self._start_server(
            "http", port, addr, ["--body", self.name if body is None else body]
        )

    def start_tcp_echo(self, port: int, addr: str = "::") -> Server:
        """TCP server echoing each connection's bytes until the client half-closes."""
        return self._start_server("tcp-echo", port, addr)

    def start_udp_echo(self, port: int, addr: str = "::") -> Server:
        """UDP server sending every datagram back to its sender."""
        return self._start_server("udp-echo", port, addr)

    # --- clients (each bounded by a timeout) -------------------------------------------

    def http_get(self, url: str, timeout: float = 3.0) -> str:
        """GET ``url`` with curl from this host and return the body; raise on any failure."""
        host = urllib.parse.urlsplit(url).hostname or ""
        check_test_address(host, allow_loopback=True)
        res = self.run(
            # --noproxy: a proxy from the environment must never see test traffic.
            # -g: no globbing, so [2001:db8::1] works as a literal address.
            ["curl", "-sS", "--fail", "-g", "--noproxy", "*", "--max-time", str(timeout), url],
            timeout=timeout + 2,
        )
        if res.returncode != 0:
            raise RuntimeError(f"GET {url} from {self.name}: {res.stderr.strip()}")
        return res.stdout

    def udp_request(self, addr: str, port: int, data: bytes, timeout: float = 2.0) -> bytes:
        """Send one datagram and return the first answer; raise TimeoutError without one."""
        return self._client("udp-client", addr, port, data, timeout)

    def tcp_request(self, addr: str, port: int, data: bytes, timeout: float = 2.0) -> bytes:
        """Connect, send ``data``, half-close, return everything read until EOF."""
        return self._client("tcp-client", addr, port, data, timeout)

    def _client(self, kind: str, addr: str, port: int, data: bytes, timeout: float) -> bytes:
        check_test_address(addr, allow_loopback=True)
        cmd = [
            sys.executable, str(SERVERS_SCRIPT), kind,
            "--addr", addr, "--port", str(port), "--timeout", str(timeout),
        ]  # fmt: skip
        res = self.run(cmd, timeout=timeout + 5, input=data, text=False)
        if res.returncode != 0:
            raise TimeoutError(
                f"{kind} {addr}:{port} from {self.name}: {res.stderr.decode(errors='replace')}"
            )
        return res.stdout

    def ping(self, addr: str, count: int = 1, timeout: float = 2.0) -> bool:
        """True if all ``count`` echo requests were answered within ``timeout`` seconds."""
        check_test_address(addr, allow_loopback=True)
        deadline = max(1, int(timeout + 0.999))  # ping -w takes whole seconds
        res = self.run(
            # -i 0.05: quick bursts (root may go below 0.2 s); -c and -w together make ping
            # exit 0 only if all `count` replies arrived before the deadline.
            ["ping", "-n", "-q", "-c", str(count), "-i", "0.05", "-w", str(deadline), addr],
            timeout=deadline + 3,
        )
        return res.returncode == 0

    # --- configuration ------------------------------------------------------------------

    def add_route(self, dst: str, via: str) -> None:
        """``ip route add dst via via`` in this host; ``dst`` may be ``default``."""
        gw = check_test_address(via)
        family = "-6" if ipaddress.ip_address(gw).version == 6 else "-4"
        if dst != "default":
            check_test_network(dst)
        _run(["ip", "-n", self.ns, family, "route", "add", dst, "via", gw])

    def ifindex(self, ifname: str) -> int:
        """The index of ``ifname`` in this namespace."""
        path = f"/sys/class/net/{ifname}/ifindex"
        return int(self.run(["cat", path], check=True).stdout)


@dataclass(eq=False)  # identity semantics: hashable, compared with `is`
class Link:
    """A veth pair joining two hosts."""

    a: Host
    b: Host
    a_ifname: str
    b_ifname: str
    a_addrs: list[str]
    b_addrs: list[str]

    def ifname(self, host: Host) -> str:
        """The name of this link's interface inside ``host``."""
        if host is self.a:
            return self.a_ifname
        if host is self.b:
            return self.b_ifname
        raise ValueError(f"{host.name} is not on this link")

    def addrs(self, host: Host) -> list[str]:
        """The CIDR addresses of ``host``'s end."""
        return self.a_addrs if host is self.a else self.b_addrs if host is self.b else []

    def addr(self, host: Host, version: int = 4) -> str:
        """The first address (no prefix) of the given IP version on ``host``'s end."""
        for cidr in self.addrs(host):
            iface = ipaddress.ip_interface(cidr)
            if iface.version == version:
                return str(iface.ip)
        raise LookupError(f"no IPv{version} address for {host.name} on this link")


# --------------------------------------------------------------------------------------
# Topology
# --------------------------------------------------------------------------------------

_live: dict[str, Topology] = {}
_live_lock = threading.Lock()
_handlers_installed = False
_prev_sigterm: Any = None


def _claim_id() -> tuple[str, int]:
    """Pick a unique topology id and return it with the fd of its held lock.

    The lock file is created and flocked under a private name, then hard-linked into place,
    so it never exists unlocked: a concurrent sweep cannot mistake it for a dead owner's.
    os.link fails if the name exists, which makes the id unique among live topologies.
    """
    LOCK_DIR.mkdir(parents=True, exist_ok=True)
    tmp = LOCK_DIR / f".{os.getpid()}-{threading.get_ident()}.tmp"
    fd = os.open(tmp, os.O_CREAT | os.O_TRUNC | os.O_RDWR, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.write(fd, f"{os.getpid()}\n".encode())
        for _ in range(100):
            topo_id = secrets.token_hex(4)
            try:
                os.link(tmp, LOCK_DIR / f"{topo_id}.lock")
            except FileExistsError:
                continue
            return topo_id, fd
        raise RuntimeError("cannot allocate a topology id")  # 100 collisions of 32 bits
    except BaseException:
        os.close(fd)
        raise
    finally:
        tmp.unlink()


class Topology:
    """A set of namespaces, links, processes and pin dirs that are all removed by close()."""

    def __init__(self) -> None:
        problem = netns_problem()
        if problem:
            raise RuntimeError(f"network namespaces unavailable: {problem}")
        _install_handlers()
        self.id, self._lock_fd = _claim_id()
        self._lock_path = LOCK_DIR / f"{self.id}.lock"
        self.hosts: dict[str, Host] = {}
        self.links: list[Link] = []
        self._pin_dirs: list[Path] = []
        self._link_no = itertools.count(1)
        self._log_no = itertools.count(1)
        self._tmp = Path(tempfile.mkdtemp(prefix=f"sluice-netkit-{self.id}-"))
        self.closed = False
        # Forked children (pyroute2 forks to open netns sockets, multiprocessing, ...)
        # inherit this object and our signal handler; only the creator may tear down.
        self.owner_pid = os.getpid()
        with _live_lock:
            _live[self.id] = self

    def __enter__(self) -> Topology:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def namespaces(self) -> list[str]:
        """Names of the namespaces this topology created."""
        return [h.ns for h in self.hosts.values()]

    def new_log(self, host: str) -> Path:
        """A fresh log file path for a background process of ``host``."""
        return self._tmp / f"{host}-{next(self._log_no)}.log"

    def host(self, name: str) -> Host:
        """Create a namespace ``sl-<id>-<name>`` with lo up and v4/v6 forwarding on."""
        if self.closed:
            raise RuntimeError("topology is closed")
        if not HOST_NAME_PATTERN.match(name):
            raise ValueError(f"host name {name!r}: 1-10 chars of [a-z0-9], starting with a letter")
        if name in self.hosts:
            raise ValueError(f"host {name!r} exists")
        ns = f"{NS_PREFIX}{self.id}-{name}"
        _run(["ip", "netns", "add", ns])
        # Register before configuring, so a failure below still gets the namespace removed.
        host = self.hosts[name] = Host(self, name, ns)
        _run(["ip", "-n", ns, "link", "set", "lo", "up"])
        sysctls = {
            "net.ipv4.ip_forward": 1,
            "net.ipv6.conf.all.forwarding": 1,
            "net.ipv6.conf.default.forwarding": 1,
            # No DAD at all: link-local addresses are usable at once too (globals get nodad).
            "net.ipv6.conf.all.accept_dad": 0,
            "net.ipv6.conf.default.accept_dad": 0,
        }
        host.run(["sysctl", "-q", "-w", *(f"{k}={v}" for k, v in sysctls.items())], check=True)
        return host

    def link(
        self,
        a: Host,
        b: Host,
        a_addrs: Sequence[str] = (),
        b_addrs: Sequence[str] = (),
    ) -> Link:
        """Join ``a`` and ``b`` with a veth pair, both ends up with the given addresses."""
        if self.closed:
            raise RuntimeError("topology is closed")
        if a is b or a.topo is not self or b.topo is not self:
            raise ValueError("a link joins two different hosts of this topology")
        # Validate everything before creating anything.
        parsed = {side: [check_test_network(c) for c in addrs]
                  for side, addrs in (("a", a_addrs), ("b", b_addrs))}  # fmt: skip
        n = next(self._link_no)
        # Unique across the machine (id), short (<= 13 of the 15 chars IFNAMSIZ allows).
        a_if, b_if = f"v{self.id}-{n}a", f"v{self.id}-{n}b"
        # Created directly in the two namespaces: nothing ever appears in the root one.
        _run(["ip", "-n", a.ns, "link", "add", a_if, "type", "veth",
              "peer", "name", b_if, "netns", b.ns])  # fmt: skip
        for host, ifname, addrs in ((a, a_if, parsed["a"]), (b, b_if, parsed["b"])):
            # Up first, addresses second: with the opposite order the first IPv6 neighbour
            # solicitation went unanswered here and the first v6 packet waited 1 s for the
            # retransmit.
            lines = [f"link set {ifname} up"]
            for iface in addrs:
                nodad = " nodad" if iface.version == 6 else ""
                lines.append(f"address add {iface.with_prefixlen} dev {ifname}{nodad}")
            # One `ip` process per side instead of one per address.
            _run(["ip", "-n", host.ns, "-batch", "-"], input="\n".join(lines) + "\n")
        link = Link(a, b, a_if, b_if, [str(i) for i in parsed["a"]], [str(i) for i in parsed["b"]])
        self.links.append(link)
        return link

    def pin_dir(self, name: str | None = None) -> Path:
        """Create and return a bpffs directory under /sys/fs/bpf/sluice-test-<id>/.

        The whole ``sluice-test-<id>`` directory is removed at close().
        """
        if not os.path.ismount(BPFFS):
            pytest.skip(f"bpffs is not mounted at {BPFFS}")
        base = BPFFS / f"{PIN_PREFIX}{self.id}"
        base.mkdir(exist_ok=True)
        if base not in self._pin_dirs:
            self._pin_dirs.append(base)
        path = base / (name or f"p{len(list(base.iterdir())) + 1}")
        path.mkdir()
        return path

    def close(self) -> None:
        """Kill processes, delete namespaces and pin dirs. Idempotent; raises if a step failed.

        Every step runs even if an earlier one failed, so one problem does not leak the rest.
        """
        if self.closed or os.getpid() != self.owner_pid:
            return
        self.closed = True
        errors: list[str] = []
        for host in self.hosts.values():
            for proc in host.procs:
                try:
                    _terminate(proc)
                except Exception as exc:
                    errors.append(f"kill {proc.args}: {exc}")
        for ns in self.namespaces:
            try:
                _delete_netns(ns)
            except Exception as exc:
                errors.append(str(exc))
        for path in self._pin_dirs:
            try:
                shutil.rmtree(path)
            except FileNotFoundError:
                pass
            except Exception as exc:
                errors.append(f"rm {path}: {exc}")
        shutil.rmtree(self._tmp, ignore_errors=True)
        with contextlib.suppress(OSError):
            self._lock_path.unlink()
        with contextlib.suppress(OSError):
            os.close(self._lock_fd)  # releases the flock
        with _live_lock:
            _live.pop(self.id, None)
        if errors:
            raise RuntimeError("netkit teardown problems:\n" + "\n".join(errors))


# --------------------------------------------------------------------------------------
# Clean-up on exit, on SIGTERM, and of earlier killed runs
# --------------------------------------------------------------------------------------


def close_all() -> None:
    """Close every live Topology this process created (best effort, never raises)."""
    with _live_lock:
        topos = [t for t in _live.values() if t.owner_pid == os.getpid()]
    for topo in topos:
        with contextlib.suppress(Exception):
            topo.close()


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    close_all()
    prev = _prev_sigterm
    signal.signal(signal.SIGTERM, prev if prev is not None else signal.SIG_DFL)
    if callable(prev):
        prev(signum, frame)
    elif prev != signal.SIG_IGN:
        # Die the way we would have without the handler (exit status 143 to the parent).
        os.kill(os.getpid(), signum)


def _install_handlers() -> None:
    global _handlers_installed, _prev_sigterm
    if _handlers_installed:
        return
    atexit.register(close_all)
    # signal.signal only works in the main thread; elsewhere atexit + finalizers remain.
    if threading.current_thread() is threading.main_thread():
        _prev_sigterm = signal.signal(signal.SIGTERM, _on_sigterm)
    _handlers_installed = True


def _owner_alive(topo_id: str) -> bool:
    """True if a live process holds the flock of topology ``topo_id``."""
    try:
        fd = os.open(LOCK_DIR / f"{topo_id}.lock", os.O_RDWR)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def sweep_leftovers() -> list[str]:
    """Remove namespaces, pin dirs, log dirs, lock files of dead topologies; return what went.

    Only names of the kit's exact shape are considered, and only when no live process
    holds their topology's lock, so a concurrent test session is left alone.
    """
    if netns_problem():
        return []
    removed: list[str] = []
    dead: set[str] = set()
    for ns in list_netns():
        m = NS_PATTERN.match(ns)
        if m and not _owner_alive(m.group(1)):
            with contextlib.suppress(Exception):
                _delete_netns(ns)
                removed.append(ns)
            dead.add(m.group(1))
    if BPFFS.is_dir():
        for path in BPFFS.glob(f"{PIN_PREFIX}*"):
            topo_id = path.name[len(PIN_PREFIX) :]
            if re.fullmatch(r"[0-9a-f]{8}", topo_id) and not _owner_alive(topo_id):
                shutil.rmtree(path, ignore_errors=True)
                removed.append(str(path))
                dead.add(topo_id)
    # Log dirs of topologies that never reached close().
    for path in Path(tempfile.gettempdir()).glob("sluice-netkit-*"):
        m = re.fullmatch(r"sluice-netkit-([0-9a-f]{8})-.+", path.name)
        if m and path.is_dir() and not _owner_alive(m.group(1)):
            shutil.rmtree(path, ignore_errors=True)
    if LOCK_DIR.is_dir():
        for lock in LOCK_DIR.glob("*.lock"):
            if lock.stem in dead or not _owner_alive(lock.stem):
                with contextlib.suppress(OSError):
                    lock.unlink()
    return removed


# --------------------------------------------------------------------------------------
# pytest glue
# --------------------------------------------------------------------------------------


def pytest_sessionstart(session: pytest.Session) -> None:
    """Remove what an earlier, killed run left behind."""
    sweep_leftovers()


@pytest.fixture
def netkit() -> Iterator[Topology]:
    """A fresh Topology, closed after the test whatever its outcome."""
    require_netns()
    topo = Topology()
    try:
        yield topo
    finally:
        topo.close()
