"""NACM, the NETCONF access control model (RFC 8341), enforced for NETCONF sessions and,
through the same checks, for RESTCONF and the loxilb API (northbound/http).

The rules are configuration like any other: /ietf-netconf-acm:nacm in the datastore (the
IETF module itself, validated by libyang; edited over NETCONF, the CLI or the console),
read from running at every check, so a commit (or a user's demotion) applies to open
sessions at their next operation.

Groups: /nacm/groups, plus one group per role (the appliance's users have a role):
"read-write" and "read-only"; a user is in its role's group as an external group (RFC 8341
3.2.2), so `enable-external-groups false` drops them. A built-in rule-list, after the
configured ones, permits everything to the "read-write" group: with no rules configured
the roles work as before, and a configured rule (earlier, so it wins) restricts them.

What is checked (RFC 8341 3.4): every protocol operation (exec; close-session is always
allowed, kill-session and delete-config are default-deny-all), every node of get and
get-config replies (read: denied nodes are left out), every node an edit-config or an
inline copy-config writes (create, update, delete: access-denied naming the node, nothing
applied), and every notification (read). `default-deny-all` / `default-deny-write` nodes
(/nacm itself, secrets) need an explicit permit. The recovery session (RFC 8341 3.4) is
the local CLI and console as root: they talk to the config service directly and are not
subject to NACM; every NETCONF session is.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

from lxml import etree

from appliance.config.paths import PathError, Step, format_path, module_of, parse_path
from northbound.netconf.errors import RpcError, xpath_of
from northbound.netconf.xmlutil import BASE_NS, MONITORING_NS, NOTIF_NS, local, ns_of

NACM = "nacm"  # the top-level container (module ietf-netconf-acm)
NACM_NS = "urn:ietf:params:xml:ns:yang:ietf-netconf-acm"
ROLE_GROUPS = ("read-write", "read-only")
# Protocol operations by namespace → the module that defines them (rule module-name).
OP_MODULES = {BASE_NS: "ietf-netconf", MONITORING_NS: "ietf-netconf-monitoring",
              NOTIF_NS: "notifications"}
# nacm:default-deny-all in ietf-netconf: denied unless a rule permits.
DEFAULT_DENY_OPS = {("ietf-netconf", "kill-session"), ("ietf-netconf", "delete-config")}
WRITE_OPS = {"merge": ("create", "update"), "replace": ("create", "update"),
             "create": ("create",), "delete": ("delete",), "remove": ("delete",)}


@dataclass(frozen=True)
class Rule:
    name: str
    module: str  # "*" or a module name
    ops: frozenset[str]  # of read create update delete exec
    permit: bool
    rpc: str | None = None  # rule-type: protocol operation ("*" allowed)
    notification: str | None = None
    path: tuple[Step, ...] | None = None  # data node (and its descendants)
    path_text: str = ""

    @property
    def typed(self) -> bool:
        return self.rpc is not None or self.notification is not None or self.path is not None

    def module_matches(self, module: str) -> bool:
        return self.module in ("*", module)


PERMIT_ALL = Rule("permit-all", "*", frozenset(("read", "create", "update", "delete", "exec")),
                  True)


@dataclass
class Policy:
    enabled: bool = True
    read_default: bool = True
    write_default: bool = False
    exec_default: bool = True
    external_groups: bool = True
    groups: dict[str, set[str]] = field(default_factory=dict)  # group → users
    rule_lists: list[tuple[set[str], list[Rule]]] = field(default_factory=list)

    def rules_for(self, user: str, role: str | None) -> list[Rule]:
        mine = {g for g, users in self.groups.items() if user in users}
        if role is not None and self.external_groups:
            mine.add(role)
        out = [r for groups, rules in self.rule_lists
               if "*" in groups or groups & mine for r in rules]
        if "read-write" in mine:
            out.append(PERMIT_ALL)  # the built-in rule-list of the read-write role
        return out


def _ops(text: Any) -> frozenset[str]:
    words = str(text or "").split()
    if "*" in words:
        return frozenset(("read", "create", "update", "delete", "exec"))
    return frozenset(words)


def _rule(entry: dict[str, Any]) -> Rule | None:
    path = entry.get("path")
    steps: tuple[Step, ...] | None = None
    if path is not None:
        try:
            steps = tuple(parse_path(str(path))) if path != "/" else ()
        except PathError:
            return None  # a path this server holds no data at: matches nothing
    return Rule(str(entry.get("name")), str(entry.get("module-name", "*")),
                _ops(entry.get("access-operations", "*")), entry.get("action") == "permit",
                rpc=entry.get("rpc-name"), notification=entry.get("notification-name"),
                path=steps, path_text=str(path or ""))


def policy_of(section: dict[str, Any] | None) -> Policy:
    """The policy of an effective /nacm section (defaults filled in); None: RFC defaults."""
    s = section or {}
    groups = {str(g.get("name")): {str(u) for u in g.get("user-name", [])}
              for g in (s.get("groups") or {}).get("group", [])}
    rule_lists = []
    for rl in s.get("rule-list", []):
        rules = [r for e in rl.get("rule", []) if (r := _rule(e)) is not None]
        rule_lists.append(({str(g) for g in rl.get("group", [])}, rules))
    return Policy(
        enabled=s.get("enable-nacm", True) is not False,
        read_default=s.get("read-default", "permit") == "permit",
        write_default=s.get("write-default", "deny") == "permit",
        exec_default=s.get("exec-default", "permit") == "permit",
        external_groups=s.get("enable-external-groups", True) is not False,
        groups=groups, rule_lists=rule_lists)


class Nacm:
    """The checks, for one NETCONF server; counters as /nacm's state leaves."""

    def __init__(self, config_service: Any, namespaces: dict[str, str],
                 deny_all_tops: frozenset[str] = frozenset((NACM,))) -> None:
        self.config_service = config_service
        self.module_of_ns = {ns: m for m, ns in namespaces.items()}
        self.namespace_of = dict(namespaces)
        self.deny_all_tops = deny_all_tops
        self.counters = {"denied-operations": 0, "denied-data-writes": 0,
                         "denied-notifications": 0}
        self._lock = threading.Lock()
        self._cached: tuple[Any, Policy] | None = None

    def policy(self) -> Policy:
        section = (self.config_service.sections_effective or {}).get(NACM)
        cached = self._cached
        if cached is not None and cached[0] is section:
            return cached[1]
        policy = policy_of(section)
        self._cached = (section, policy)
        return policy

    def _count(self, name: str) -> None:
        with self._lock:
            self.counters[name] += 1

    def _rules(self, user: str) -> tuple[Policy, list[Rule]] | None:
        policy = self.policy()
        if not policy.enabled:
            return None
        return policy, policy.rules_for(user, self.config_service.role_of(user))

    def state(self) -> dict[str, Any]:
        """/nacm's config false counters, for <get>."""
        with self._lock:
            return {f"ietf-netconf-acm:{NACM}": dict(self.counters)}

    # -- protocol operations ----------------------------------------------------------------
    def check_rpc(self, user: str, op: etree._Element) -> None:
        module, name = OP_MODULES.get(ns_of(op) or "", ns_of(op) or ""), local(op)
        if (module, name) == ("ietf-netconf", "close-session"):
            return  # RFC 8341 3.4.4: always permitted
        found = self._rules(user)
        if found is None:
            return
        policy, rules = found
        for r in rules:
            if r.module_matches(module) and "exec" in r.ops and (
                    r.rpc in ("*", name) or not r.typed):
                allowed = r.permit
                break
        else:
            allowed = (module, name) not in DEFAULT_DENY_OPS and policy.exec_default
        if not allowed:
            self._count("denied-operations")
            raise RpcError("access-denied", f"access to {name} is denied to {user} (NACM)",
                           type="protocol", info={"bad-element": name})

    # -- notifications ------------------------------------------------------------------------
    def allows_notification(self, user: str, content: etree._Element) -> bool:
        module = self.module_of_ns.get(ns_of(content) or "", "")
        if not module:
            module = {"urn:ietf:params:xml:ns:yang:ietf-netconf-notifications":
                      "ietf-netconf-notifications",
                      "urn:sluice:yang:sluice-events": "sluice-events"}.get(
                          ns_of(content) or "", "")
        found = self._rules(user)
        if found is None:
            return True
        policy, rules = found
        name = local(content)
        for r in rules:
            if r.module_matches(module) and "read" in r.ops and (
                    r.notification in ("*", name) or not r.typed):
                allowed = r.permit
                break
        else:
            allowed = policy.read_default
        if not allowed:
            self._count("denied-notifications")
        return allowed

    # -- reads ----------------------------------------------------------------------------------
    def reads_unrestricted(self, user: str) -> bool:
        """Whether `user` may read every data node outside /nacm (no read rule denies
        anything to them and the read default permits): a reply then needs no filtering."""
        found = self._rules(user)
        if found is None:
            return True
        policy, rules = found
        return policy.read_default and not any(
            "read" in r.ops and not r.permit and r.rpc is None and r.notification is None
            for r in rules)

    def filter_read(self, user: str, data: etree._Element) -> None:
        """Remove from `data` (a <data> element) every node `user` may not read. Blocking
        on large replies: call it where the reply is built (a worker thread)."""
        found = self._rules(user)
        if found is None:
            return
        policy, rules = found
        read = [(i, r) for i, r in enumerate(rules)
                if "read" in r.ops and (r.path is not None or not r.typed)]
        matched: dict[int, set[Any]] = {}
        for i, r in read:
            if r.path is not None and r.path:
                expr = xpath_of(_format(r.path))[1:]  # relative to <data>
                try:
                    # The elements themselves, kept alive: lxml hands out the same proxy
                    # for a node only while one exists (an id() could be reused).
                    matched[i] = set(data.xpath(expr, namespaces=self._nsmap()))
                except etree.XPathError:
                    matched[i] = set()
        # Below a decided node only a node a path rule selects (or one of its ancestors)
        # can be decided otherwise: the walk goes down those paths only, O(selected x depth)
        # rather than every node of a 10,000-service reply.
        on_path: set[Any] = set()
        for selected in matched.values():
            for el in selected:
                on_path.add(el)
                on_path.update(el.iterancestors())
        for top in list(data):
            module = self.module_of_ns.get(ns_of(top) or "", "")
            self._visit(data, top, module, read, matched, None, policy, on_path)

    def _nsmap(self) -> dict[str, str]:
        return {"sluice": self.namespace_of.get("sluice", ""), "nacm": NACM_NS}

    def _visit(self, parent: etree._Element, el: etree._Element, module: str,
               read: list[tuple[int, Rule]], matched: dict[int, set[Any]],
               inherited: int | None, policy: Policy, on_path: set[Any]) -> None:
        decision = inherited
        for i, r in read:
            if decision is not None and i >= decision:
                break
            if not r.module_matches(module):
                continue
            if r.path is None or not r.path or el in matched.get(i, ()):
                decision = i
                break
        if decision is not None:
            allowed = dict(read)[decision].permit
        elif el.getparent() is parent and local(el) in self.deny_all_tops \
                and ns_of(el) == NACM_NS:
            allowed = False  # nacm:default-deny-all
        else:
            allowed = policy.read_default
        if not allowed:
            parent.remove(el)
            return
        if el in on_path:
            for child in list(el):
                if child in on_path:
                    self._visit(el, child, module, read, matched, decision, policy, on_path)

    # -- writes ---------------------------------------------------------------------------------
    def check_write(self, user: str, changes: list[dict[str, Any]],
                    exists: Any = None) -> None:
        """access-denied (naming the node) unless every change may be written.
        `exists(path)`: whether a node exists, to tell create from update when a rule
        cares; absent: a merge/replace must be allowed as both."""
        found = self._rules(user)
        if found is None:
            return
        policy, rules = found
        for change in changes:
            path = str(change.get("path", "/"))
            steps = tuple(parse_path(path)) if path != "/" else ()
            accesses = WRITE_OPS.get(str(change.get("op", "merge")), ("update",))
            allowed = [self._write_allowed(rules, policy, steps, a, change.get("value"))
                       for a in accesses]
            if len(set(allowed)) > 1 and exists is not None:
                allowed = [allowed[1] if exists(path) else allowed[0]]
            if not all(allowed):
                self._count("denied-data-writes")
                raise RpcError("access-denied", f"{user} may not write {path} (NACM)",
                               path=xpath_of(path), info={"bad-element": _last(steps)})

    def _write_allowed(self, rules: list[Rule], policy: Policy, steps: tuple[Step, ...],
                       access: str, value: Any) -> bool:
        top = steps[0].name if steps else ""
        module = module_of(top) if top else "*"
        first: Rule | None = None
        for r in rules:
            if not r.module_matches(module) or access not in r.ops:
                continue
            if r.path is None and r.typed:
                continue  # an rpc or notification rule
            if r.path is None or _covers(r.path, steps):
                first = r
                break
        # A rule naming a node inside what is written decides for that node.
        for i, r in enumerate(rules):
            if first is not None and rules.index(first) <= i:
                break
            if r.path and access in r.ops and not r.permit and len(r.path) > len(steps) \
                    and _covers(steps, r.path[:len(steps)]) \
                    and _contains(value, r.path[len(steps):], access == "delete"):
                return False
        if first is not None:
            return first.permit
        if not steps or top in self.deny_all_tops:
            return False  # the whole datastore, or /nacm: default-deny-all
        return policy.write_default


def _format(steps: tuple[Step, ...]) -> str:
    return format_path(list(steps))


def _last(steps: tuple[Step, ...]) -> str:
    return steps[-1].name if steps else "config"


def _covers(rule: tuple[Step, ...], path: tuple[Step, ...]) -> bool:
    """The rule's node is `path`'s node or an ancestor (keys the rule names must match)."""
    if len(rule) > len(path):
        return False
    for r, p in zip(rule, path, strict=False):
        if r.name != p.name:
            return False
        keys = p.key_dict()
        if any(keys.get(k) != v for k, v in r.keys):
            return False
    return True


def _contains(value: Any, rest: tuple[Step, ...], delete: bool) -> bool:
    """Whether an edit's value (JSON) holds the node `rest` names (a delete holds all)."""
    if delete:
        return True
    node = value
    for step in rest:
        if isinstance(node, dict):
            node = node.get(step.name)
        if isinstance(node, list):
            keys = step.key_dict()
            node = [e for e in node if isinstance(e, dict)
                    and all(str(e.get(k)) == v for k, v in keys.items())]
            if not node:
                return False
            node = node[0]
        if node is None:
            return False
    return True
