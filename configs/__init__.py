"""Training configs: each file's `get_config(arg)` returns an `ml_collections.ConfigDict`.

Programs load them by path, `--config configs/toy_rt2i.py[:arg]` (alphagrpo_jax/cli.py); code imports them as a
package (`from configs import toy_rt2i`), installed next to alphagrpo_jax by setup.py. docs/configs.md.
"""
