"""NETCONF with clients nobody on the team wrote: yuma123's yangcli (C, compiles the
advertised modules itself) and OpenSSH's `ssh -s netconf` with hand-written RFC 6242
framing. (ncclient and netconf-console2 are in test_netconf.py/test_netconf_console.py.)"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import netconfkit as kit
import pytest
from lxml import etree

BASE = "urn:ietf:params:xml:ns:netconf:base:1.0"


@pytest.fixture
def h(tmp_path: Path) -> Iterator[kit.Harness]:
    yield from kit.harness(tmp_path)


def yangcli(h: kit.Harness, tmp: Path, script: str) -> str:
    path = tmp / "script.yangcli"
    path.write_text(script)
    home = tmp / "home"
    home.mkdir(exist_ok=True)
    done = subprocess.run(
        ["yangcli", "--server=127.0.0.1", f"--ncport={h.port}", "--user=ops",
         f"--password={kit.PASSWORD}", "--batch-mode", f"--run-script={path}",
         "--log-level=info", "--timeout=20"],
        capture_output=True, text=True, timeout=120, env={**os.environ, "HOME": str(home)},
        stdin=subprocess.DEVNULL)
    return done.stdout + done.stderr


def test_yangcli_compiles_the_model_and_edits(h: kit.Harness, tmp_path: Path) -> None:
    out = yangcli(h, tmp_path, "\n".join([
        "get-schema identifier=sluice format=yang",
        "create /load-balancer/service -- name=web vip=198.18.0.10 port=80",
        "commit",
        "sget-config /load-balancer source=running",
        # again: the server refuses it, naming the entry
        "create /load-balancer/service -- name=web vip=198.18.0.10 port=80",
    ]) + "\n")
    # hello: the capabilities it understood; the modules it loaded without an error
    assert "NETCONF session established for ops" in out, out
    assert "candidate:1.0" in out and "sluice@2026-11-29" in out
    assert "Auto-load for module 'sluice' failed" not in out, out
    assert "error(" not in out.split("Checking Server Modules", 1)[1].split("rpc-reply", 1)[0]
    assert "module sluice {" in out  # get-schema
    assert "name web" in out  # sget-config
    assert h.service.services["web"]["vip"] == "198.18.0.10"  # edit-config + commit
    err = out.rsplit("RPC Error Reply", 1)[1]
    assert "error-tag data-exists" in err
    assert "error-path /sluice:load-balancer/sluice:service[sluice:name='web']" in err


def _ssh(h: kit.Harness, data: bytes) -> bytes:
    done = subprocess.run(
        ["ssh", "-s", "-p", str(h.port), "-i", str(h.key_path), "-o", "BatchMode=yes",
         "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
         "-o", "IdentitiesOnly=yes", "-o", "ConnectTimeout=10", "-F", "/dev/null",
         "keyuser@127.0.0.1", "netconf"],
        input=data, capture_output=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout


def _chunk(message: str) -> bytes:
    body = message.encode()
    return b"\n#%d\n" % len(body) + body + b"\n##\n"


def test_openssh_with_end_of_message_framing(h: kit.Harness) -> None:
    """base:1.0: every message ends with ]]>]]>."""
    hello = (f'<hello xmlns="{BASE}"><capabilities><capability>'
             "urn:ietf:params:netconf:base:1.0</capability></capabilities></hello>")
    rpcs = [f'<rpc xmlns="{BASE}" message-id="1"><get-config><source><running/></source>'
            "</get-config></rpc>",
            f'<rpc xmlns="{BASE}" message-id="2"><lock><target><running/></target></lock></rpc>',
            f'<rpc xmlns="{BASE}" message-id="3"><close-session/></rpc>']
    out = _ssh(h, b"".join(m.encode() + b"]]>]]>" for m in [hello, *rpcs]))
    messages = [m for m in out.split(b"]]>]]>") if m.strip()]
    assert len(messages) == 4, out
    server_hello = etree.fromstring(messages[0])
    assert server_hello.find(f"{{{BASE}}}session-id") is not None
    replies = [etree.fromstring(m) for m in messages[1:]]
    assert [r.get("message-id") for r in replies] == ["1", "2", "3"]
    assert replies[0].find(f"{{{BASE}}}data") is not None
    assert replies[1].find(f"{{{BASE}}}ok") is not None
    # the lock went with the session
    assert h.service.lock_owner("running") is None


def test_openssh_with_chunked_framing(h: kit.Harness) -> None:
    """base:1.1 (RFC 6242 4.2): after the hellos, chunks; one message split in two chunks."""
    hello = (f'<hello xmlns="{BASE}"><capabilities><capability>'
             "urn:ietf:params:netconf:base:1.1</capability></capabilities></hello>")
    get = f'<rpc xmlns="{BASE}" message-id="7"><get-config><source><candidate/></source>'
    split = (b"\n#%d\n" % len(get) + get.encode() + b"\n#%d\n" % len("</get-config></rpc>")
             + b"</get-config></rpc>\n##\n")
    bad = _chunk(f'<rpc xmlns="{BASE}" message-id="8"><edit-config><target><candidate/>'
                 f'</target><config><load-balancer xmlns="{kit.SLUICE_NS}"><service>'
                 "<name>x</name><port>99999</port></service></load-balancer></config>"
                 "</edit-config></rpc>")
    close = _chunk(f'<rpc xmlns="{BASE}" message-id="9"><close-session/></rpc>')
    out = _ssh(h, hello.encode() + b"]]>]]>" + split + bad + close)
    server_hello, rest = out.split(b"]]>]]>", 1)
    assert b"urn:ietf:params:netconf:base:1.1" in server_hello
    replies = []
    while rest.strip():
        assert rest.startswith(b"\n#"), rest[:40]
        size, rest = rest[2:].split(b"\n", 1)
        body, rest = rest[:int(size)], rest[int(size):]
        assert rest.startswith(b"\n##\n")
        rest = rest[4:]
        replies.append(etree.fromstring(body))
    assert [r.get("message-id") for r in replies] == ["7", "8", "9"]
    assert replies[0].find(f"{{{BASE}}}data") is not None
    err = replies[1].find(f"{{{BASE}}}rpc-error")
    assert err is not None and err.findtext(f"{{{BASE}}}error-tag") == "invalid-value"
    assert err.findtext(f"{{{BASE}}}error-path").strip() == \
        "/sluice:load-balancer/sluice:service[sluice:name='x']/sluice:port"
    assert "x" not in h.service.services
