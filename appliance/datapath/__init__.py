"""The eBPF datapath driver: the only part of the appliance that touches bcc.

- ``program``: compile/load bpf/lb.c with bcc, pinned maps, TC attach (imports bcc lazily);
- ``driver``: config -> map contents, counters back;
- ``conntrack``: conntrack listing, flushing, expiry and the session gauges;
- ``tables``: selection tables (weighted sequence, Maglev) in pure Python;
- ``reconciler``: ``DatapathReconciler``, the daemon's hook (start/apply/close).

Importing this package does not import bcc, so the daemon runs without it when the
datapath is off.
"""
