"""Rules -> tuple-space tables for bpf/lib/firewall.h (pure Python, no bcc).

Each rule becomes one entry per (family, source-port prefix, destination-port prefix):
a port range splits into at most 30 prefixes. An entry's shape is (family, source and
destination address prefix lengths, source and destination port prefix lengths, whether
it matches the interface, whether it matches the protocol); its key is the rule's values
masked to that shape. Two entries with the same shape and key match exactly the same
packets, so only the better one is kept: a rule that loses every entry that way can never
match (shadowed) and is reported. Shapes are sorted by their best preference, which lets
the datapath stop early. The datapath's preference is the rule's rank in
(preference, table, name) order, so equal preferences still have one winner.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from dataclasses import dataclass, field

from appliance.config.errors import FieldError
from appliance.firewall.model import ACTIONS, ANY_PORTS, Rule

# bpf/lib/firewall.h
FW_MAX_TUPLES = 24
FW_MAX_RULES = 16384
FW_MAX_KEYS = 262144
FW_MAX_SNAT = 1024
FW_MAX_IFPOL = 1024
TABLES = {"firewall": 0, "snat": 1}
ANY = {4: ipaddress.ip_network("0.0.0.0/0"), 6: ipaddress.ip_network("::/0")}
RESOURCE = "resource-denied"

Shape = tuple[int, int, int, int, int, int, int]  # fam, slen, dlen, splen, dplen, if, proto
Key = tuple[int, int, int, int, int, int]  # src, dst, sport, dport, ifindex, proto
Value = tuple[int, int, int, int]  # rule id, datapath preference, action, arg
# arg: mark / ifindex / for snat: the address's index + 1 (0: masquerade) | port << 16


def port_prefixes(lo: int, hi: int) -> list[tuple[int, int]]:
    """[lo, hi] as (value, prefix length) over 16 bits, fewest prefixes first to last."""
    out = []
    while lo <= hi:
        size = lo & -lo if lo else 1 << 16
        while size > hi - lo + 1:
            size >>= 1
        out.append((lo, 16 - size.bit_length() + 1))
        lo += size
    return out


def _mask(value: int, plen: int, bits: int) -> int:
    return value & (((1 << bits) - 1) ^ ((1 << (bits - plen)) - 1)) if plen else 0


@dataclass
class Table:
    shapes: list[tuple[Shape, int]] = field(default_factory=list)  # (shape, min pref)
    entries: dict[tuple[int, Key], Value] = field(default_factory=dict)  # shape index


@dataclass
class Compiled:
    tables: dict[int, Table]
    snat_addresses: list[str]  # index + 1 is a rule's arg
    errors: list[FieldError] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def keys(self) -> int:
        return sum(len(t.entries) for t in self.tables.values())


def compile_rules(
    rules: list[Rule],
    ids: dict[tuple[str, str], int],
    ifindex: Callable[[str], int | None] = lambda name: None,
) -> Compiled:
    """``rules`` in order (model.parse sorts them); ``ids``: (table, name) -> rule id."""
    out = Compiled({0: Table(), 1: Table()}, [])
    snat_index: dict[str, int] = {}
    raw: dict[int, dict[Shape, dict[Key, Value]]] = {0: {}, 1: {}}
    entries: list[tuple[int, Rule, int, list[tuple[Shape, Key]]]] = []
    shape_rule: dict[int, dict[Shape, Rule]] = {0: {}, 1: {}}
    for rank, rule in enumerate(rules, start=1):
        t = TABLES[rule.table]
        arg = 0
        if rule.action == "mark":
            arg = rule.mark
        elif rule.action in ("redirect", "trap"):
            idx = ifindex(rule.out_interface or "")
            if not idx:
                out.warnings.append(f"{rule.path}: interface {rule.out_interface} does not "
                                    "exist: the rule matches nothing until it does")  # fmt: skip
                continue
            arg = idx
        elif rule.action == "snat" and rule.snat_address:
            addr = ipaddress.ip_address(rule.snat_address).compressed
            if addr not in snat_index:
                if len(snat_index) >= FW_MAX_SNAT:
                    out.errors.append(FieldError(rule.path, f"more than {FW_MAX_SNAT} SNAT "
                                                 "addresses", RESOURCE))  # fmt: skip
                    continue
                snat_index[addr] = len(snat_index) + 1
                out.snat_addresses.append(addr)
            arg = snat_index[addr]
        if rule.action == "snat":
            arg |= rule.snat_port << 16  # bpf/lib/fw_flow.h fw_snat_flow
        in_if = 0
        if rule.interface:
            in_if = ifindex(rule.interface) or 0
            if not in_if:
                out.warnings.append(f"{rule.path}: ingress-interface {rule.interface} does "
                                    "not exist: the rule matches nothing till it does")  # fmt: skip
                continue
        value = (ids[(rule.table, rule.name)], rank, ACTIONS[rule.action], arg)
        mine: list[tuple[Shape, Key]] = []
        for fam in rule.families():
            bits = 32 if fam == 4 else 128
            src = rule.src or ANY[fam]
            dst = rule.dst or ANY[fam]
            proto = rule.numbers()[0 if fam == 4 else 1]
            s_int = _mask(int(src.network_address), src.prefixlen, bits)
            d_int = _mask(int(dst.network_address), dst.prefixlen, bits)
            sps = port_prefixes(*rule.sport) if rule.sport != ANY_PORTS else [(0, 0)]
            dps = port_prefixes(*rule.dport) if rule.dport != ANY_PORTS else [(0, 0)]
            if rule.icmp_type is not None:  # firewall.h fw_match: type << 8 | code as dport
                code = rule.icmp_code
                dps = [(rule.icmp_type << 8 | (code or 0), 8 if code is None else 16)]
            for sp, splen in sps:
                for dp, dplen in dps:
                    shape: Shape = (fam, src.prefixlen, dst.prefixlen, splen, dplen,
                                    1 if in_if else 0, 1 if proto else 0)  # fmt: skip
                    key: Key = (s_int, d_int, sp, dp, in_if, proto)
                    mine.append((shape, key))
                    keys = raw[t].setdefault(shape, {})
                    if shape not in shape_rule[t]:
                        shape_rule[t][shape] = rule
                    keys.setdefault(key, value)  # an earlier (better) rule keeps the key
        entries.append((t, rule, rank, mine))
    _warn_shadowed(entries, raw, rules, out.warnings)
    for t, shapes in raw.items():
        table = out.tables[t]
        ordered = sorted(shapes.items(), key=lambda kv: min(v[1] for v in kv[1].values()))
        if len(ordered) > FW_MAX_TUPLES:
            culprit = shape_rule[t][ordered[FW_MAX_TUPLES][0]]
            out.errors.append(FieldError(culprit.path, f"the {culprit.table} rules need "
                                         f"{len(ordered)} shapes (distinct combinations of "
                                         "prefix lengths, port-range prefixes, interface and "
                                         f"protocol); the datapath holds {FW_MAX_TUPLES}",
                                         RESOURCE))  # fmt: skip
            ordered = ordered[:FW_MAX_TUPLES]
        for i, (shape, keys) in enumerate(ordered):
            table.shapes.append((shape, min(v[1] for v in keys.values())))
            for key, value in keys.items():
                table.entries[(i, key)] = value
    if out.keys() > FW_MAX_KEYS // 2:
        out.errors.append(FieldError(
            "/sluice:firewall/rule", f"the rules need {out.keys()} table entries (a port "
            f"range takes up to 30 per port); the datapath holds {FW_MAX_KEYS // 2}",
            RESOURCE))  # fmt: skip
    return out


def _coarser(a: Shape, b: Shape) -> bool:
    """Shape a matches on no more than shape b does (every prefix no longer)."""
    return a[0] == b[0] and all(x <= y for x, y in zip(a[1:], b[1:], strict=True))


def _key_to(key: Key, shape: Shape) -> Key:
    fam, slen, dlen, splen, dplen, use_if, use_proto = shape
    bits = 32 if fam == 4 else 128
    src, dst, sp, dp, ifindex, proto = key
    return (_mask(src, slen, bits), _mask(dst, dlen, bits), _mask(sp, splen, 16),
            _mask(dp, dplen, 16), ifindex if use_if else 0, proto if use_proto else 0)  # fmt: skip


def _warn_shadowed(
    entries: list[tuple[int, Rule, int, list[tuple[Shape, Key]]]],
    raw: dict[int, dict[Shape, dict[Key, Value]]],
    rules: list[Rule],
    warnings: list[str],
) -> None:
    """A rule whose every entry lies inside an earlier rule's entry never matches; one with
    some of them inside overlaps it. O(entries x shapes): one dict lookup per coarser shape."""
    for t, rule, rank, mine in entries:
        coarser = {}
        covered, by = 0, set()
        for shape, key in mine:
            if shape not in coarser:
                coarser[shape] = [s for s in raw[t] if _coarser(s, shape)]
            for other in coarser[shape]:
                v = raw[t][other].get(_key_to(key, other))
                if v is not None and v[1] < rank:
                    covered += 1
                    by.add(rules[v[1] - 1].name)
                    break
        if not covered:
            continue
        if covered == len(mine):
            warnings.append(f"{rule.path}: never matches: shadowed by {', '.join(sorted(by))}")
        else:
            warnings.append(f"{rule.path}: overlaps {', '.join(sorted(by))} (those match "
                            "part of its traffic first)")  # fmt: skip


def check(doc: dict, ifindex: Callable[[str], int | None] | None = None) -> list[FieldError]:
    """The config validator: model errors, then what the datapath cannot hold."""
    from appliance.firewall.model import parse

    rules, policies, errors = parse(doc)
    if errors:
        return errors
    if len(rules) >= FW_MAX_RULES:
        return [FieldError("/sluice:firewall/rule", f"{len(rules)} rules; the datapath "
                           f"holds {FW_MAX_RULES - 1}", RESOURCE)]  # fmt: skip
    if len(policies) > FW_MAX_IFPOL // 2:
        return [FieldError("/sluice:firewall/interface", f"{len(policies)} interfaces; the "
                           f"datapath holds {FW_MAX_IFPOL // 2}", RESOURCE)]  # fmt: skip
    ids = {(r.table, r.name): i for i, r in enumerate(rules, start=1)}
    # Interfaces are resolved when programming; here every name counts as present.
    return compile_rules(rules, ids, ifindex or (lambda name: 1)).errors


def lint(doc: dict) -> list[str]:
    """The warnings of a config that validates (shadowed, overlapping rules; a default drop
    that cuts what others open towards the appliance itself, own_traffic.py): computed from
    the config alone, so every door can show them whether the datapath runs or not."""
    from appliance.firewall import own_traffic
    from appliance.firewall.model import parse

    rules, policies, errors = parse(doc)
    if errors:
        return []
    ids = {(r.table, r.name): i for i, r in enumerate(rules, start=1)}
    return (compile_rules(rules, ids, lambda name: 1).warnings
            + own_traffic.warnings(doc, rules, policies))  # fmt: skip
