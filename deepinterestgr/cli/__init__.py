"""The `dig` command line."""
