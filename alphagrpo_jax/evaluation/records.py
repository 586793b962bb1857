"""Append-only JSONL records that survive a kill: `manifest.jsonl` (one row per finished prompt) and
`judge.jsonl` (one row per judged prompt). On load a torn last line is dropped and, for the manifest, rows whose
image files are gone; the file is rewritten (atomically) when anything was dropped, so a resumed run appends
after whole rows only and never duplicates one."""
from __future__ import annotations

import json
from collections.abc import Callable

from alphagrpo_jax import paths


class Records:
    def __init__(self, path: str, keep: Callable[[dict], bool] = lambda row: True):
        self.path = path
        self.rows: dict[str, dict] = {}
        text = paths.read_text(path) if paths.exists(path) else ""
        lines = text.splitlines(keepends=True)
        for line in lines:
            try:
                row = json.loads(line) if line.endswith("\n") else None
            except json.JSONDecodeError:
                row = None
            if isinstance(row, dict) and "key" in row and keep(row):
                self.rows[row["key"]] = row
        if len(self.rows) != len(lines):
            paths.write_text(path, "".join(json.dumps(r) + "\n" for r in self.rows.values()))

    def __contains__(self, key: str) -> bool:
        return key in self.rows

    def add(self, row: dict) -> None:
        if row["key"] in self.rows:
            raise ValueError(f"{self.path}: {row['key']!r} recorded twice")
        paths.append_text(self.path, json.dumps(row) + "\n")
        self.rows[row["key"]] = row
