"""Scores and the report: judging what is not judged yet (resumable through `judge.jsonl`), the official
aggregation, `scores.json` (numbers + provenance: judge, templates, prompt set, checkpoint, generation settings,
and why a number is not comparable with published ones) and `report.md` (tables per dimension)."""
from __future__ import annotations

import json
from collections.abc import Sequence

import numpy as np

from alphagrpo_jax import paths
from alphagrpo_jax.evaluation.records import Records
from alphagrpo_jax.evaluation.registry import Benchmark, Item

JUDGE_CHUNK = 64  # prompts judged between two appends to judge.jsonl


def judge_pending(bench: Benchmark, items: Sequence[Item], manifest_rows: dict, out: str, variant: str,
                  model_name: str, judge, templates: dict[str, str]) -> list[dict]:
    """Judges every generated item not in `<out>/judge.jsonl`, appending as it goes; all score rows."""
    done = Records(paths.join(out, "judge.jsonl"))
    todo = [it for it in items if it.key in manifest_rows and it.key not in done]
    for start in range(0, len(todo), JUDGE_CHUNK):
        chunk = todo[start:start + JUDGE_CHUNK]
        for row in bench.judge(out, chunk, [manifest_rows[it.key] for it in chunk], variant, model_name, judge.ask,
                               templates):
            done.add(row)
    rows = [done.rows[it.key] for it in items if it.key in done]
    bench.write_scores(out, rows, variant, model_name)
    return rows


def per_dimension(rows: Sequence[dict], field: str) -> dict[str, float]:
    """Mean of the per-image values `field` per dimension and "all" (rows without it are left out)."""
    dims: dict[str, list[float]] = {}
    for r in rows:
        if field in r:
            dims.setdefault(r["dimension"], []).extend(r[field])
    out = {d: float(np.mean(v)) for d, v in sorted(dims.items())}
    if dims:
        out["all"] = float(np.mean([x for v in dims.values() for x in v]))
    return out


def write(out: str, bench: Benchmark, variant: str, scores: dict, provenance: dict, caveats: list[str],
          manifest_rows: Sequence[dict]) -> str:
    """scores.json and report.md in `out`; returns the report's text."""
    paths.write_text(paths.join(out, "scores.json"),
                     json.dumps({"benchmark": bench.name, "variant": variant, "scores": scores,
                                 "comparable_to_published": not caveats, "caveats": caveats,
                                 "provenance": provenance}, indent=1, sort_keys=True))
    lines = [f"# {bench.name} ({variant or 'default'})", "",
             f"{len(manifest_rows)} prompts, checkpoint `{provenance.get('checkpoint')}`.", ""]
    if caveats:
        lines += ["**Not comparable with published numbers:** " + "; ".join(caveats) + ".", ""]
    for title, table in scores.items():
        if not table:
            continue
        lines += [f"## {title}", "", "| dimension | score |", "| --- | ---: |"]
        lines += [f"| {k} | {v:.4f} |" for k, v in table.items()] + [""]
    first, final = scores.get("first draw", {}), scores.get("refined", {})
    if first and final:
        lines += ["## first draw vs refined", "", "| dimension | first draw | refined | change |",
                  "| --- | ---: | ---: | ---: |"]
        lines += [f"| {d} | {first[d]:.4f} | {final[d]:.4f} | {final[d] - first[d]:+.4f} |" for d in final if d in first]
        lines.append("")
    samples = [r for r in manifest_rows if r.get("think") and r["think"][0]][:8]
    if samples:
        lines += ["## think text of the first prompts", ""]
        lines += [f"- `{r['key']}` {r['prompt']!r}: {r['think'][0]!r}" for r in samples] + [""]
    text = "\n".join(lines)
    paths.write_text(paths.join(out, "report.md"), text)
    return text
