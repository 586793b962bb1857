"""The toy world's image transforms: its 32x32 pictures stay 32 px for the autoencoder and become 28 px (2x2
patches) for the ViT. Registered as "toy" in models/bagel/image_transform.TRANSFORMS by toy/plugin.py."""
from alphagrpo_jax.models.bagel.image_transform import ImageTransform

VAE_TRANSFORM = ImageTransform(32, 32, 16)
VIT_TRANSFORM = ImageTransform(28, 28, 14)
