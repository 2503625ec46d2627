"""The HTTP door: loxilb's REST API (/netlox/v1, the part kube-loxilb uses), RESTCONF,
Prometheus metrics (/metrics) and the OpenAPI document, on aiohttp in the daemon's loop.

- `door`: the Door (listeners where /sluice:management/http says, TLS or plain);
- `auth`: who is asking (HTTP basic over TLS, API tokens) and what their role lets them do;
- `wire`: JSON in and out exactly as kube-loxilb's client wants it, loxilb's error envelope;
- `loxilb_model`: loxilb's rule JSON ↔ a Sluice service (codes, checks, naming);
- `loxilb_api`: the /netlox/v1 routes, each write one commit through the config service;
- `loxilb_settings`: cistate and BGP, stored in the config's /sluice:loxilb section;
- `metrics`: Prometheus exposition from the state snapshot (never a map walk per scrape);
- `openapi`: the OpenAPI 3 document of /netlox/v1;
- `restconf`, `restconf_paths`, `restconf_codec`, `restconf_events`: RESTCONF (RFC 8040).
"""
