"""Prefixes of XPath values (NACM rule paths) between the XML and the JSON encodings.

XML binds each prefix with xmlns in the document and prefixes every step; JSON (what the
config service and libyang store) names the module, only where it changes (RFC 7951 6.11).
Node names only: literals in quotes and function names are left alone.
"""

from __future__ import annotations

import re
from collections.abc import Callable

# A quoted literal, or a (prefixed) name not followed by '(' (a function) or '::' (an axis).
_TOKEN = re.compile(r"""'[^']*'|"[^"]*"|(?<![\w.-])(?:([A-Za-z_][\w.-]*):)?"""
                    r"""([A-Za-z_][\w.-]*)(?![\w.-]*\s*\()(?!::)""")


def _rewrite(text: str, step: Callable[[str | None, str], str]) -> str:
    def sub(m: re.Match[str]) -> str:
        if m.group(2) is None:
            return m.group(0)  # a literal
        return step(m.group(1), m.group(2))

    return _TOKEN.sub(sub, text)


def xml_to_json(text: str, module_of_prefix: dict[str, str]) -> str:
    current: list[str | None] = [None]

    def step(prefix: str | None, name: str) -> str:
        if prefix is None:
            return name
        module = module_of_prefix.get(prefix, prefix)
        if module == current[0]:
            return name
        current[0] = module
        return f"{module}:{name}"

    return _rewrite(text, step)


def json_to_xml(text: str) -> str:
    """Module names stay the prefixes (the writer binds them); every step gets one."""
    current: list[str | None] = [None]

    def step(prefix: str | None, name: str) -> str:
        if prefix is not None:
            current[0] = prefix
            return f"{prefix}:{name}"
        return f"{current[0]}:{name}" if current[0] else name

    return _rewrite(text, step)
