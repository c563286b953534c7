"""The `killstream` command (console script: killstream_workstation.cli.main:main)."""
