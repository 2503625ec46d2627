"""`sluice fw` / `sluice snat` against a running daemon (datapath off: config, refusals,
warnings; tests/test_datapath_firewall.py has the packets)."""

from __future__ import annotations

from daemonkit import Daemon


def test_fw_and_snat_verbs(daemon: Daemon) -> None:
    ok = daemon.cli("fw", "add", "ssh", "--pref", "10", "--src", "198.18.0.0/24",
                    "--proto", "tcp", "--dport", "22", "--action", "allow")  # fmt: skip
    assert ok.returncode == 0 and "commit" in ok.stdout, ok.stderr
    hidden = daemon.cli("fw", "add", "ssh2", "--pref", "20", "--src", "198.18.0.0/25",
                        "--proto", "tcp", "--dport", "22", "--action", "drop")  # fmt: skip
    assert hidden.returncode == 0, hidden.stderr
    assert "rule[name='ssh2']: never matches: shadowed by ssh" in hidden.stderr
    bad = daemon.cli("fw", "add", "bad", "--pref", "5", "--proto", "icmp", "--dport", "80")
    assert bad.returncode == 2
    assert "--dport (/sluice:firewall/rule[name='bad']/destination-port)" in bad.stderr
    bad_range = daemon.cli("fw", "add", "bad", "--pref", "5", "--dport", "x-y")
    assert bad_range.returncode == 2 and "--dport" in bad_range.stderr
    bad_prefix = daemon.cli("fw", "add", "bad", "--pref", "5", "--src", "198.18.0.300/24")
    assert bad_prefix.returncode == 2 and "--src" in bad_prefix.stderr
    pol = daemon.cli("fw", "policy", "eth0", "drop")
    assert pol.returncode == 0, pol.stderr
    # No rule lets NETCONF in on eth0: the appliance's own door would be cut.
    assert ("/sluice:firewall/interface[name='eth0']/default-policy: drop cuts NETCONF "
            "(tcp 830)") in pol.stderr, pol.stderr  # fmt: skip
    assert daemon.cli("fw", "policy", "eth0", "maybe").returncode == 2
    listed = daemon.cli_json("fw", "list")
    assert [r["name"] for r in listed["rules"]] == ["ssh", "ssh2"]
    assert listed["interfaces"] == [{"name": "eth0", "default-policy": "drop"}]
    assert any("ssh2" in w for w in listed["warnings"])
    table = daemon.cli("fw", "list").stdout
    assert "ssh" in table and "198.18.0.0/24" in table and "eth0" in table
    snat = daemon.cli("snat", "add", "pods", "--pref", "1", "--src", "198.18.64.0/18",
                      "--address", "198.18.0.250")  # fmt: skip
    assert snat.returncode == 0, snat.stderr
    mixed = daemon.cli("snat", "add", "v6", "--pref", "2", "--src", "2001:db8::/64",
                       "--address", "198.18.0.251")  # fmt: skip
    assert mixed.returncode == 2 and "--address" in mixed.stderr
    assert [r["name"] for r in daemon.cli_json("snat", "list")["rules"]] == ["pods"]
    fixed = daemon.cli("snat", "add", "fixed", "--pref", "3", "--src", "198.18.128.0/18",
                       "--address", "198.18.0.252", "--port", "40000")  # fmt: skip
    assert fixed.returncode == 0, fixed.stderr
    assert daemon.cli_json("snat", "list")["rules"][1]["port"] == 40000
    zero = daemon.cli("snat", "add", "zero", "--pref", "4", "--src", "198.18.192.0/18",
                      "--port", "0")  # fmt: skip
    assert zero.returncode == 2 and "--port" in zero.stderr, zero.stderr
    stray = daemon.cli("fw", "add", "stray", "--pref", "40", "--snat-port", "5")
    assert stray.returncode == 2 and "--snat-port" in stray.stderr, stray.stderr
    gre = daemon.cli("fw", "add", "gre", "--pref", "50", "--proto", "gre", "--action", "drop")
    assert gre.returncode == 0, gre.stderr
    by_number = daemon.cli("fw", "add", "p253", "--pref", "51", "--proto", "253")
    assert by_number.returncode == 0, by_number.stderr
    ra = daemon.cli("fw", "add", "ra", "--pref", "52", "--proto", "icmp", "--icmp-type", "134",
                    "--action", "drop")  # fmt: skip
    assert ra.returncode == 0, ra.stderr
    rules = {r["name"]: r for r in daemon.cli_json("fw", "list")["rules"]}
    assert rules["p253"]["protocol"] == "253" and rules["ra"]["icmp-type"] == 134
    for bad_args, flag in ((("--proto", "256"), "--proto"), (("--proto", "0"), "--proto"),
                           (("--proto", "tcp", "--icmp-type", "3"), "--icmp-type"),
                           (("--proto", "icmp", "--icmp-code", "1"), "--icmp-code")):  # fmt: skip
        res = daemon.cli("fw", "add", "bad", "--pref", "60", *bad_args)
        assert res.returncode == 2 and flag in res.stderr, (bad_args, res.stderr)
    for name in ("gre", "p253", "ra"):
        assert daemon.cli("fw", "del", name).returncode == 0
    assert daemon.cli("snat", "del", "fixed").returncode == 0
    assert daemon.cli("fw", "del", "ssh2").returncode == 0
    assert [r["name"] for r in daemon.cli_json("fw", "list")["rules"]] == ["ssh"]
