"""The daemon and its CLI, end to end: a real `sluice run`, real socket, real subprocesses."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import sqlite3
import stat
import subprocess
import time
from pathlib import Path

import pytest
from daemonkit import SLUICE, Daemon

from appliance.control.client import RemoteError
from appliance.control.protocol import encode

ADD_WEB = [
    "lb", "add", "web", "--vip", "198.18.0.10", "--port", "80",
    "--endpoints", "198.18.1.1:8080,198.18.1.2:8080:3",
]  # fmt: skip


def test_version() -> None:
    out = subprocess.run([*SLUICE, "--version"], capture_output=True, text=True, check=True)
    assert out.stdout.startswith("sluice ")


def test_lb_lifecycle(daemon: Daemon) -> None:
    added = daemon.cli(*ADD_WEB, "--algo", "maglev", "-m", "first service")
    assert added.returncode == 0, added.stderr
    assert "commit 1" in added.stdout
    services = daemon.cli_json("lb", "list")
    assert [s["name"] for s in services] == ["web"]
    assert services[0]["algorithm"] == "maglev" and services[0]["protocol"] == "tcp"
    table = daemon.cli("lb", "list").stdout
    assert "web" in table and "198.18.0.10" in table and "maglev" in table
    shown = daemon.cli_json("lb", "show", "web")
    assert [e["weight"] for e in shown["endpoint"]] == [1, 3]
    v6 = daemon.cli(
        "lb", "add", "web6", "--vip", "2001:db8::10", "--port", "443",
        "--endpoints", "[2001:db8:1::1]:8443,[2001:db8:1::2]:8443:5", "--tcp-midstream-pickup",
    )  # fmt: skip
    assert v6.returncode == 0, v6.stderr
    table = daemon.cli("lb", "list").stdout.splitlines()
    assert "OPTIONS" in table[0]
    assert "tcp-midstream-pickup" in next(line for line in table if line.startswith("web6"))
    eps = daemon.cli_json("ep", "list", "--service", "web6")
    weights = [(e["address"], e["weight"]) for e in eps]
    assert weights == [("2001:db8:1::1", 1), ("2001:db8:1::2", 5)]
    drained = daemon.cli("ep", "set", "web", "198.18.1.1:8080", "--state", "drain")
    assert drained.returncode == 0, drained.stderr
    assert daemon.cli_json("lb", "show", "web")["endpoint"][0]["admin-state"] == "drain"
    deleted = daemon.cli("lb", "del", "web6")
    assert deleted.returncode == 0 and "deleted" in deleted.stdout
    assert [s["name"] for s in daemon.cli_json("lb", "list")] == ["web"]
    with daemon.client() as client:  # the console's poll: no endpoint lists, only counts
        (brief,) = client.call("lb.list", brief=True)
    assert "endpoint" not in brief and brief["endpoint-count"] == 2
    assert brief["name"] == "web" and brief["algorithm"] == "maglev"
    history = daemon.cli_json("config", "history")
    assert [h["id"] for h in history] == [4, 3, 2, 1]
    assert history[-1]["comment"] == "first service" and history[-1]["interface"] == "cli"


@pytest.mark.parametrize(
    ("args", "field"),
    [
        (["--port", "99999"], "--port"),
        (["--port", "80", "--algo", "fastest"], "--algo"),
        (["--port", "80", "--mode", "full-nat"], "snat-address"),
        (["--port", "80", "--endpoints", "198.18.1.1"], "--endpoints"),
        (["--port", "80", "--endpoints", "198.18.1.1:80:999"], "--endpoints"),
        (["--port", "80", "--endpoints", "[2001:db8::1]:80"], "--endpoints"),
        (["--port", "eighty"], "--port"),
        (["--port", "80", "--allow", "198.18.0.0/33"], "--allow"),
    ],
)
def test_bad_cli_input_names_the_field_and_changes_nothing(
    daemon: Daemon, args: list[str], field: str
) -> None:
    assert daemon.cli(*ADD_WEB).returncode == 0
    before = daemon.cli_json("lb", "list"), daemon.cli_json("config", "history")
    bad = daemon.cli("lb", "add", "bad", "--vip", "198.18.0.20", *args)
    assert bad.returncode == 2
    assert field in bad.stderr, bad.stderr
    assert bad.stderr.startswith("error:")
    assert (daemon.cli_json("lb", "list"), daemon.cli_json("config", "history")) == before


def test_missing_things_are_named(daemon: Daemon) -> None:
    gone = daemon.cli("lb", "del", "nope")
    assert gone.returncode == 2 and "service[name='nope']" in gone.stderr
    ep = daemon.cli("ep", "set", "nope", "198.18.1.1:80", "--state", "drain")
    assert ep.returncode == 2 and "nope" in ep.stderr
    assert daemon.cli("config", "rollback", "42").returncode == 2


def test_apply_file_and_bad_files(daemon: Daemon, tmp_path: Path) -> None:
    good = tmp_path / "services.yaml"
    good.write_text(
        """
load-balancer:
  service:
    - name: dns
      vip: 198.18.0.53
      protocol: udp
      port: 53
      algorithm: hash
      endpoint:
        - {address: 198.18.2.1, port: 53}
        - {address: 198.18.2.2, port: 53}
    - name: web
      vip: 198.18.0.10
      port: 80
      endpoint: [{address: 198.18.1.1, port: 8080}]
"""
    )
    applied = daemon.cli("apply", "-f", str(good))
    assert applied.returncode == 0, applied.stderr
    assert "2 added" in applied.stdout
    assert daemon.cli("apply", "-f", str(good)).stdout.startswith("no change")
    before = daemon.cli_json("config", "history")

    syntax = tmp_path / "syntax.yaml"
    syntax.write_text("load-balancer:\n  service: [\n")
    bad = daemon.cli("apply", "-f", str(syntax))
    assert bad.returncode == 2 and "syntax.yaml:" in bad.stderr

    wrong = tmp_path / "wrong.json"
    wrong.write_text(json.dumps({"load-balancer": {"service": [{"name": "x", "vip": "198.18.0.9",
                                                               "port": 80, "weight": 5}]}}))
    bad = daemon.cli("apply", "-f", str(wrong))
    assert bad.returncode == 2 and "weight" in bad.stderr
    assert daemon.cli("apply", "-f", str(tmp_path / "absent.yaml")).returncode == 2
    assert daemon.cli_json("config", "history") == before


def test_export_import_rollback_diff(daemon: Daemon, tmp_path: Path) -> None:
    assert daemon.cli(*ADD_WEB).returncode == 0
    export = tmp_path / "export.json"
    assert daemon.cli("config", "export", "-f", str(export)).returncode == 0
    assert daemon.cli("lb", "del", "web").returncode == 0
    assert daemon.cli_json("lb", "list") == []
    imported = daemon.cli("config", "import", str(export))
    assert imported.returncode == 0, imported.stderr
    assert [s["name"] for s in daemon.cli_json("lb", "list")] == ["web"]
    diff = daemon.cli("config", "diff", "2")
    assert "--- a/service web" in diff.stdout and '-  "name": "web"' in diff.stdout
    rolled = daemon.cli("config", "rollback", "2")
    assert rolled.returncode == 0 and "new commit 4" in rolled.stdout
    assert daemon.cli_json("lb", "list") == []
    yaml_out = daemon.cli("config", "export", "--format", "yaml").stdout
    assert yaml_out.strip() == "{}"


def test_control_socket_rejects_bad_requests_and_stays_up(daemon: Daemon) -> None:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(10)
        sock.connect(str(daemon.socket))
        reader = sock.makefile("rb")
        for raw in (b"{not json\n", b"[1,2]\n", encode({"id": 1, "method": "no.such"})):
            sock.sendall(raw)
            reply = json.loads(reader.readline())
            assert "error" in reply and reply["error"]["message"]
        sock.sendall(encode({"id": 2, "method": "config.edit", "params": {"changes": "x"}}))
        assert "changes" in json.loads(reader.readline())["error"]["errors"][0]["path"]
        sock.sendall(encode({"id": 3, "method": "config.edit", "params": {"changes": [
            {"op": "merge", "path": "/sluice:load-balancer/service[name='w']",
             "value": {"vip": "198.18.0.1", "port": 123456}}]}}))  # fmt: skip
        sock.sendall(encode({"id": 4, "method": "config.commit"}))
        assert json.loads(reader.readline()) == {"id": 3, "result": None}
        error = json.loads(reader.readline())["error"]
        assert error["errors"][0]["path"].endswith("/port")
        sock.sendall(encode({"id": 5, "method": "status"}))
        assert json.loads(reader.readline())["result"]["services"] == 0
    with daemon.client() as client, pytest.raises(RemoteError):
        client.call("lb.add", service={"name": "x", "vip": "198.18.0.1", "port": "80"})


def test_socket_is_root_only(daemon: Daemon) -> None:
    assert stat.S_IMODE(os.stat(daemon.socket).st_mode) == 0o600


def test_second_daemon_on_same_db_refuses(daemon: Daemon) -> None:
    second = subprocess.run(
        [*SLUICE, "run"], env=daemon.env, capture_output=True, text=True, timeout=30
    )
    assert second.returncode == 1
    assert "already using" in second.stderr
    assert daemon.cli("status").returncode == 0  # the first one is unharmed


def test_sigterm_then_restart_keeps_running(daemon: Daemon) -> None:
    assert daemon.cli(*ADD_WEB).returncode == 0
    assert daemon.stop(signal.SIGTERM) == 0
    assert not daemon.socket.exists()
    down = daemon.cli("lb", "list")
    assert down.returncode == 1 and "cannot reach the sluice daemon" in down.stderr
    daemon.start()
    assert [s["name"] for s in daemon.cli_json("lb", "list")] == ["web"]


def _write_transaction_open(probe: sqlite3.Connection) -> bool:
    """True if another connection (the daemon: nothing else writes) holds the write lock,
    i.e. is inside a BEGIN IMMEDIATE ... COMMIT. Takes the lock itself for an instant if not."""
    try:
        probe.execute("BEGIN IMMEDIATE")
    except sqlite3.OperationalError as exc:  # "database is locked" with timeout=0
        assert "locked" in str(exc), exc
        return True
    probe.execute("ROLLBACK")
    return False


def _kill_9_inside_the_transaction(daemon: Daemon, services: list[dict], timeout: float) -> bool:
    """Send one large config.apply, SIGKILL the daemon once its commit's transaction is open
    and has written pages (the -wal file grew past its size before the apply).

    Returns True if the kill provably landed inside the transaction: the transaction was
    seen open just before the kill and its commit is not in the database left behind."""
    wal = Path(f"{daemon.db}-wal")
    base = wal.stat().st_size if wal.exists() else 0
    with contextlib.closing(sqlite3.connect(daemon.db)) as db:
        commits_before = db.execute("SELECT count(*) FROM commit_log").fetchone()[0]
    probe = sqlite3.connect(daemon.db, timeout=0, isolation_level=None)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(str(daemon.socket))
        sock.sendall(
            encode({"id": 1, "method": "config.apply",
                    "params": {"config": {"load-balancer": {"service": services}}}})
        )  # fmt: skip
        deadline = time.monotonic() + timeout
        while not (_write_transaction_open(probe) and wal.exists() and wal.stat().st_size > base):
            assert daemon.proc is not None and daemon.proc.poll() is None, "the daemon died"
            assert time.monotonic() < deadline, "the commit's transaction was never seen open"
            time.sleep(0.001)  # the transaction lasts ~100 ms on an idle machine
        daemon.stop(signal.SIGKILL)
    finally:
        sock.close()
        probe.close()
    # Opening the database replays the -wal as SQLite would at the daemon's restart.
    with contextlib.closing(sqlite3.connect(daemon.db)) as db:
        commits_after = db.execute("SELECT count(*) FROM commit_log").fetchone()[0]
    return commits_after == commits_before


def test_kill_9_during_commit_leaves_old_or_new(daemon: Daemon) -> None:
    """kill -9 inside a large commit's transaction: the restarted daemon has all of the
    commit or none of it. The kill is proved to land inside the transaction (seen open, its
    pages being written, and not committed); a kill that lost the race to the COMMIT is
    checked the same way (all of it) and tried again with a new commit."""
    assert daemon.cli(*ADD_WEB).returncode == 0
    for attempt in range(5):
        services = [
            {"name": f"a{attempt}s{i}", "vip": f"198.18.{i // 250 + 1}.{i % 250 + 1}",
             "port": 80 + attempt,
             "endpoint": [{"address": f"198.19.{j}.{i % 250 + 1}", "port": 8080}
                          for j in range(8)]}
            for i in range(5000)
        ]  # fmt: skip
        old = {s["name"] for s in daemon.cli_json("lb", "list")}
        old_history = len(daemon.cli_json("config", "history"))
        inside = _kill_9_inside_the_transaction(daemon, services, timeout=120)
        daemon.start()
        names = {s["name"] for s in daemon.cli_json("lb", "list")}
        history = daemon.cli_json("config", "history")
        if inside:
            assert names == old, len(names)  # none of the cut commit
            assert len(history) == old_history
            return
        assert names == old | {s["name"] for s in services}, len(names)  # all of it
        assert len(history) == old_history + 1
    pytest.fail("5 kills all came after the COMMIT: never inside the transaction")


def test_identified_read_only_session_is_refused_changes(daemon: Daemon) -> None:
    with daemon.client() as client:
        hello = client.call("session.identify", user="bob", **{"read-only": True})
        assert hello["user"] == "bob" and hello["read-only"] is True
        with pytest.raises(RemoteError) as info:
            client.call("lb.add", service={"name": "x", "vip": "198.18.0.1", "port": 80})
        assert info.value.type == "AccessDenied"
        client.call("session.identify", user="bob", **{"read-only": False})
        with pytest.raises(RemoteError):  # privileges only go down
            client.call("lb.add", service={"name": "x", "vip": "198.18.0.1", "port": 80})
    with daemon.client() as client:
        client.call("session.identify", user="alice", interface="console")
        client.call("lb.add", service={"name": "x", "vip": "198.18.0.1", "port": 80})
    assert daemon.cli_json("config", "history")[0]["user"] == "alice"
    assert daemon.cli_json("config", "history")[0]["interface"] == "console"


def test_a_bulk_commit_leaves_live_sessions_collectable() -> None:
    """A session's reference cycle alive during a bulk commit is still collected once the
    session is gone (a gc.freeze() there made it immortal: a leak per session)."""
    import gc
    import weakref

    from appliance.config import Diff
    from appliance.daemon import BULK_COMMIT, collect_after_bulk_commit

    class Session:
        pass

    gc.unfreeze()
    try:
        session = Session()
        session.me = session  # type: ignore[attr-defined]  # a cycle, as sessions have
        alive = weakref.ref(session)
        bulk = Diff()
        bulk.services_added = {f"s{i}": {} for i in range(BULK_COMMIT)}
        collect_after_bulk_commit(bulk)
        assert gc.get_freeze_count() == 0
        del session
        gc.collect()
        assert alive() is None
    finally:
        gc.unfreeze()


def test_a_bad_listing_limit_names_the_field(daemon: Daemon) -> None:
    res = daemon.cli("ct", "list", "--limit", "0")
    assert res.returncode == 2 and "--limit" in res.stderr, res.stderr
    with daemon.client() as client:
        for bad in (0, -3, "ten", True):
            with pytest.raises(RemoteError) as info:
                client.call("ct.list", limit=bad)
            assert "limit" in str(info.value), info.value


def test_the_daemon_refuses_what_the_datapath_cannot_carry(daemon: Daemon) -> None:
    """`lb add` of a service the datapath cannot carry used to say "added" and leave the
    datapath retrying forever; the daemon's config refuses it, naming the field (here the
    flag), and changes nothing. (SCTP multihoming needs full-NAT: the datapath rewrites the
    peers' addresses only where it owns the source.)"""
    before = daemon.cli_json("config", "history")
    res = daemon.cli("lb", "add", "s6a", "--vip", "198.18.0.30", "--proto", "sctp",
                     "--port", "3868", "--secondary-vip", "198.18.0.31", "--secondary-snat",
                     "198.18.0.41", "--endpoints", "198.18.1.1:3868")
    assert res.returncode != 0 and "--secondary-vip" in res.stderr, res.stderr
    assert daemon.cli_json("config", "history") == before
    assert daemon.cli_json("lb", "list") == []
