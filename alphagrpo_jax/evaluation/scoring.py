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
          manifest_rows: Sequence[dict], compare: dict | None = None) -> str:
    """scores.json, report.md, scores.png (a bar chart per dimension) and samples.png (the first prompts' images)
    in `out`; `compare`: {table: {run: {dimension: score}}} shown side by side. Returns the report's text."""
    compare = compare or {}
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
        lines += [f"| {d} | {first[d]:.4f} | {final[d]:.4f} | {final[d] - first[d]:+.4f} |"
                  for d in final if d in first]
        lines.append("")
    for name, table in compare.items():
        lines += [f"## runs side by side: {name}", "", "| dimension | " + " | ".join(table) + " |",
                  "| --- |" + " ---: |" * len(table)]
        dims = sorted({d for col in table.values() for d in col}, key=lambda d: (d == "all", d))
        lines += [f"| {d} | " + " | ".join(f"{col[d]:.4f}" if d in col else "-" for col in table.values()) + " |"
                  for d in dims] + [""]
    if _bar_chart(out, bench.name, scores):
        lines += ["![scores per dimension](scores.png)", ""]
    shown = _sample_grid(out, manifest_rows)
    if shown:
        lines += ["## samples", "", "![the first prompts' first images, row by row](samples.png)", ""]
        lines += [f"{i}. `{r['key']}` {r['prompt']!r}" + (f" -> think: {r['think'][0]!r}" if r["think"][0] else "")
                  for i, r in enumerate(shown, 1)] + [""]
    text = "\n".join(lines)
    paths.write_text(paths.join(out, "report.md"), text)
    return text


def compare_runs(outs: Sequence[str], names: Sequence[str], own: dict) -> dict:
    """{table: {run: scores}}: this run's score tables (`own`) beside those of the evaluations in `outs`
    (their scores.json)."""
    tables: dict[str, dict] = {}
    for name, out in zip(names, outs):
        path = paths.join(out, "scores.json")
        if not paths.exists(path):
            from alphagrpo_jax.errors import UsageError

            raise UsageError(f"config.compare: {path}: no such file; expected a finished evaluation's folder")
        for table, values in json.loads(paths.read_text(path))["scores"].items():
            tables.setdefault(table, {})[name] = values
    for table, values in own.items():
        if table in tables:
            tables[table] = {"this run": values, **tables[table]}
    return {t: v for t, v in tables.items() if "this run" in v}


def _bar_chart(out: str, title: str, scores: dict) -> bool:
    tables = {name: t for name, t in scores.items() if t}
    if not tables:
        return False
    import io

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    name, table = next(iter(tables.items()))
    fig, ax = plt.subplots(figsize=(max(4.0, 0.5 * len(table) + 1), 3.5))
    ax.bar(range(len(table)), list(table.values()), color="tab:blue")
    ax.set_xticks(range(len(table)), list(table), rotation=60, ha="right", fontsize=7)
    ax.set_title(f"{title}: {name}")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    paths.write_bytes(paths.join(out, "scores.png"), buf.getvalue())
    return True


def _sample_grid(out: str, rows: Sequence[dict], count: int = 16, cell: int = 128) -> list[dict]:
    from PIL import Image

    from alphagrpo_jax.evaluation.files import grid, save_png

    shown = [r for r in rows if r.get("files")][:count]
    images = []
    for r in shown:
        with paths.open(r["files"][0], "rb") as f:
            images.append(np.asarray(Image.open(f).convert("RGB").resize((cell, cell))))
    if images:
        save_png(paths.join(out, "samples.png"), grid(images, 4, gap=4))
    return shown
