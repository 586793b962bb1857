"""Benchmark evaluation: official prompt sets in, each official scorer's output layout out.

registry.py holds the benchmarks (one file each: geneval, tiif, dpg, wise, gedit; the toy one lives with the
toy plug-in); runner.py draws the images (batched, resumable); judge.py asks an OpenAI-compatible judge;
report.py writes report.md. The program on top is `python -m alphagrpo_jax.evaluate` (docs/evaluation.md).
"""
