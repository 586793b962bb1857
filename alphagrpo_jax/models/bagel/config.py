"""BAGEL configuration: architecture numbers (from the release jsons) and run-time numerics.

Presets: `bagel_7b_mot()` (the release), `tiny_a()` (the parity goldens), `small_100m()` (benchmarks).
`from_release_dir(path)` reads `llm_config.json`, `vit_config.json` and, if present, our
`bagel_config.json` (top-level numbers; the release builds them in code, so defaults are the release's).
"""
from __future__ import annotations

import dataclasses
import json
from typing import Any

from alphagrpo_jax import paths


class ConfigError(ValueError):
    pass


@dataclasses.dataclass(frozen=True)
class LLMConfig:
    hidden_size: int = 3584
    num_layers: int = 28
    num_heads: int = 28
    num_kv_heads: int = 4
    head_dim: int = 128
    intermediate_size: int = 18944
    vocab_size: int = 152064
    rms_norm_eps: float = 1e-6
    rope_theta: float = 1_000_000.0

    def __post_init__(self):
        if self.num_heads % self.num_kv_heads:
            raise ConfigError(f"num_heads {self.num_heads} not divisible by num_kv_heads {self.num_kv_heads}")

    @classmethod
    def from_hf_json(cls, path: str) -> "LLMConfig":
        d = _read_json(path)
        _require(d, path, "hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
                 "intermediate_size", "vocab_size")
        if d.get("model_type", "qwen2") != "qwen2":
            raise ConfigError(f"{path}: model_type must be 'qwen2', got {d.get('model_type')!r}")
        if d.get("rope_scaling") not in (None, {}):
            raise ConfigError(f"{path}: rope_scaling {d['rope_scaling']!r} is not supported (BAGEL uses none)")
        heads = int(d["num_attention_heads"])
        return cls(
            hidden_size=int(d["hidden_size"]), num_layers=int(d["num_hidden_layers"]), num_heads=heads,
            num_kv_heads=int(d["num_key_value_heads"]),
            head_dim=int(d.get("head_dim") or d["hidden_size"] // heads),
            intermediate_size=int(d["intermediate_size"]), vocab_size=int(d["vocab_size"]),
            rms_norm_eps=float(d.get("rms_norm_eps", 1e-6)), rope_theta=float(d.get("rope_theta", 1e6)))


@dataclasses.dataclass(frozen=True)
class ViTConfig:
    """SigLIP NaViT as BAGEL runs it. `num_layers` is the number that RUNS (the json value minus one)."""
    hidden_size: int = 1152
    intermediate_size: int = 4304
    num_heads: int = 16
    num_layers: int = 26
    patch_size: int = 14
    image_size: int = 980
    num_channels: int = 3
    layer_norm_eps: float = 1e-6

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    @property
    def max_patches_per_side(self) -> int:
        return self.image_size // self.patch_size

    @classmethod
    def from_hf_json(cls, path: str) -> "ViTConfig":
        d = _read_json(path)
        _require(d, path, "hidden_size", "intermediate_size", "num_attention_heads", "num_hidden_layers")
        return cls(
            hidden_size=int(d["hidden_size"]), intermediate_size=int(d["intermediate_size"]),
            num_heads=int(d["num_attention_heads"]),
            num_layers=int(d["num_hidden_layers"]) - 1,  # every BAGEL loader drops the last layer
            patch_size=int(d.get("patch_size", 14)), image_size=int(d.get("image_size", 980)),
            num_channels=int(d.get("num_channels", 3)), layer_norm_eps=float(d.get("layer_norm_eps", 1e-6)))


@dataclasses.dataclass(frozen=True)
class VAEConfig:
    """The image autoencoder: FLUX's (`AutoEncoderParams`, the release) or a parameter-free "pixel" one
    (space-to-depth by `downsample`, z_channels = 3 * downsample**2) for toy worlds."""
    kind: str = "flux"
    resolution: int = 256
    in_channels: int = 3
    ch: int = 128
    out_ch: int = 3
    ch_mult: tuple[int, ...] = (1, 2, 4, 4)
    num_res_blocks: int = 2
    z_channels: int = 16
    scale_factor: float = 0.3611
    shift_factor: float = 0.1159
    downsample: int = 8

    def __post_init__(self):
        object.__setattr__(self, "ch_mult", tuple(self.ch_mult))
        if self.kind not in ("flux", "pixel"):
            raise ConfigError(f"vae kind {self.kind!r} must be 'flux' or 'pixel'")
        if self.kind == "pixel":
            if self.z_channels != self.in_channels * self.downsample ** 2:
                raise ConfigError(f"pixel autoencoder: z_channels must be {self.in_channels}*downsample^2 = "
                                  f"{self.in_channels * self.downsample ** 2}, got {self.z_channels}")
            return
        if 2 ** (len(self.ch_mult) - 1) != self.downsample:
            raise ConfigError(f"ch_mult {self.ch_mult} gives downsample {2 ** (len(self.ch_mult) - 1)}, "
                              f"not {self.downsample}")


@dataclasses.dataclass(frozen=True)
class TokenIds:
    """BAGEL's `new_token_ids` (Qwen2.5 ids in the release)."""
    bos: int = 151644           # <|im_start|>
    eos: int = 151645           # <|im_end|>
    start_of_image: int = 151652  # <|vision_start|>
    end_of_image: int = 151653    # <|vision_end|>


@dataclasses.dataclass(frozen=True)
class BagelConfig:
    llm: LLMConfig = LLMConfig()
    vit: ViTConfig = ViTConfig()
    vae: VAEConfig = VAEConfig()
    tokens: TokenIds = TokenIds()
    latent_patch_size: int = 2
    max_latent_size: int = 64
    vit_max_num_patch_per_side: int = 70
    timestep_shift: float = 1.0            # training forward (logit-normal t shift)
    inference_timestep_shift: float = 3.0  # sampler default
    think_system_prompt: str | None = None  # the think-mode system prompt trained with; None = ours (prompts.py)
    # Run-time numerics and kernels (not architecture).
    param_dtype: str = "bfloat16"
    dtype: str = "bfloat16"               # activations; matmuls accumulate in fp32 regardless
    attention: str = "jnp"                # "jnp" | "splash" (TPU Pallas) | "cudnn" (GPU)
    remat: str = "none"                   # see models/layers.py REMAT_POLICIES
    # LoRA adapters on the LLM's per-expert projections (both experts); rank 0 = none.
    lora_rank: int = 0
    lora_alpha: float = 0.0
    lora_targets: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")

    @property
    def lora_scale(self) -> float:
        return self.lora_alpha / self.lora_rank if self.lora_rank else 0.0

    @property
    def latent_downsample(self) -> int:
        return self.vae.downsample * self.latent_patch_size

    @property
    def patch_latent_dim(self) -> int:
        return self.latent_patch_size ** 2 * self.vae.z_channels

    def replace(self, **kw) -> "BagelConfig":
        return dataclasses.replace(self, **kw)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "BagelConfig":
        d = dict(d)
        sub = dict(llm=LLMConfig, vit=ViTConfig, vae=VAEConfig, tokens=TokenIds)
        for k, c in sub.items():
            if k in d and isinstance(d[k], dict):
                d[k] = c(**d[k])
        return cls(**d)


def _read_json(path: str) -> dict:
    if not paths.exists(path):
        raise ConfigError(f"{path}: file not found")
    try:
        with paths.open(path) as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise ConfigError(f"{path}: not valid JSON: {e}") from e


def _require(d: dict, path: str, *keys: str) -> None:
    missing = [k for k in keys if k not in d]
    if missing:
        raise ConfigError(f"{path}: missing field(s) {missing}")


def from_release_dir(path: str, **overrides) -> BagelConfig:
    """Reads a BAGEL release folder (llm_config.json, vit_config.json, optional bagel_config.json)."""
    llm = LLMConfig.from_hf_json(paths.join(path, "llm_config.json"))
    vit = ViTConfig.from_hf_json(paths.join(path, "vit_config.json"))
    top: dict[str, Any] = {}
    bagel_json = paths.join(path, "bagel_config.json")
    if paths.exists(bagel_json):
        d = _read_json(bagel_json)
        for k in ("latent_patch_size", "max_latent_size", "vit_max_num_patch_per_side", "timestep_shift",
                  "inference_timestep_shift", "think_system_prompt"):
            if k in d:
                top[k] = d[k]
        if "new_token_ids" in d:
            t = d["new_token_ids"]
            top["tokens"] = TokenIds(bos=t["bos_token_id"], eos=t["eos_token_id"],
                                     start_of_image=t["start_of_image"], end_of_image=t["end_of_image"])
        if "vae_config" in d:
            v = dict(d["vae_config"])
            top["vae"] = VAEConfig(**{f.name: v[f.name] for f in dataclasses.fields(VAEConfig) if f.name in v})
        if "connector_act" in d and d["connector_act"] != "gelu_pytorch_tanh":
            raise ConfigError(f"{bagel_json}: connector_act {d['connector_act']!r} unsupported")
    top.update(overrides)
    return BagelConfig(llm=llm, vit=vit, **top)


# ------------------------------------------------------------------------------------------------ presets

def bagel_7b_mot(**kw) -> BagelConfig:
    return BagelConfig(**kw)


def tiny_a(**kw) -> BagelConfig:
    """The configuration of tests/goldens/bagel_tiny_a (also readable with from_release_dir)."""
    return BagelConfig(
        llm=LLMConfig(hidden_size=64, num_layers=2, num_heads=4, num_kv_heads=2, head_dim=16,
                      intermediate_size=128, vocab_size=512),
        vit=ViTConfig(hidden_size=32, intermediate_size=64, num_heads=2, num_layers=2),
        vae=VAEConfig(ch=32, ch_mult=(1, 1, 2, 2)),
        tokens=TokenIds(bos=1, eos=2, start_of_image=3, end_of_image=4),
        max_latent_size=8, **kw)


def small_100m(**kw) -> BagelConfig:
    """~100M params per expert stack: for CPU benchmarks (Qwen2.5 vocab kept small)."""
    return BagelConfig(
        llm=LLMConfig(hidden_size=768, num_layers=8, num_heads=12, num_kv_heads=4, head_dim=64,
                      intermediate_size=2048, vocab_size=8192),
        vit=ViTConfig(hidden_size=384, intermediate_size=1024, num_heads=6, num_layers=4),
        vae=VAEConfig(ch=32, ch_mult=(1, 1, 2, 2)),
        tokens=TokenIds(bos=1, eos=2, start_of_image=3, end_of_image=4),
        max_latent_size=32, **kw)


def toy(**kw) -> BagelConfig:
    """The toy world's base model (32x32 images; `python -m alphagrpo_jax.sft --config configs/toy_sft.py`).

    Parameter-free pixel autoencoder: space-to-depth by 2 -> 16x16x12 latents, 2x2 latent patches -> an 8x8
    grid of 48-d tokens (4x4 px each). A token must stay well below the hidden size: llm2vae's output spans at
    most `hidden_size` directions, and noise in the other directions of the latent would never be removed.
    Toy pixels in [-1, 1] have mean -0.84 and std 0.545 (mostly black), so z = 1.84 * (x + 0.84) is ~unit
    variance, the scale flow matching's N(0, 1) noise assumes. The ViT sees 28x28 pictures (2x2 patches of
    14 px). Text: a 512-id byte-level BPE (toy/tokenizer.py; specials 0..4).
    """
    return BagelConfig(**{
        **dict(
            llm=LLMConfig(hidden_size=128, num_layers=4, num_heads=4, num_kv_heads=2, head_dim=32,
                          intermediate_size=384, vocab_size=512),
            vit=ViTConfig(hidden_size=32, intermediate_size=64, num_heads=2, num_layers=1, image_size=28),
            vae=VAEConfig(kind="pixel", downsample=2, z_channels=12, scale_factor=1.84, shift_factor=-0.84),
            tokens=TokenIds(bos=1, eos=2, start_of_image=3, end_of_image=4),
            max_latent_size=8, vit_max_num_patch_per_side=2, timestep_shift=3.0,
            param_dtype="float32", dtype="float32"),
        **kw})


PRESETS = {"bagel_7b_mot": bagel_7b_mot, "tiny_a": tiny_a, "small_100m": small_100m, "toy": toy}


def preset(name: str, **kw) -> BagelConfig:
    if name not in PRESETS:
        raise ConfigError(f"unknown model preset {name!r}; known: {sorted(PRESETS)}")
    return PRESETS[name](**kw)
