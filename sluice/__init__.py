"""The composition root: the `sluice` command's argument parser and the daemon's wiring.

The only package that imports everything (the core `appliance`, the front doors in
`northbound`, the console in `tui`); nothing imports it back.
"""
