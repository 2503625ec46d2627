"""The appliance's own traffic under a default drop: what the firewall can cut, as warnings.

The datapath never cuts the replies of the appliance's own connections, whatever the rules
say (bpf/lib/firewall.h ``fw_own_flow``: the kernel has a socket of ours connected to that
very peer; ICMP echo replies to any address of the appliance): health probes, the BGP
sessions (ExaBGP connects out, it does not listen), the HA sync channel this node opens to
its peers, the HA witness ping. VRRP (IP protocol 112) passes every default policy and
every rule that does not name protocol vrrp (bpf/lib/fw_other.h).

What a drop can cut is what others open towards the appliance: its management doors, the
SNMP agent, the peers' HA sync channel. For every interface whose default policy drops or
rejects, each of those that no firewall rule lets in is a warning on the interface's
``default-policy`` (a rule counts when it can let some packet to that port in on that
interface, from any source: a management prefix is the usual rule).
"""

from __future__ import annotations

from typing import Any

from appliance.firewall.model import FIREWALL, Rule

Doc = dict[str, Any]
# Actions that let a matching packet in (count falls through to the default policy).
LETS_IN = ("allow", "mark", "trap", "snat")


def listeners(doc: Doc) -> list[tuple[str, str, int]]:
    """(what, protocol, port) of what this config has listening on the appliance itself."""
    mgmt = doc.get("sluice:management") or {}
    out = []
    for key, label, on in (("netconf", "NETCONF", True), ("console-ssh", "the SSH console", True),
                           ("http", "the HTTP API", False)):  # fmt: skip
        door = mgmt.get(key) or {}
        if door.get("enabled", on):
            default = {"netconf": 830, "console-ssh": 2222, "http": 11111}[key]
            out.append((label, "tcp", int(door.get("port", default))))
    snmp = doc.get("sluice:snmp") or {}
    if snmp.get("enabled", False):
        out.append(("the SNMP agent", "udp", int(snmp.get("port", 161))))
    sync = (doc.get("sluice:ha") or {}).get("sync") or {}
    if sync.get("address"):
        out.append(("the HA peers' sync channel", "tcp", int(sync.get("port", 7788))))
    return out


def _lets_in(rule: Rule, ifname: str, proto: str, port: int) -> bool:
    return (rule.table == "firewall" and rule.action in LETS_IN and rule.service is None
            and rule.interface in (None, ifname) and rule.protocol in (None, proto)
            and rule.dport[0] <= port <= rule.dport[1])  # fmt: skip


def warnings(doc: Doc, rules: list[Rule], policies: dict[str, str]) -> list[str]:
    """One line per (interface with a dropping default, own listener no rule lets in)."""
    out = []
    mine = listeners(doc)
    for ifname, policy in sorted(policies.items()):
        if policy == "allow":
            continue
        for label, proto, port in mine:
            if not any(_lets_in(r, ifname, proto, port) for r in rules):
                out.append(f"/{FIREWALL}/interface[name='{ifname}']/default-policy: {policy} "
                           f"cuts {label} ({proto} {port}) to this appliance on {ifname}: no "
                           "rule lets it in (replies to the appliance's own connections "
                           "pass: probes, BGP, the sync channel it opens)")  # fmt: skip
    return out
