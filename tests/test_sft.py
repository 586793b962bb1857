"""The SFT trainer on a tiny config on the 8-device mesh: the loss decreases, a crashed run resumes from its
last checkpoint with IDENTICAL losses, the exported release loads; and the shipped base model generates."""
import os
import pathlib

import jax
import numpy as np
import pytest
from flax import nnx

from alphagrpo_jax import checkpointing, metrics, sft
from alphagrpo_jax.models.bagel import release
from alphagrpo_jax.parallel.mesh import make_mesh
from alphagrpo_jax.parallel import rules as rules_lib
from alphagrpo_jax.sampling.pipeline import Pipeline
from alphagrpo_jax.sampling.prompts import GEN_THINK_SYSTEM_PROMPT
from alphagrpo_jax.sampling.text import TextSamplerConfig
from alphagrpo_jax.toy.transforms import VAE_TRANSFORM as TOY_VAE_TRANSFORM, VIT_TRANSFORM as TOY_VIT_TRANSFORM
from configs import toy_sft

ROOT = pathlib.Path(__file__).resolve().parents[1]
BASE = ROOT / "assets" / "toy_base"


def _config(workdir, **kw):
    c = toy_sft.get_config("tiny")
    c.workdir = str(workdir)
    c.eval.final = False
    c.optim.lr = 3e-3
    c.update(kw)
    return c


class Crash(RuntimeError):
    pass


def _losses(workdir):
    return {r["step"]: r["loss"] for r in metrics.read_metrics(os.path.join(workdir, "metrics.jsonl"))}


@pytest.fixture(scope="module")
def compile_cache():
    """The three runs compile the same train step: shared through the session's compilation cache
    (tests/conftest.py)."""
    assert jax.config.jax_compilation_cache_dir


@pytest.fixture(scope="module")
def full_run(tmp_path_factory, compile_cache):
    workdir = tmp_path_factory.mktemp("sft_full")
    summary = sft.train(_config(workdir))
    return workdir, summary


def test_loss_decreases_and_release_loads(full_run):
    workdir, summary = full_run
    losses = _losses(workdir)
    assert sorted(losses) == list(range(1, 9))
    first, last = np.mean([losses[s] for s in (1, 2, 3)]), np.mean([losses[s] for s in (6, 7, 8)])
    assert last < first - 0.3, losses
    assert summary["tokens_seen"] > 0 and min(summary["examples"].values()) > 0

    mesh = make_mesh({"fsdp": -1})
    rel = release.load_release(str(workdir / "release"), mesh, param_dtype="float32", dtype="float32")
    assert rel.cfg.vae.kind == "pixel" and rel.cfg.llm.hidden_size == 32 and len(rel.tokenizer) > 400
    # its sampling settings are the eval's: `generate --checkpoint RELEASE` needs no flags
    from alphagrpo_jax.sampling import generation_config
    from alphagrpo_jax.toy import sft_source
    gen = generation_config.read(str(workdir / "release"))
    want = sft_source.generation(_config(workdir).eval)
    assert gen == {**want, "plugins": tuple(want["plugins"])}
    # the release records the system prompt it was trained with, and generation uses it
    assert rel.cfg.think_system_prompt == _config(workdir).data.system_prompt != GEN_THINK_SYSTEM_PROMPT
    pipe = Pipeline(rel, cache_size=64, vae_transform=TOY_VAE_TRANSFORM, vit_transform=TOY_VIT_TRANSFORM)
    texts = []
    pipe._text = lambda s, _text=pipe._text: texts.append(s) or _text(s)
    pipe.generate_images(["a red circle"], think=True, height=32, width=32, num_timesteps=2,
                         think_sampler=TextSamplerConfig(max_new_tokens=2))
    assert texts[:2] == [rel.cfg.think_system_prompt, "a red circle"]
    # the export is the final checkpoint's parameters, bit for bit (fp32 export)
    config = _config(workdir)
    with rules_lib.use_rules(mesh, rules_lib.DEFAULT_RULES):
        setup = sft.TrainSetup(config, sft.model_config(config), mesh, rules_lib.DEFAULT_RULES)
    ckpt = checkpointing.CheckpointManager(str(workdir / "checkpoints"))
    state, extras = ckpt.restore(setup.abstract_state())
    ckpt.close()
    assert extras["step"] == 8
    np.testing.assert_array_equal(np.asarray(rel.model.llm2vae.kernel[...]),
                                  np.asarray(state["params"]["llm2vae"]["kernel"]))
    np.testing.assert_array_equal(np.asarray(rel.model.language_model.embed_tokens[...]),
                                  np.asarray(state["params"]["language_model"]["embed_tokens"]))


def test_resume_after_a_crash_gives_identical_losses(full_run, tmp_path):
    workdir, _ = full_run
    expected = _losses(workdir)

    def crash(step, _):
        if step == 6:  # after the step-4 checkpoint, before the step-8 one
            raise Crash

    with pytest.raises(Crash):
        sft.train(_config(tmp_path), step_hook=crash)
    assert sorted(_losses(tmp_path)) == list(range(1, 7))
    sft.train(_config(tmp_path))  # restarts from step 4; metrics of steps 5-6 are replaced
    resumed = _losses(tmp_path)
    assert sorted(resumed) == list(range(1, 9))
    assert resumed == expected  # exact float equality, every step


def test_gradient_accumulation_equals_one_big_batch(tmp_path, full_run):
    """Flow times and noise are drawn for the whole batch and the loss is normalised by the whole batch's token
    counts, so two micro-batches give the one-batch update (up to summation order)."""
    import jax.numpy as jnp
    from jax.sharding import NamedSharding, PartitionSpec

    from alphagrpo_jax.toy import sft_data

    config = _config(tmp_path)
    cfg, dc = sft.model_config(config), sft.data_config(config)
    _, _, encode = sft.build_tokenizer(config, str(tmp_path), cfg)
    src = sft_data.RowSource(cfg, dc, encode, seed=0)
    host = sft_data.pack_rows([src[i] for i in range(dc.rows)], cfg, dc)
    mesh = make_mesh({"fsdp": -1})
    results = []
    with rules_lib.use_rules(mesh, rules_lib.DEFAULT_RULES):
        setup = sft.TrainSetup(config, cfg, mesh, rules_lib.DEFAULT_RULES)
        sharding = NamedSharding(mesh, PartitionSpec(sft.BATCH_AXES))
        batch, image_id = sft.to_device(host, sharding, dc.rows * dc.max_vit_per_row, dc.rows * dc.max_vae_per_row)
        for accum in (1, 2):
            config.grad_accum = accum
            state = jax.tree.map(jnp.copy, setup.state)  # the step donates its input state
            results.append(sft.make_train_step(setup, config, sharding)(state, setup.rest, batch, image_id))
    (one, m1), (two, m2) = results
    for k in ("loss", "ce", "mse", "grad_norm"):
        np.testing.assert_allclose(float(m2[k]), float(m1[k]), rtol=2e-5)
    for a, b in zip(jax.tree.leaves(two["params"]), jax.tree.leaves(one["params"])):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-6)


def test_identity_velocity_init_gives_v_equal_x_t():
    """At init the toy model's velocity is the noisy latent itself (the t = 1 answer up to the mean image). The
    train state is created on the 8-device mesh with every parameter in the rules' layout, including the
    leaves init_params computes (the jitted step rejects any other sharding)."""
    import jax.numpy as jnp

    from alphagrpo_jax.sampling import context as ctx_lib, image as image_lib

    config = _config("/tmp/unused")
    config.init.identity_velocity = True
    config.model_llm = dict(hidden_size=128, num_layers=1, num_heads=4, num_kv_heads=2, head_dim=32,
                            intermediate_size=384)  # the toy's layer (the tiny one has no room for the identity)
    cfg = sft.model_config(config)
    mesh = make_mesh({"fsdp": -1})
    with rules_lib.use_rules(mesh, rules_lib.DEFAULT_RULES):
        setup = sft.TrainSetup(config, cfg, mesh, rules_lib.DEFAULT_RULES)
    shardings = jax.tree.leaves(setup.shardings["params"], is_leaf=lambda x: isinstance(x, jax.sharding.Sharding))
    params = jax.tree.leaves(setup.state["params"])
    assert len(params) == len(shardings) and any(not sh.is_fully_replicated for sh in shardings)
    for x, sh in zip(params, shardings):
        assert x.sharding.is_equivalent_to(sh, x.ndim), (x.shape, x.sharding, sh)
    model = setup.model(setup.state["params"])
    x = jax.random.normal(jax.random.key(2), (2, 64, cfg.patch_latent_dim))
    pos = image_lib.grid_positions(8, 8, cfg.max_latent_size, 2)
    velocity = jax.jit(image_lib.velocity)
    for t in (1.0, 0.5):
        v = velocity(model, ctx_lib.Context.empty(cfg, 2, 8), x, jnp.full((2,), t), pos)
        rel_err = float(jnp.linalg.norm(v - x) / jnp.linalg.norm(x))
        assert rel_err < 0.05, (t, rel_err)


@pytest.mark.skipif(not (BASE / "ema.safetensors").exists(), reason="assets/toy_base not built")
def test_shipped_base_model_loads_and_generates():
    total = sum(f.stat().st_size for f in BASE.iterdir())
    assert total < 10 * 2 ** 20
    rel = release.load_release(str(BASE), make_mesh({"fsdp": -1}))
    assert rel.cfg.vae.kind == "pixel" and 32 // rel.cfg.latent_downsample == rel.cfg.max_latent_size == 8
    pipe = Pipeline(rel, cache_size=128, vae_transform=TOY_VAE_TRANSFORM, vit_transform=TOY_VIT_TRANSFORM)
    gen = pipe.generate_image("a red circle", height=32, width=32, num_timesteps=6, cfg_text=2.0, shift=1.0)
    assert gen.image.shape == (32, 32, 3) and gen.image.dtype == np.uint8 and gen.image.std() > 0
    assert nnx.state(rel.model) is not None


def test_config_variants():
    full, fast = toy_sft.get_config(), toy_sft.get_config("fast")
    assert (full.total_steps, fast.total_steps) == (2000, 900)
    # the fast recipe is the same schedule shape, compressed: warmup then cosine to the end of the run
    assert fast.optim.warmup_steps + fast.optim.decay_steps == fast.total_steps
    assert full.optim.warmup_steps + full.optim.decay_steps == full.total_steps
    assert full.model_llm == fast.model_llm and full.data == fast.data
    with pytest.raises(ValueError, match="unknown variant"):
        toy_sft.get_config("nope")
