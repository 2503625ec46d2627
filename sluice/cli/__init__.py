"""The `sluice` command line: subcommands for the daemon, the console and the CLI nouns."""
