"""Data paths: the small XPath subset every front door uses to name a config node.

    /sluice:load-balancer/service[name='web']/endpoint[address='198.18.1.1'][port='80']/weight

The module prefix is optional on every step. Predicates select list entries by key, or a
leaf-list value with `[.='value']`. Values are quoted with ' or ".
"""

from __future__ import annotations

from dataclasses import dataclass, field

from appliance.config.errors import ConfigError, FieldError

MODULE = "sluice"
# Top-level containers as the JSON documents name them.
LOAD_BALANCER = f"{MODULE}:load-balancer"
DATAPATH = f"{MODULE}:datapath"
SYSTEM = f"{MODULE}:system"
BGP = f"{MODULE}:bgp"
# Top-level containers of other modules kept in the same datastore (documents and paths
# name them with their own module): NACM (RFC 8341) stays the IETF module it is.
NACM_MODULE = "ietf-netconf-acm"
SECTION_MODULES = {"nacm": NACM_MODULE}
MODULES = (MODULE, *SECTION_MODULES.values())


def module_of(top: str) -> str:
    """The module of a top-level container (by its name)."""
    return SECTION_MODULES.get(top, MODULE)


class PathError(ConfigError):
    tag = "invalid-value"

    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"bad path {path!r}: {message}", [FieldError(path, message)])


@dataclass(frozen=True)
class Step:
    name: str
    keys: tuple[tuple[str, str], ...] = field(default=())

    def key_dict(self) -> dict[str, str]:
        return dict(self.keys)

    def __str__(self) -> str:
        preds = "".join(f"[{k}='{v}']" for k, v in self.keys)
        return f"{self.name}{preds}"


def parse_path(path: str) -> list[Step]:
    """Split a data path into steps; '/' alone is the whole configuration (no steps)."""
    if not path.startswith("/"):
        raise PathError(path, "a data path starts with '/'")
    steps: list[Step] = []
    i, n = 1, len(path)
    while i < n:
        j = i
        while j < n and path[j] not in "/[":
            j += 1
        name = path[i:j]
        if ":" in name:
            prefix, name = name.split(":", 1)
            if prefix not in MODULES:
                raise PathError(path, f"unknown module prefix {prefix!r}")
        if not name:
            raise PathError(path, "empty step")
        keys: list[tuple[str, str]] = []
        while j < n and path[j] == "[":
            close = _parse_predicate(path, j, keys)
            j = close + 1
        steps.append(Step(name, tuple(keys)))
        if j < n and path[j] != "/":
            raise PathError(path, f"unexpected {path[j]!r} at {j}")
        i = j + 1
    return steps


def _parse_predicate(path: str, start: int, keys: list[tuple[str, str]]) -> int:
    eq = path.find("=", start)
    if eq < 0:
        raise PathError(path, "predicate without '='")
    key = path[start + 1 : eq].strip()
    if ":" in key:
        key = key.split(":", 1)[1]
    quote_at = eq + 1
    while quote_at < len(path) and path[quote_at] == " ":
        quote_at += 1
    if quote_at >= len(path) or path[quote_at] not in "'\"":
        raise PathError(path, "predicate value must be quoted")
    quote = path[quote_at]
    end = path.find(quote, quote_at + 1)
    if end < 0:
        raise PathError(path, "unterminated quote")
    close = path.find("]", end)
    if close < 0:
        raise PathError(path, "missing ']'")
    keys.append((key, path[quote_at + 1 : end]))
    return close


def format_path(steps: list[Step]) -> str:
    if not steps:
        return "/"
    first, *rest = steps
    return "/" + "/".join([f"{module_of(first.name)}:{first}", *(str(s) for s in rest)])


def service_path(name: str) -> str:
    return f"/{LOAD_BALANCER}/service[name='{name}']"
