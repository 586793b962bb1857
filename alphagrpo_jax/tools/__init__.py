"""Command-line tools (compile checks, reports)."""
