"""One process of tests/parallel/test_multiprocess.py: `python -m tests.parallel.multiprocess_worker OUT_PREFIX`.

Devices come from XLA_FLAGS; the distributed runtime, when JAX_COORDINATOR_ADDRESS / JAX_NUM_PROCESSES /
JAX_PROCESS_ID are set, from `parallel.distributed.maybe_initialize`. The workload is a GRPO learner step of the
tiny golden release with LoRA on a (fsdp=4, tensor=2) mesh over every process's devices: a fixed synthetic RT2I
round (the same numbers on every host, seeded) of which each process reads only its own samples through the
host-sharded data pipeline and assembles them into global arrays; on-policy log-probs; then grads, an AdamW
update, and grads again. Writes OUT_PREFIX.<process>.json with the losses, the grad norm, a checksum of the
updated adapters and the sample ids this process read.
"""
import json
import sys

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from alphagrpo_jax import optim
from alphagrpo_jax.data import pipeline
from alphagrpo_jax.models.bagel import checkpoint, config as config_lib, model as model_lib
from alphagrpo_jax.models.bagel.llm import KVCache
from alphagrpo_jax.parallel import distributed, mesh as mesh_lib, rules as rules_lib
from alphagrpo_jax.rl import learner as learner_lib, lora
from alphagrpo_jax.rl.rollout import Rollout
from alphagrpo_jax.sampling import image as image_lib
from alphagrpo_jax.sampling.cfg import CFGConfig
from alphagrpo_jax.sampling.context import Context
from tests.models.bagel.parity_utils import GOLDENS

B, S, T, W = 8, 24, 4, 2          # samples, cache slots, think tokens, SDE window steps
# No CFG: one image branch keeps the compile (x3 processes) short; CFG batching has its own tests.
SCFG = image_lib.ImageSamplerConfig(num_timesteps=4, shift=3.0, cfg=CFGConfig(1.0), sde_window=W)
LCFG = learner_lib.LossConfig(image_clip_eps=1e-3)


def synthetic_round(cfg) -> dict[str, np.ndarray]:
    """Every array of one round, [B, ...] first (caches: [layers, B, ...]), identical on every host."""
    rng = np.random.default_rng(0)
    c = cfg.llm
    gh = gw = 2
    kv = lambda: rng.normal(0, 0.5, (c.num_layers, B, S, c.num_kv_heads, c.head_dim)).astype(np.float32)  # noqa
    prompt_len = 8 + np.arange(B) % 3
    think_len = 1 + np.arange(B) % T
    pos = (np.arange(gh)[:, None] * cfg.max_latent_size + np.arange(gw)).reshape(-1)
    adv = rng.normal(size=B)  # not centred, so the on-policy loss is not ~0 either
    return dict(
        k=kv(), v=kv(), length=(prompt_len + T + 2).astype(np.int32), rope=(prompt_len + T + 2).astype(np.int32),
        prompt_len=prompt_len.astype(np.int32), prompt_rope=prompt_len.astype(np.int32),
        think_ids=rng.integers(5, c.vocab_size, (B, T)).astype(np.int32), think_len=think_len.astype(np.int32),
        trajectory=rng.normal(size=(B, SCFG.num_timesteps, gh * gw, cfg.patch_latent_dim)).astype(np.float32),
        latent_pos=np.broadcast_to(pos, (B, gh * gw)).astype(np.int32),
        adv=adv.astype(np.float32))


def global_rollout(data: dict, ids: list[int], mesh) -> tuple[Rollout, jax.Array]:
    """This process's samples `ids` -> global arrays sharded by the activation rules (batch over data x fsdp)."""
    def put(name, names):
        local = data[name][:, ids] if names[0] == "layers" else data[name][ids]
        shape = data[name].shape
        return jax.make_array_from_process_local_data(rules_lib.activation_sharding(shape, names, mesh), local,
                                                      shape)

    cache = ("layers", "batch", "kv_length", "act_kv_heads", None)
    row = ("batch",)
    ctx = Context(KVCache(put("k", cache), put("v", cache), put("length", row)), put("rope", row))
    zeros = lambda shape, names: jax.jit(  # noqa: E731
        lambda: jnp.zeros(shape), out_shardings=rules_lib.activation_sharding(shape, names, mesh))()
    n, d = data["trajectory"].shape[2:]
    r = Rollout(ctx=ctx, text_uncond=None, img_uncond=None, prompt_len=put("prompt_len", row),
                prompt_rope=put("prompt_rope", row), think_ids=put("think_ids", ("batch", "length")),
                think_logp=zeros((B, T), ("batch", "length")), think_len=put("think_len", row),
                think_truncated=zeros((B,), row).astype(bool),
                trajectory=put("trajectory", ("batch", None, "length", "act_latent")), window_start=np.int32(1),
                image_logp=zeros((B, W), ("batch", None)),
                image_means=zeros((B, W, n, d), ("batch", None, "length", None)),
                latent_pos=put("latent_pos", ("batch", "length")))
    return r, put("adv", row)


def main(out_prefix: str) -> None:
    distributed.maybe_initialize()
    mesh = mesh_lib.make_mesh({"fsdp": 4, "tensor": 2})
    cfg = config_lib.from_release_dir(str(GOLDENS), param_dtype="float32", dtype="float32")
    graphdef, state = checkpoint.load_state(lambda: model_lib.Bagel(cfg, nnx.Rngs(0)), model_lib.weight_map(cfg),
                                            str(GOLDENS / "ema.safetensors"), mesh)
    model = lora.add_lora(nnx.merge(graphdef, state), 4, 8.0, ("q_proj", "up_proj"), mesh,
                          jax.random.key(0))
    tx, _ = optim.build_optimizer(dict(lr=1e-2, warmup_steps=0, schedule="constant", decay_steps=0, min_lr=0.0,
                                       b1=0.9, b2=0.999, eps=1e-8, weight_decay=1e-4, clip_norm=1.0))
    with rules_lib.use_rules(mesh):
        learner = learner_lib.Learner(model, nnx.LoRAParam, tx, LCFG, SCFG)
        ids = [int(i) for i in pipeline.shard_dataset(list(range(B)))]  # this host's samples only
        r, adv = global_rollout(synthetic_round(cfg), ids, mesh)

        @jax.jit
        def on_policy(trainable, frozen, r):
            m = nnx.merge(learner.graphdef, trainable, frozen)
            mask = jnp.arange(T)[None] < r.think_len[:, None]
            think = jnp.where(mask, learner_lib.think_log_probs(m, r, LCFG.text_temperature), 0.0)
            return (think,) + learner_lib.image_log_probs(m, r, SCFG)

        think_logp, image_logp, means = on_policy(learner.trainable, learner.frozen, r)
        r = r.replace(think_logp=think_logp, image_logp=image_logp, image_means=means)
        grads, m1 = learner.grads(r, adv)
        gnorm = learner.apply(grads, 1)
        _, m2 = learner.grads(r, adv)
        checksum = jax.jit(lambda t: sum(jnp.sum(jnp.abs(x)) for x in jax.tree.leaves(t)))(learner.trainable)
        out = dict(process=jax.process_index(), processes=jax.process_count(), devices=jax.device_count(),
                   local_devices=jax.local_device_count(), sample_ids=ids, loss1=float(m1["loss/total"]),
                   loss2=float(m2["loss/total"]), image_loss=float(m1["loss/image"]),
                   text_loss=float(m1["loss/text"]), grad_norm=float(gnorm), checksum=float(checksum))
    with open(f"{out_prefix}.{jax.process_index()}.json", "w") as f:
        json.dump(out, f)


if __name__ == "__main__":
    main(sys.argv[1])
