"""Firewall and egress SNAT through real namespaces (bpf/lib/firewall.h, fw_flow.h).

Topology (dpkit): client 198.18.0.1 / 2001:db8::1 --- lb --- bN 198.18.1N.1 / 2001:db8:1N::1.
The client reaches the backends' own addresses through the LB (routed, no service): those
flows are the firewall's alone; the VIP flows are balanced after the firewall let them in.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from dpkit import HTTP_PORT, UDP_PORT, VIP4, backend_addr, service

from appliance.config import Diff

pytestmark = pytest.mark.datapath


def set_fw(net: Any, rules: list[dict[str, Any]], policies: dict[str, str] | None = None,
           snat: list[dict[str, Any]] | None = None) -> None:  # fmt: skip
    fw = {
        "rule": rules,
        "interface": [{"name": n, "default-policy": p} for n, p in (policies or {}).items()],
    }
    diff = Diff(sections_changed={"sluice:firewall": (None, fw),
                                  "sluice:snat": (None, {"rule": snat or []})})  # fmt: skip
    net.rec.apply(diff)
    state = net.rec.firewall_state()
    assert state["error"] is None, state


def hits(net: Any, name: str) -> int:
    return next(r["packets"] for r in net.rec.firewall_state()["rules"] if r["name"] == name)


def http_ok(net: Any, addr: str, timeout: float = 2.0) -> bool:
    host = f"[{addr}]" if ":" in addr else addr
    try:
        net.client.http_get(f"http://{host}:{HTTP_PORT}/", timeout=timeout)
        return True
    except RuntimeError:
        return False


def refused_fast(fn: Any, limit: float = 1.5) -> bool:
    """fn() fails, and well before its own timeout: an answer (RST / ICMP), not silence."""
    started = time.monotonic()
    try:
        fn()
    except (RuntimeError, TimeoutError):
        return time.monotonic() - started < limit
    return False


@pytest.mark.parametrize("version", [4, 6])
def test_allow_drop_reject_per_field(lbnet: Any, version: int) -> None:
    net = lbnet
    b1, b2, b3 = (backend_addr(n, version) for n in (1, 2, 3))
    plen = 32 if version == 4 else 128
    client = "198.18.0.1" if version == 4 else "2001:db8::1"
    up = net.interfaces[0]
    rules = [
        # destination prefix + protocol + destination port: allow b1's web
        {
            "name": "web-b1",
            "preference": 10,
            "destination-prefix": f"{b1}/{plen}",
            "protocol": "tcp",
            "destination-port": HTTP_PORT,
            "action": "allow",
        },
        # source prefix + destination port range: reject TCP towards b3
        {
            "name": "rej-b3",
            "preference": 20,
            "source-prefix": f"{client}/{plen}",
            "destination-prefix": f"{b3}/{plen}",
            "protocol": "tcp",
            "destination-port": HTTP_PORT - 10,
            "destination-port-end": HTTP_PORT + 10,
            "action": "reject",
        },
        # UDP reject (ICMP unreachable) to b3's echo
        {
            "name": "rej-udp",
            "preference": 25,
            "destination-prefix": f"{b3}/{plen}",
            "protocol": "udp",
            "action": "reject",
        },
        # ingress interface + UDP: allow echo to b1 and b2
        {
            "name": "udp-in",
            "preference": 30,
            "ingress-interface": up,
            "protocol": "udp",
            "destination-port": UDP_PORT,
            "action": "allow",
        },
        # source port range: a high source port towards b2's web is allowed
        {
            "name": "sport",
            "preference": 40,
            "destination-prefix": f"{b2}/{plen}",
            "protocol": "tcp",
            "source-port": 40000,
            "source-port-end": 40999,
            "action": "allow",
        },
        # a service: the VIP's flows
        {"name": "vip", "preference": 50, "service": "web", "action": "allow"},
        {"name": "icmp", "preference": 60, "protocol": "icmp", "action": "allow"},
    ]
    net.set(service("web"))
    set_fw(net, rules, {up: "drop"})
    assert http_ok(net, b1)
    assert hits(net, "web-b1") >= 1
    # No rule: the interface's default drops. From a source port outside the "sport" rule's
    # range: an ephemeral one falls inside it one time in 28.
    with pytest.raises(RuntimeError):
        net.curl(b2, HTTP_PORT, local_port=39123)
    url3 = f"http://[{b3}]:{HTTP_PORT}/" if version == 6 else f"http://{b3}:{HTTP_PORT}/"
    assert refused_fast(lambda: net.client.http_get(url3, timeout=3))
    assert hits(net, "rej-b3") >= 1
    assert refused_fast(lambda: net.client.udp_request(b3, UDP_PORT, b"x", timeout=3))
    assert net.client.udp_request(b2, UDP_PORT, b"hi", timeout=2) == b"hi"
    assert hits(net, "udp-in") >= 1
    assert "b2" in net.curl(b2, HTTP_PORT, local_port=40123)
    assert hits(net, "sport") >= 1
    if version == 4:
        assert net.get(VIP4).strip() in ("b1", "b2", "b3")
        assert hits(net, "vip") >= 1
    assert net.client.ping(b2)
    # Drop by rule beats a later allow; and a rule set swapped in one commit.
    rules.insert(0, {"name": "drop-b1", "preference": 5, "destination-prefix": f"{b1}/{plen}",
                     "action": "drop"})  # fmt: skip
    set_fw(net, rules, {up: "drop"})
    assert not http_ok(net, b1, timeout=1)
    assert hits(net, "drop-b1") >= 1


def test_replies_of_allowed_outbound_pass_inbound_default_drop(lbnet: Any) -> None:
    net = lbnet
    up, down = net.interfaces[0], net.interfaces[1]
    # Inbound from b1's side: drop everything new. Client side: allow.
    set_fw(net, [], {down: "drop", up: "allow"})
    for version in (4, 6):
        b1 = backend_addr(1, version)
        assert http_ok(net, b1), version  # the replies come in on b1's side and pass
        assert net.client.udp_request(b1, UDP_PORT, b"r", timeout=2) == b"r"
    # A flow b1 opens towards the client is new on the drop side.
    net.client.start_udp_echo(7777)
    with pytest.raises(TimeoutError):
        net.backends[0].udp_request("198.18.0.1", 7777, b"in", timeout=1)


def test_ten_thousand_rules_one_commit_last_costs_at_most_twice_first(
    lbnet: Any, lb_program: Any
) -> None:
    """10,000 rules in one commit; BPF_PROG_TEST_RUN (warm, medians) of the firewall on a
    packet matching the last rule costs no more than 2x one matching the first: a TCP SYN
    (sluice_fw), and a GRE packet (sluice_fw_other)."""
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
    import fwcost

    res = fwcost.measure(lbnet, lb_program, counts=(10000,), shapes=(1,), repeat=1000,
                         calls=5, cold_n=20)  # fmt: skip
    row = res["rows"][0]
    assert row["commit_s"] < 30, row
    for case in ("first", "last", "none"):
        assert row[case]["verdict"] == fwcost.TC_ACT_SHOT, row
    assert row["last"]["warm_ns"] <= 2 * row["first"]["warm_ns"], row
    # The same for a protocol the balancer does not track (sluice_fw_other, GRE).
    res = fwcost.measure(lbnet, lb_program, counts=(10000,), shapes=(1,), repeat=1000,
                         calls=5, cold_n=5, protocol="gre")  # fmt: skip
    row = res["rows"][0]
    for case in ("first", "last", "none"):
        assert row[case]["verdict"] == fwcost.TC_ACT_SHOT, row
    assert row["last"]["warm_ns"] <= 2 * row["first"]["warm_ns"], row


WHOAMI = (
    "import socket,sys\n"
    "s=socket.socket(socket.AF_INET6,socket.SOCK_DGRAM)\n"
    "s.setsockopt(socket.IPPROTO_IPV6,socket.IPV6_V6ONLY,0)\n"
    "s.bind(('::',7777))\n"
    "print('ready',flush=True)\n"
    "for _ in range(200):\n"
    " d,a=s.recvfrom(100)\n"
    " s.sendto(a[0].removeprefix('::ffff:').encode(),a)\n"
)


def test_egress_snat_backend_host_reaches_client_side_server(lbnet: Any) -> None:
    net = lbnet
    # The SNAT addresses are outside the client's link: it routes them to the LB, as a
    # router would towards an egress address.
    server = net.client.popen(["python3", "-u", "-c", WHOAMI], stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout is not None and server.stdout.readline().strip() == "ready"
        b1 = net.backends[0]
        # Without SNAT the client sees the backend's own address.
        assert b1.udp_request("198.18.0.1", 7777, b"?", timeout=2) == b"198.18.11.1"
        snat = [
            {"name": "v4", "preference": 10, "source-prefix": "198.18.11.0/24",
             "address": "198.18.99.250"},
            {"name": "v6", "preference": 20, "source-prefix": "2001:db8:11::/64",
             "address": "2001:db8:99::250"},
            {"name": "masq", "preference": 30, "source-prefix": "198.18.12.0/24"},
        ]  # fmt: skip
        set_fw(net, [], snat=snat)
        assert b1.udp_request("198.18.0.1", 7777, b"?", timeout=2) == b"198.18.99.250"
        assert b1.udp_request("2001:db8::1", 7777, b"?", timeout=2) == b"2001:db8:99::250"
        # Masquerade: the egress interface's own address.
        b2 = net.backends[1]
        assert b2.udp_request("198.18.0.1", 7777, b"?", timeout=2) == b"198.18.0.254"
        assert hits(net, "v4") >= 1 and hits(net, "v6") >= 1 and hits(net, "masq") >= 1
        # TCP too, through the client's web server: the reply comes back translated.
        net.client.start_http_server(8081, body="client")
        assert "client" in b1.http_get("http://198.18.0.1:8081/", timeout=3)
        # HA: the standby applies no SNAT (the flow leaves untranslated).
        net.rec.set_snat_active(False)
        assert b1.udp_request("198.18.0.1", 7777, b"?", timeout=2) == b"198.18.11.1"
        net.rec.set_snat_active(True)
        assert b1.udp_request("198.18.0.1", 7777, b"?", timeout=2) == b"198.18.99.250"
    finally:
        server.kill()
        server.wait(timeout=5)


def test_cli_on_a_running_daemon_filters_traffic(lb_daemon: Any) -> None:
    """`sluice fw` on a real `sluice run --datapath on`: a commit reaches the datapath."""
    from dpkit import wait_for

    net, d = lb_daemon
    d.apply({"datapath": {"interface": [{"name": i} for i in net.interfaces]}})
    for b in net.backends:
        b.start_http_server(HTTP_PORT)
    up, b1, b2 = net.interfaces[0], backend_addr(1), backend_addr(2)
    assert http_ok(net, b2)  # no rule, no policy: the firewall is off
    assert d.cli("fw", "policy", up, "drop").returncode == 0
    added = d.cli("fw", "add", "web-b1", "--pref", "10", "--dst", f"{b1}/32", "--proto", "tcp",
                  "--dport", str(HTTP_PORT))  # fmt: skip
    assert added.returncode == 0, added.stderr
    assert not http_ok(net, b2, timeout=1)
    assert http_ok(net, b1)
    wait_for(lambda: (d.cli_json("fw", "list")["rules"][0]["packets"] or 0) >= 1, timeout=10)
    assert d.cli("fw", "policy", up, "allow").returncode == 0
    assert http_ok(net, b2)


def test_trap_count_and_mark_actions(lbnet: Any) -> None:
    """trap: a copy of each packet out of a capture interface (tcpdump there sees it) and
    the flow still works; count: counted, then the default policy; mark: the stack sees
    the packet mark (an nft counter in the LB's namespace matches it)."""
    net = lbnet
    cap = net.topo.host("cap")
    link = net.topo.link(net.lb, cap)
    lb_if, cap_if = link.ifname(net.lb), link.ifname(cap)
    b1, b2, b3 = (backend_addr(n) for n in (1, 2, 3))
    dump = cap.popen(["timeout", "15", "tcpdump", "-c", "1", "-nn", "-i", cap_if,
                      f"tcp and dst host {b1} and dst port {HTTP_PORT}"],
                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)  # fmt: skip
    nft = [
        ["nft", "add", "table", "inet", "fwt"],
        ["nft", "add", "chain", "inet", "fwt", "fc", "{ type filter hook forward priority 0; }"],
        ["nft", "add", "rule", "inet", "fwt", "fc", "meta", "mark", "0x2a", "counter"],
    ]
    for cmd in nft:
        res = net.lb.run(cmd)
        assert res.returncode == 0, res.stderr
    rules = [
        {"name": "trap-b1", "preference": 10, "destination-prefix": f"{b1}/32",
         "action": "trap", "interface": lb_if},
        {"name": "count-b2", "preference": 20, "destination-prefix": f"{b2}/32",
         "action": "count"},
        {"name": "mark-b3", "preference": 30, "destination-prefix": f"{b3}/32",
         "action": "mark", "mark": 42},
    ]  # fmt: skip
    set_fw(net, rules)
    deadline = time.monotonic() + 10
    while dump.poll() is None and time.monotonic() < deadline:
        assert http_ok(net, b1)  # the trapped flow itself goes on
        time.sleep(0.2)
    assert dump.wait(timeout=10) == 0, dump.stdout.read() if dump.stdout else ""
    assert http_ok(net, b2) and hits(net, "count-b2") >= 1  # counted, then allowed
    assert http_ok(net, b3) and hits(net, "mark-b3") >= 1
    listed = net.lb.run(["nft", "list", "chain", "inet", "fwt", "fc"]).stdout
    packets = int(listed.split("counter packets ")[1].split()[0])
    assert packets >= 1, listed


def test_redirect_action_sends_packets_out_of_the_named_interface(lbnet: Any) -> None:
    """redirect: a matching packet leaves by the rule's interface as it came (a capture host
    there sees it) and is not forwarded (its destination gets nothing); other flows go on."""
    net = lbnet
    cap = net.topo.host("cap")
    link = net.topo.link(net.lb, cap)
    lb_if, cap_if = link.ifname(net.lb), link.ifname(cap)
    b1, b2 = backend_addr(1), backend_addr(2)
    assert net.client.udp_request(b1, UDP_PORT, b"before", timeout=2) == b"before"
    dump = cap.popen(["timeout", "15", "tcpdump", "-c", "2", "-nn", "-i", cap_if,
                      f"udp and dst host {b1} and dst port {UDP_PORT}"],
                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)  # fmt: skip
    set_fw(net, [{"name": "redir-b1", "preference": 10, "destination-prefix": f"{b1}/32",
                  "protocol": "udp", "action": "redirect", "interface": lb_if}])  # fmt: skip
    deadline = time.monotonic() + 10
    while dump.poll() is None and time.monotonic() < deadline:
        with pytest.raises(TimeoutError):  # redirected away: b1 never answers
            net.client.udp_request(b1, UDP_PORT, b"away", timeout=0.5)
    assert dump.wait(timeout=10) == 0, dump.stdout.read() if dump.stdout else ""
    assert hits(net, "redir-b1") >= 2  # per packet: no flow state
    assert net.client.udp_request(b2, UDP_PORT, b"b2", timeout=2) == b"b2"
    set_fw(net, [])
    assert net.client.udp_request(b1, UDP_PORT, b"after", timeout=2) == b"after"


def test_a_default_drop_never_cuts_the_appliances_own_connections(lbnet: Any) -> None:
    """The replies to the appliance's own connections (health probes, the BGP sessions and
    the sync channel it opens) pass an interface's default drop: TCP and UDP to a socket of
    its own connected to that peer, ICMP echo replies to the interface's own address. What
    others open towards the appliance is still dropped (a listener, an unconnected socket)."""
    net = lbnet
    up, down = net.interfaces[0], net.interfaces[1]  # b1 is behind `down`
    # A rule that drops what comes from b1 does not cut them either, and does not count them.
    rules = [{"name": "from-b1", "preference": 10, "source-prefix": "198.18.11.0/24",
              "action": "drop"}]  # fmt: skip
    set_fw(net, rules, {down: "drop", up: "allow"})
    for version in (4, 6):
        b1 = backend_addr(1, version)
        host = f"[{b1}]" if version == 6 else b1
        assert net.lb.http_get(f"http://{host}:{HTTP_PORT}/", timeout=3) == "b1", version
        assert net.lb.udp_request(b1, UDP_PORT, b"own", timeout=2) == b"own", version
        assert net.lb.ping(b1), version
    assert net.rec.firewall_state()["own-flows"] >= 6
    # Pings from a secondary address of b1's link, and from another link's address.
    for addr in ("198.18.11.253/24", "2001:db8:11::fd/64"):
        net.lb.run(["ip", "addr", "add", addr, "dev", down, "nodad"], check=True)
    for src, dst in (("198.18.11.253", backend_addr(1)), ("2001:db8:11::fd", backend_addr(1, 6)),
                     ("198.18.0.254", backend_addr(1)), ("2001:db8::fe", backend_addr(1, 6))):
        res = net.lb.run(["ping", "-n", "-q", "-c", "1", "-w", "3", "-I", src, dst], timeout=6)
        assert res.returncode == 0, (src, res.stdout)
    assert hits(net, "from-b1") == 0
    # Towards the appliance: a TCP listener and an unconnected UDP socket in its namespace.
    net.lb.start_tcp_echo(9099)
    net.lb.start_udp_echo(9098)
    lb_on_b1 = "198.18.11.254"
    with pytest.raises(TimeoutError):
        net.backends[0].tcp_request(lb_on_b1, 9099, b"in", timeout=1)
    with pytest.raises(TimeoutError):
        net.backends[0].udp_request(lb_on_b1, 9098, b"in", timeout=1)
    assert net.client.udp_request("198.18.0.254", 9098, b"ok", timeout=2) == b"ok"  # allowed side
    # An explicit rule lets it in.
    set_fw(net, [{"name": "mgmt", "preference": 10, "protocol": "tcp",
                  "destination-port": 9099, "action": "allow"}], {down: "drop"})  # fmt: skip
    assert net.backends[0].tcp_request(lb_on_b1, 9099, b"in", timeout=2) == b"in"


def test_egress_snat_to_a_fixed_port(lbnet: Any) -> None:
    """An SNAT rule's port (loxilb's toPort): TCP/UDP flows leave from that source port; a
    second flow to the same peer address and port cannot take it while the first lives (it
    is dropped: no two flows share a reply tuple); another peer port can."""
    net = lbnet
    server = net.client.popen(["python3", "-u", "-c", WHOAMI_PORT], stdout=subprocess.PIPE,
                              text=True)  # fmt: skip
    try:
        assert server.stdout is not None and server.stdout.readline().strip() == "ready"
        snat = [{"name": "fixed", "preference": 10, "source-prefix": "198.18.8.0/21",
                 "address": "198.18.99.250", "port": 40000}]  # fmt: skip
        set_fw(net, [], snat=snat)
        b1, b2 = net.backends[0], net.backends[1]
        assert b1.udp_request("198.18.0.1", 7777, b"?", timeout=2) == b"198.18.99.250:40000"
        # b2 -> the same server port: the reply tuple (server:7777 -> .250:40000) is b1's.
        with pytest.raises(TimeoutError):
            b2.udp_request("198.18.0.1", 7777, b"?", timeout=1)
        assert b2.udp_request("198.18.0.1", 7778, b"?", timeout=2) == b"198.18.99.250:40000"
        assert hits(net, "fixed") >= 2
    finally:
        server.kill()
        server.wait(timeout=5)


WHOAMI_PORT = (
    "import socket\n"
    "socks=[]\n"
    "for port in (7777,7778):\n"
    " s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\n"
    " s.bind(('0.0.0.0',port))\n"
    " socks.append(s)\n"
    "print('ready',flush=True)\n"
    "import select\n"
    "for _ in range(200):\n"
    " r,_w,_x=select.select(socks,[],[],30)\n"
    " for s in r:\n"
    "  d,a=s.recvfrom(100)\n"
    "  s.sendto(('%s:%d'%a).encode(),a)\n"
)
