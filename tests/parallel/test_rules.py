import logging

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from jax.sharding import PartitionSpec as P

from alphagrpo_jax.models.bagel import checkpoint, config, model as model_lib
from alphagrpo_jax.parallel import mesh as mesh_lib
from alphagrpo_jax.parallel import rules as rules_lib
from alphagrpo_jax.parallel.state import create_sharded, param


class TinyMLP(nnx.Module):
    def __init__(self, rngs: nnx.Rngs, d=16, h=32):
        init = jax.nn.initializers.normal(0.1)
        self.w_in = param(init(rngs.params(), (d, h)), ("embed", "mlp"))
        self.w_out = param(init(rngs.params(), (h, d)), ("mlp", "embed"))
        self.scale = param(jnp.ones((d,)), ("norm",))

    def __call__(self, x):
        h = rules_lib.constrain(jax.nn.gelu(x @ self.w_in[...]), ("batch", "act_mlp"))
        return (h @ self.w_out[...]) * self.scale[...]


@pytest.fixture
def mesh():
    return mesh_lib.make_mesh({"data": 1, "fsdp": 4, "tensor": 2})


def test_params_really_sharded_on_2d_mesh(mesh):
    graphdef, state, shardings = create_sharded(lambda: TinyMLP(nnx.Rngs(0)), mesh)
    w_in = state["w_in"].get_value()
    assert w_in.sharding.spec == P("fsdp", "tensor")
    # 16x32 split 4 ways on rows and 2 ways on columns: every device holds a distinct 4x16 block.
    shapes = {s.data.shape for s in w_in.addressable_shards}
    assert shapes == {(4, 16)}
    assert len({(s.index[0].start, s.index[1].start) for s in w_in.addressable_shards}) == 8
    assert state["scale"].get_value().sharding.spec == P(None)


def test_jitted_train_step_runs_sharded(mesh):
    graphdef, state, shardings = create_sharded(lambda: TinyMLP(nnx.Rngs(0)), mesh)
    tx = optax.adamw(1e-2)
    params = nnx.to_pure_dict(state)
    opt_state = tx.init(params)
    batch_sharding = jax.sharding.NamedSharding(mesh, P(("data", "fsdp")))
    x = jax.device_put(jax.random.normal(jax.random.key(1), (8, 16)), batch_sharding)
    y = jax.device_put(jnp.roll(x, 1, axis=-1), batch_sharding)

    def loss_fn(p, x, y):
        st = nnx.State(jax.tree.map(lambda v: v, state))
        nnx.replace_by_pure_dict(st, p)
        model = nnx.merge(graphdef, st)
        return jnp.mean((model(x) - y) ** 2)

    @jax.jit
    def step(p, o, x, y):
        with_rules_loss, g = jax.value_and_grad(loss_fn)(p, x, y)
        upd, o = tx.update(g, o, p)
        return optax.apply_updates(p, upd), o, with_rules_loss

    with rules_lib.use_rules(mesh):
        losses = []
        for _ in range(5):
            params, opt_state, loss = step(params, opt_state, x, y)
            losses.append(float(loss))
    assert losses[-1] < losses[0]
    assert params["w_in"].sharding.spec == P("fsdp", "tensor")


def test_rule_to_missing_axis_fails(mesh):
    bad = rules_lib.merge_rules(rules_lib.DEFAULT_RULES, {"mlp": "model"})
    _, abs_state = nnx.split(nnx.eval_shape(lambda: TinyMLP(nnx.Rngs(0))))
    with pytest.raises(rules_lib.ShardingRulesError, match="'mlp' -> 'model'"):
        rules_lib.state_shardings(abs_state, mesh, bad)


def test_default_rules_only_name_mesh_axes(mesh):
    rules_lib.validate_rules(rules_lib.DEFAULT_RULES, mesh)
    for name, target in rules_lib.DEFAULT_RULES:
        for axis in rules_lib._as_tuple(target):
            assert axis in mesh_lib.AXES, (name, axis)


def test_indivisible_dimension_is_replicated_with_one_note(caplog):
    mesh = mesh_lib.make_mesh({"fsdp": 8})
    _, abs_state = nnx.split(nnx.eval_shape(lambda: TinyMLP(nnx.Rngs(0), d=12)))
    with caplog.at_level(logging.WARNING, logger="alphagrpo_jax.parallel.rules"):
        sh = rules_lib.state_shardings(abs_state, mesh, rules_lib.DEFAULT_RULES)
    assert sh["w_in"].spec == P(None, "tensor") and sh["w_out"].spec == P("tensor", None)
    # One note for rule 'embed' (both arrays), not one per array.
    notes = [r.getMessage() for r in caplog.records]
    assert len(notes) == 1 and "'embed': size 12 is not divisible by fsdp (8)" in notes[0]
    assert "(2 arrays)" in notes[0]


def test_missing_axes_metadata_is_reported(mesh):
    class NoAxes(nnx.Module):
        def __init__(self):
            self.w = nnx.Param(jnp.ones((4, 4)))

    _, abs_state = nnx.split(nnx.eval_shape(NoAxes))
    with pytest.raises(rules_lib.ShardingRulesError, match="no `axes` metadata"):
        rules_lib.state_shardings(abs_state, mesh, rules_lib.DEFAULT_RULES)


def test_constrain_applies_sharding_on_cpu(mesh):
    x = jnp.ones((8, 32))

    @jax.jit
    def f(x):
        return rules_lib.constrain(x * 2, ("batch", "act_mlp"))

    with rules_lib.use_rules(mesh):
        out = f(x)
    # data has size 1, so the batch is split 4 ways (fsdp) and the columns 2 ways (tensor).
    assert {s.data.shape for s in out.addressable_shards} == {(2, 16)}
    np.testing.assert_allclose(np.asarray(out), 2.0)
    # Outside a rules context it is the identity.
    assert rules_lib.constrain(x, ("batch", "act_mlp")) is x


def test_same_mesh_axis_twice_is_an_error(mesh):
    with pytest.raises(rules_lib.ShardingRulesError, match="used twice"):
        rules_lib.logical_to_spec(("batch", "embed"), rules_lib.DEFAULT_RULES, mesh)


def _first_indivisible(n: int) -> int:
    """The smallest tensor-axis size of the 8 test devices that does not divide `n`."""
    return next(t for t in (2, 4, 8) if n % t)


def _head_counts(goldens_dir):
    cfg = config.from_release_dir(str(goldens_dir))
    return cfg, {"heads": cfg.llm.num_heads, "kv_heads": cfg.llm.num_kv_heads, "vit_heads": cfg.vit.num_heads}


@pytest.mark.parametrize("rule", ["heads", "kv_heads", "vit_heads"])
def test_heads_the_tensor_axis_does_not_divide_are_replicated(goldens_dir, rule, caplog):
    cfg, counts = _head_counts(goldens_dir)
    t = _first_indivisible(counts[rule])
    mesh = mesh_lib.make_mesh({"fsdp": 8 // t, "tensor": t})
    _, state = nnx.split(nnx.eval_shape(lambda: model_lib.Bagel(cfg, nnx.Rngs(0))))
    with caplog.at_level(logging.WARNING, logger="alphagrpo_jax.parallel.rules"):
        shardings = rules_lib.state_shardings(state, mesh, rules_lib.DEFAULT_RULES)
    flat_state = dict(nnx.to_flat_state(state))
    seen = 0
    for path, sh in nnx.to_flat_state(shardings):
        var, axes = flat_state[path], rules_lib.axes_of(flat_state[path])
        for size, name, entry in zip(var.get_value().shape, axes or (), sh.spec):
            want = "tensor" if name in ("heads", "kv_heads", "vit_heads") and size % t == 0 else None
            if name == rule:
                seen += 1
                assert entry is None, (path, sh.spec)
            elif name in ("heads", "kv_heads", "vit_heads"):
                assert entry == want, (path, sh.spec)
    assert seen
    notes = [r.getMessage() for r in caplog.records if f"rule {rule!r}" in r.getMessage()]
    assert len(notes) == 1 and f"size {counts[rule]} is not divisible by tensor ({t})" in notes[0]


def test_forward_with_replicated_heads_matches_the_golden(goldens_dir):
    """The release's text prefill on a mesh whose tensor axis does not divide its KV heads (so they are
    replicated) equals the upstream golden."""
    from tests.models.bagel.parity_utils import FP32_ATOL, golden, prefill

    cfg, counts = _head_counts(goldens_dir)
    t = _first_indivisible(counts["kv_heads"])
    mesh = mesh_lib.make_mesh({"fsdp": 8 // t, "tensor": t})
    cfg = config.from_release_dir(str(goldens_dir), param_dtype="float32", dtype="float32")
    graphdef, state = checkpoint.load_state(lambda: model_lib.Bagel(cfg, nnx.Rngs(0)), model_lib.weight_map(cfg),
                                            str(goldens_dir / "ema.safetensors"), mesh)
    k = state["language_model"]["layers"]["k_proj"]["kernel"].get_value()
    assert "tensor" not in jax.tree.leaves(tuple(k.sharding.spec))
    a = golden("a_text_prefill.npz")
    with rules_lib.use_rules(mesh):
        h, _, _ = jax.jit(lambda st: prefill(nnx.merge(graphdef, st), a["input_ids"], a["position_ids"]))(state)
    np.testing.assert_allclose(np.asarray(h[0]), a["hidden_final_fp32"], atol=FP32_ATOL, rtol=0)
