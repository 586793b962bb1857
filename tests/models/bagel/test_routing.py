"""Routing of tokens to the MoT experts: `mixed` (per-token ids at arbitrary places) sends each token through its
own expert only, and must equal running both experts on every token and selecting per token (the definition),
in values and in gradients, whatever the layout (all und, all gen, interleaved, uneven per row)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from alphagrpo_jax.models.bagel.llm import GEN, UND, Routing, apply_sorted


def _f(params):
    w, g = params

    def f(x, e):  # an expert-dependent nonlinear map with a per-expert norm weight, like the decoder's
        h = x * jax.lax.rsqrt(jnp.mean(x * x, axis=-1, keepdims=True) + 1e-6) * g[e]
        return jnp.tanh(jnp.einsum("...d,df->...f", h, w[e]))
    return f


def _select_both(x, ids, f):
    a, b = f(x, UND), f(x, GEN)
    return jnp.where((ids == GEN)[..., None], b, a)


@pytest.mark.parametrize("layout", ["interleaved", "all_und", "all_gen", "blocks"])
def test_sorted_routing_equals_select_both(layout):
    rng = np.random.default_rng(0)
    b, n, d = 3, 48, 8
    ids = {"interleaved": rng.integers(0, 2, (b, n)), "all_und": np.zeros((b, n)), "all_gen": np.ones((b, n)),
           "blocks": np.stack([np.r_[np.zeros(5 + 8 * r), np.ones(20), np.zeros(n - 25 - 8 * r)]
                               for r in range(b)])}[layout].astype(np.int32)
    x = jnp.asarray(rng.normal(size=(b, n, d)), jnp.float32)
    params = (jnp.asarray(rng.normal(size=(2, d, 5)), jnp.float32), jnp.asarray(rng.normal(size=(2, d)), jnp.float32))

    def loss(fn, x, params):
        return jnp.sum(fn(x, jnp.asarray(ids), _f(params)) ** 2)

    # chunk 16 < n: several chunks per expert and a chunk boundary inside a row's und run
    sorted_ = lambda x, i, f: apply_sorted(x, i, f, chunk=16)  # noqa: E731
    np.testing.assert_allclose(sorted_(x, jnp.asarray(ids), _f(params)), _select_both(x, jnp.asarray(ids), _f(params)),
                               rtol=1e-6, atol=1e-6)
    g1 = jax.grad(lambda x, p: loss(sorted_, x, p), argnums=(0, 1))(x, params)
    g2 = jax.grad(lambda x, p: loss(_select_both, x, p), argnums=(0, 1))(x, params)
    for a, b_ in zip(jax.tree.leaves(g1), jax.tree.leaves(g2)):
        np.testing.assert_allclose(a, b_, rtol=1e-5, atol=1e-5)
    # Routing.mixed is this path
    np.testing.assert_allclose(Routing.mixed(jnp.asarray(ids)).apply(x, _f(params)),
                               _select_both(x, jnp.asarray(ids), _f(params)), rtol=1e-6, atol=1e-6)


def test_sorted_routing_on_a_mesh_sorts_within_each_batch_shard():
    """On the 8-device mesh the rows of each batch shard are sorted together (16 rows: 8 groups of 2; 3 rows do
    not split over 8 devices: one group); the result is still the select-both definition, also for a row
    length that no chunk size divides."""
    from alphagrpo_jax.models.bagel.llm import batch_groups
    from alphagrpo_jax.parallel import rules as rules_lib
    from alphagrpo_jax.parallel.mesh import make_mesh

    rng = np.random.default_rng(1)
    b, n, d = 16, 45, 8
    ids = jnp.asarray(rng.integers(0, 2, (b, n)), jnp.int32)
    x = jnp.asarray(rng.normal(size=(b, n, d)), jnp.float32)
    params = (jnp.asarray(rng.normal(size=(2, d, 5)), jnp.float32), jnp.asarray(rng.normal(size=(2, d)), jnp.float32))
    with rules_lib.use_rules(make_mesh({"fsdp": -1}), rules_lib.DEFAULT_RULES):
        assert (batch_groups(16), batch_groups(3)) == (8, 1)
        got = jax.jit(lambda x: apply_sorted(x, ids, _f(params), chunk=16))(x)
    assert batch_groups(16) == 1  # no mesh: one group
    want = _select_both(x, ids, _f(params))
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(apply_sorted(x, ids, _f(params)), want, rtol=1e-6, atol=1e-6)
