"""Where the appliance's data files are: the bpf/ C sources, the YANG modules, the MIB.

From a source checkout (or an editable install) they sit beside the packages. In the
PyInstaller bundle (image/sluice.spec) they are copied under ``sys._MEIPASS`` in the same
relative layout, so one root decides for all of them. ``SLUICE_DATA_DIR`` overrides the
root, for an operator who wants to try a patched bpf/ without rebuilding the binary.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path


def frozen() -> bool:
    """True when running from the PyInstaller bundle."""
    return bool(getattr(sys, "frozen", False)) and hasattr(sys, "_MEIPASS")


def data_root() -> Path:
    """The directory holding ``bpf/``, ``appliance/yang/`` and ``northbound/snmp/mibs/``."""
    override = os.environ.get("SLUICE_DATA_DIR")
    if override:
        return Path(override)
    if frozen():
        return Path(sys._MEIPASS)  # type: ignore[attr-defined]
    return Path(__file__).resolve().parent.parent


def bpf_dir() -> Path:
    """The eBPF C sources (lb.c and lib/), compiled by bcc at run time."""
    return data_root() / "bpf"


def yang_dir() -> Path:
    """The YANG modules the config service and NETCONF load."""
    return data_root() / "appliance" / "yang"


def mib_dir() -> Path:
    """The SNMP MIB module(s) an NMS loads."""
    return data_root() / "northbound" / "snmp" / "mibs"
