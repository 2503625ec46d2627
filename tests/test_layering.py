"""The arrows point one way: front doors and clients -> core -> bpf sources.

- `appliance` (the core) imports nothing of `northbound`, `tui` or `sluice`;
- `northbound` (the doors) imports the core, never `tui` or `sluice`;
- `tui` (the console, a client of the control socket) imports only `appliance.control`;
- only `sluice` (the composition root) may import everything.

Checked on the source (every import statement, lazy ones inside functions included), so a
cycle hidden behind a function-level import fails here too.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FIRST_PARTY = ("appliance", "northbound", "tui", "sluice")

# package -> (forbidden first-party packages, allowed prefixes within those it may use)
RULES: dict[str, tuple[set[str], tuple[str, ...] | None]] = {
    "appliance": ({"northbound", "tui", "sluice"}, None),
    "northbound": ({"tui", "sluice"}, None),
    "tui": ({"northbound", "sluice"}, ("appliance.control",)),
}


def imports_of(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(), str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module))
    return found


def violations(package: str) -> list[str]:
    forbidden, allowed_core = RULES[package]
    bad = []
    for path in sorted((ROOT / package).rglob("*.py")):
        for line, module in imports_of(path):
            top = module.split(".")[0]
            if top not in FIRST_PARTY or top == package:
                continue
            where = f"{path.relative_to(ROOT)}:{line} imports {module}"
            outside = allowed_core is not None and not module.startswith(allowed_core)
            if top in forbidden or outside:
                bad.append(where)
    return bad


@pytest.mark.parametrize("package", sorted(RULES))
def test_arrows_point_one_way(package: str) -> None:
    assert violations(package) == []


def test_the_check_sees_a_backward_import(tmp_path: Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text("def f():\n    from northbound.netconf import NetconfServer\n")
    assert imports_of(sample) == [(2, "northbound.netconf")]
