"""BAGEL (ByteDance-Seed/Bagel) in Flax NNX: Qwen2 Mixture-of-Transformers LLM, SigLIP NaViT, FLUX AE."""
