"""Shared pytest set-up for the Sluice tests."""

import sys
from pathlib import Path

# Make tests/ importable whatever the import mode (prepend puts it on sys.path already;
# importlib does not), so the plugin below and `import netkit` in tests both resolve.
_TESTS_DIR = str(Path(__file__).resolve().parent)
if _TESTS_DIR not in sys.path:
    sys.path.insert(0, _TESTS_DIR)

# netkit: the network-namespace test kit (`netkit` fixture, leftover sweep);
# daemonkit: a real `sluice run` on a temporary database (`daemon` fixture);
# dpkit: the eBPF datapath (`lb_program` once per session, `lbnet` client/LB/backends);
# datapathgate: with SLUICE_REQUIRE_DATAPATH=1 (`make test`), a datapath test skipped on a
# machine that can run it (root, bcc, bpffs) fails the session;
# hakit: two appliances with keepalived between two bridges (`pair`);
# qoskit: the QoS program once per session (`qos_program`) and `qnet` on it;
# suiteorder: files longest first, so the two xdist workers finish together.
pytest_plugins = ["netkit", "daemonkit", "dpkit", "datapathgate", "hakit", "qoskit",
                  "suiteorder"]
