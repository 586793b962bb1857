"""Every built-in benchmark, registered (each module registers itself on import); plug-ins add their own.

    from alphagrpo_jax.evaluation import benchmarks
    bench = benchmarks.get("geneval")
"""
from alphagrpo_jax.evaluation import dpg, gedit, geneval, tiif, wise  # noqa: F401
from alphagrpo_jax.evaluation.registry import get, names  # noqa: F401
