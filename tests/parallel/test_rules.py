import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from jax.sharding import PartitionSpec as P

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


def test_indivisible_dimension_is_a_clear_error():
    mesh = mesh_lib.make_mesh({"fsdp": 8})
    _, abs_state = nnx.split(nnx.eval_shape(lambda: TinyMLP(nnx.Rngs(0), d=12)))
    with pytest.raises(rules_lib.ShardingRulesError, match=r"w_in: dim 0 .* is 12, not divisible by mesh axes fsdp \(8\)"):
        rules_lib.state_shardings(abs_state, mesh, rules_lib.DEFAULT_RULES)


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
