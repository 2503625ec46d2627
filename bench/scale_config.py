"""The synthetic service set the control-plane benches load (test addresses only)."""

from __future__ import annotations


def services(n: int, endpoints: int, *, spread_ports: bool = False) -> list[dict]:
    """`n` services with `endpoints` endpoints each; VIPs in 198.18/16, endpoints in 198.19/16.

    Endpoint addresses repeat every 250 services; `spread_ports` gives each block of 250 its
    own endpoint port, so rows also differ by port (the SNMP endpoint table's index).
    """
    return [
        {
            "name": f"svc{i}",
            "vip": f"198.18.{i // 250}.{i % 250 + 1}",
            "port": 80,
            "endpoint": [
                {
                    "address": f"198.19.{j}.{i % 250 + 1}",
                    "port": 8080 + (i // 250 if spread_ports else 0),
                }
                for j in range(endpoints)
            ],
        }
        for i in range(n)
    ]
