"""alphagrpo_jax: AlphaGRPO for BAGEL-class unified multimodal models in JAX/Flax NNX.

Importing the package is cheap on purpose: no jax, flax or model code is imported here.
"""
__version__ = "0.1.0"
