"""BGP announcement of the vips (active-active scale-out behind ECMP routers).

- `model`: the /bgp config section as objects, and what one route to one neighbour carries;
- `policy`: which vips are announced to whom, with which attributes (health, datapath, HA
  role, per-neighbour export settings): a pure function, unit-tested;
- `advertiser`: the small interface a BGP speaker offers the rest (ExaBGP today);
- `exabgp`: that interface over an ExaBGP child process, supervised, with its config file;
- `child`: the two processes the `sluice` binary runs for it (the speaker, the API bridge);
- `door`: the daemon's BGP component (Door-shaped), wiring config, health and role to it;
- `validate`: what the model's types cannot say (an MD5 key this kernel cannot sign with).
"""
