"""The `sumtune` command line: one parser with a subcommand per module."""
