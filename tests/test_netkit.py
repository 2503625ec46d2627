"""Tests of the network-namespace test kit (tests/netkit.py) itself."""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import netkit as kit
import pytest
from waiting import wait_for

TESTS_DIR = Path(__file__).resolve().parent

# Two subnets and their gateways, used by the routed topology.
C_NET4, C_NET6 = "198.18.1.0/24", "2001:db8:1::/64"
S_NET4, S_NET6 = "198.18.2.0/24", "2001:db8:2::/64"


def _routed(topo: kit.Topology) -> tuple[kit.Host, kit.Host, kit.Host]:
    """client — router — server, each side on its own v4 and v6 subnet."""
    client, router, server = topo.host("client"), topo.host("router"), topo.host("server")
    topo.link(
        client, router, ["198.18.1.2/24", "2001:db8:1::2/64"], ["198.18.1.1/24", "2001:db8:1::1/64"]
    )
    topo.link(
        router, server, ["198.18.2.1/24", "2001:db8:2::1/64"], ["198.18.2.2/24", "2001:db8:2::2/64"]
    )
    client.add_route(S_NET4, "198.18.1.1")
    client.add_route(S_NET6, "2001:db8:1::1")
    server.add_route(C_NET4, "198.18.2.1")
    server.add_route(C_NET6, "2001:db8:2::1")
    return client, router, server


def _pid_alive(pid: int) -> bool:
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    # Guard against pid reuse: only our server script counts.
    return b"netkit_servers.py" in cmdline


def _read_line(proc: subprocess.Popen[str], timeout: float) -> str:
    """First stdout line of ``proc``, waiting at most ``timeout`` seconds."""
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    assert ready, "child did not report in time"
    return proc.stdout.readline()


# A child process that builds a topology with a server, reports it, then waits to be
# signalled. Used to check the SIGTERM handler and the sweep after SIGKILL.
CHILD = textwrap.dedent(
    """
    import signal, sys
    sys.path.insert(0, {tests!r})
    import netkit
    topo = netkit.Topology()
    host = topo.host("a")
    server = host.start_udp_echo(7)
    print(topo.id, server.proc.pid, *topo.namespaces, flush=True)
    signal.pause()  # no sleep loop: wait until the parent signals us
    """
)


# --------------------------------------------------------------------------------------
# Address safety (no namespaces needed)
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "cidr", ["198.18.0.1/24", "198.19.255.254/15", "2001:db8::1/64", "2001:db8:ffff::1/48"]
)
def test_test_ranges_are_accepted(cidr: str) -> None:
    assert str(kit.check_test_network(cidr)) == cidr


@pytest.mark.parametrize(
    "cidr",
    [
        "10.0.0.1/24",
        "192.168.1.1/24",
        "198.20.0.1/24",  # just past 198.18.0.0/15
        "198.18.0.1/8",  # address inside, but the connected route would not be
        "2001:db9::1/64",
        "2001:db8::1/16",
        "fe80::1/64",
        "not-an-address",
    ],
)
def test_other_addresses_are_refused(cidr: str) -> None:
    with pytest.raises(ValueError):
        kit.check_test_network(cidr)


# --------------------------------------------------------------------------------------
# Traffic
# --------------------------------------------------------------------------------------


@pytest.mark.datapath
def test_ping_v4_and_v6_across_a_link(netkit: kit.Topology) -> None:
    a, b = netkit.host("a"), netkit.host("b")
    link = netkit.link(
        a, b, ["198.18.0.1/30", "2001:db8::1/64"], ["198.18.0.2/30", "2001:db8::2/64"]
    )

    assert link.ifname(a) == link.a_ifname and link.ifname(b) == link.b_ifname
    assert len(link.a_ifname) <= 15 and len(link.b_ifname) <= 15
    assert link.addr(b, 4) == "198.18.0.2" and link.addr(b, 6) == "2001:db8::2"
    assert a.ping("198.18.0.2", count=3)
    assert a.ping("2001:db8::2", count=3)
    assert b.ping("198.18.0.1") and b.ping("2001:db8::1")
    # And a negative: nobody owns .3, so the ping must fail (within its timeout).
    assert not a.ping("198.18.0.3", timeout=1)


@pytest.mark.datapath
def test_routed_three_hosts_ping_and_http(netkit: kit.Topology) -> None:
    client, router, server = _routed(netkit)
    server.start_http_server(8080)

    for addr in ("198.18.2.2", "2001:db8:2::2"):
        assert client.ping(addr, count=2), addr
    assert client.http_get("http://198.18.2.2:8080/") == "server"
    assert client.http_get("http://[2001:db8:2::2]:8080/") == "server"
    # The router forwards, so the server sees the client's own address as source: the
    # body is the server's name either way, and a second server can answer with its own.
    router.start_http_server(8081, body="hello from the router")
    assert client.http_get("http://198.18.1.1:8081/") == "hello from the router"


@pytest.mark.datapath
def test_http_server_takes_many_short_connections(netkit: kit.Topology) -> None:
    client, _, server = _routed(netkit)
    server.start_http_server(8080, addr="198.18.2.2")
    n = 100
    # One curl process, n URLs: n separate HTTP/1.0 connections, bounded by --max-time.
    res = client.run(
        ["curl", "-sS", "--fail", "--noproxy", "*", "--max-time", "10"]
        + ["http://198.18.2.2:8080/"] * n,
        timeout=15,
        check=True,
    )
    assert res.stdout == "server" * n


@pytest.mark.datapath
def test_udp_and_tcp_echo(netkit: kit.Topology) -> None:
    client, _, server = _routed(netkit)
    server.start_udp_echo(5353)
    server.start_tcp_echo(7070)
    payload = bytes(range(256)) * 4

    for addr in ("198.18.2.2", "2001:db8:2::2"):
        assert client.udp_request(addr, 5353, b"ping " + addr.encode()) == b"ping " + addr.encode()
        assert client.tcp_request(addr, 7070, payload) == payload
    # Nothing listens there: a bounded failure, not a hang.
    with pytest.raises(TimeoutError):
        client.tcp_request("198.18.2.2", 7071, b"x", timeout=1)
    with pytest.raises(TimeoutError):
        client.udp_request("198.18.2.2", 5354, b"x", timeout=1)


@pytest.mark.datapath
def test_addresses_outside_the_test_ranges_are_refused(netkit: kit.Topology) -> None:
    a, b = netkit.host("a"), netkit.host("b")
    for bad in (["10.0.0.1/24"], ["198.18.0.1/8"], ["2001:db9::1/64"]):
        with pytest.raises(ValueError):
            netkit.link(a, b, ["198.18.0.1/24"], bad)
    # Refused before anything was created: a has only lo.
    assert a.run(["ip", "-o", "link", "show"], check=True).stdout.count("\n") == 1

    netkit.link(a, b, ["198.18.0.1/24"], ["198.18.0.2/24"])
    with pytest.raises(ValueError):
        a.add_route("10.0.0.0/8", "198.18.0.2")
    with pytest.raises(ValueError):
        a.add_route("198.18.5.0/24", "192.0.2.1")
    for call in (
        lambda: a.ping("192.0.2.1"),
        lambda: a.http_get("http://192.0.2.1/"),
        lambda: a.udp_request("10.1.1.1", 53, b"x"),
        lambda: b.start_udp_echo(53, addr="10.1.1.1"),
    ):
        with pytest.raises(ValueError):
            call()


@pytest.mark.datapath
def test_host_names_are_checked() -> None:
    kit.require_netns()
    with kit.Topology() as topo:
        for bad in ("", "Upper", "1abc", "has-dash", "muchtoolongname"):
            with pytest.raises(ValueError):
                topo.host(bad)
        topo.host("ok")
        with pytest.raises(ValueError):
            topo.host("ok")


# --------------------------------------------------------------------------------------
# Teardown
# --------------------------------------------------------------------------------------


@pytest.mark.datapath
def test_close_removes_namespaces_processes_and_pins() -> None:
    kit.require_netns()
    topo = kit.Topology()
    try:
        a, b = topo.host("a"), topo.host("b")
        topo.link(a, b, ["198.18.0.1/30"], ["198.18.0.2/30"])
        server = b.start_tcp_echo(7)
        pins = topo.pin_dir("maps")
        (pins / "sub").mkdir()
        namespaces = topo.namespaces
        assert set(namespaces) <= set(kit.list_netns())
        assert all(ns.startswith(f"sl-{topo.id}-") for ns in namespaces)
        assert pins.parent == Path(f"/sys/fs/bpf/sluice-test-{topo.id}")
    finally:
        topo.close()

    assert not set(namespaces) & set(kit.list_netns())
    assert server.proc.poll() is not None
    assert not pins.parent.exists()
    assert not (kit.LOCK_DIR / f"{topo.id}.lock").exists()
    topo.close()  # idempotent


@pytest.mark.datapath
def test_teardown_runs_when_the_test_fails(tmp_path: Path) -> None:
    kit.require_netns()
    out = tmp_path / "inner.out"
    (tmp_path / "pytest.ini").write_text("[pytest]\n")  # pins rootdir to tmp_path
    (tmp_path / "conftest.py").write_text(
        f"import sys\nsys.path.insert(0, {str(TESTS_DIR)!r})\npytest_plugins = ['netkit']\n"
    )
    (tmp_path / "test_inner.py").write_text(
        textwrap.dedent(
            f"""
            from pathlib import Path

            def test_fails(netkit):
                a, b = netkit.host("a"), netkit.host("b")
                netkit.link(a, b, ["198.18.0.1/30"], ["198.18.0.2/30"])
                server = b.start_udp_echo(7)
                Path({str(out)!r}).write_text(
                    " ".join([str(server.proc.pid), *netkit.namespaces])
                )
                assert False, "deliberate failure"
            """
        )
    )
    res = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tmp_path)],
        cwd=tmp_path,
        # No plugin autoload: importing the venv's (hypothesis, schemathesis, xdist...) took
        # most of this run's seconds, and the inner run needs none of them.
        env={**os.environ, "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert res.returncode == 1, res.stdout + res.stderr
    assert "deliberate failure" in res.stdout
    pid, *namespaces = out.read_text().split()
    assert len(namespaces) == 2
    assert not set(namespaces) & set(kit.list_netns())
    wait_for(lambda: not _pid_alive(int(pid)), timeout=5, what="the server gone")  # async kill


@pytest.mark.datapath
def test_sigterm_cleans_up() -> None:
    kit.require_netns()
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD.format(tests=str(TESTS_DIR))],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        _topo_id, pid, *namespaces = _read_line(child, timeout=15).split()
        assert set(namespaces) <= set(kit.list_netns())
        child.send_signal(signal.SIGTERM)
        # The handler cleans up, then dies of SIGTERM as it would have without it.
        assert child.wait(timeout=15) == -signal.SIGTERM
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(timeout=5)
        child.stdout.close()  # type: ignore[union-attr]
    assert not set(namespaces) & set(kit.list_netns())
    wait_for(lambda: not _pid_alive(int(pid)), timeout=5, what="the server gone")  # async kill


@pytest.mark.datapath
def test_sweep_removes_leftovers_of_a_killed_run_only(netkit: kit.Topology) -> None:
    live = netkit.host("live")
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD.format(tests=str(TESTS_DIR))],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        topo_id, pid, *namespaces = _read_line(child, timeout=15).split()
        child.kill()  # no handler can run: this is what the session-start sweep is for
        child.wait(timeout=5)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(timeout=5)
        child.stdout.close()  # type: ignore[union-attr]
    assert set(namespaces) <= set(kit.list_netns())
    assert _pid_alive(int(pid))  # the server outlived its parent

    removed = kit.sweep_leftovers()

    assert set(namespaces) <= set(removed)
    assert not set(namespaces) & set(kit.list_netns())
    # SIGKILL is delivered asynchronously: on a loaded machine the server may still be
    # listed for a moment after the sweep returned.
    wait_for(lambda: not _pid_alive(int(pid)), timeout=5, what="the leftover server gone")
    assert not (kit.LOCK_DIR / f"{topo_id}.lock").exists()
    assert not list(Path(tempfile.gettempdir()).glob(f"sluice-netkit-{topo_id}-*"))
    # A topology that is still alive (ours) is left alone.
    assert live.ns in kit.list_netns()


@pytest.mark.datapath
def test_servers_are_ready_on_return(netkit: kit.Topology) -> None:
    # No retry loop on the client side: the first request must already find a listener.
    host = netkit.host("solo")
    start = time.monotonic()
    host.start_http_server(80, body="up")
    assert time.monotonic() - start < kit.SERVER_READY_TIMEOUT
    assert host.http_get("http://127.0.0.1/") == "up"
    assert host.http_get("http://[::1]/") == "up"
    # A server that cannot start (port taken) fails fast with its log, instead of hanging.
    with pytest.raises(RuntimeError, match="Address already in use"):
        host.start_http_server(80)


def test_free_ports_come_from_the_workers_own_block_and_skip_busy_ones(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Two xdist workers never hand out the same port (disjoint blocks below the ephemeral
    range), and a port something listens on is skipped."""
    import socket

    blocks = {}
    for worker in ("gw0", "gw1"):
        monkeypatch.setenv("PYTEST_XDIST_WORKER", worker)
        lo = kit.PORT_BASE + kit.worker_index() * kit.PORT_BLOCK
        ports = {kit.free_port("tcp") for _ in range(5)} | {kit.free_port("udp")}
        assert all(lo <= p < lo + kit.PORT_BLOCK < 32768 for p in ports), (worker, ports)
        blocks[worker] = ports
    assert not blocks["gw0"] & blocks["gw1"]
    monkeypatch.setenv("PYTEST_XDIST_WORKER", "gw0")
    with socket.socket() as squatter:
        nxt = kit.free_port("tcp")  # the one after it is what the next call would try
        squatter.bind(("127.0.0.1", nxt + 1))
        squatter.listen()
        assert kit.free_port("tcp") not in (nxt, nxt + 1)
