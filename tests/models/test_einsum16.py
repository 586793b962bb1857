"""einsum16: values of the fp32-accumulated einsum; gradients of 16-bit operands from 16-bit dots (the output
cotangent rounded to the operands' dtype, fp32 accumulation); other dtypes keep JAX's gradient; remat policies
still save its outputs; `layers.matmul`'s three forms all use it."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec as P

from alphagrpo_jax.models import einsum16 as einsum16_lib, layers
from alphagrpo_jax.models.einsum16 import einsum16
from alphagrpo_jax.parallel import mesh as mesh_lib

F32 = jnp.float32
SPECS = [  # (spec, x shape, w shape): a projection with "...", multi-dim heads, attention-like batch dims
    ("...d,dv->...v", (2, 3, 16), (16, 8)),
    ("...m,mno->...no", (5, 16), (16, 2, 4)),
    ("bqhd,bkhd->bhqk", (2, 3, 4, 8), (2, 5, 4, 8)),
    ("bhqk,bkhd->bqhd", (2, 4, 3, 5), (2, 5, 4, 8)),
]


def _operands(xs, ws, dtype, seed=0):
    kx, kw, kg = jax.random.split(jax.random.key(seed), 3)
    return (jax.random.normal(kx, xs, F32).astype(dtype), jax.random.normal(kw, ws, F32).astype(dtype), kg)


def _dots(jaxpr):
    """Every dot_general equation of a jaxpr, sub-jaxprs included."""
    for eqn in jaxpr.eqns:
        if eqn.primitive.name == "dot_general":
            yield eqn
        for p in eqn.params.values():
            for sub in p if isinstance(p, (tuple, list)) else (p,):
                sub = getattr(sub, "jaxpr", sub)
                if hasattr(sub, "eqns"):
                    yield from _dots(sub)


@pytest.mark.parametrize("spec,xs,ws", SPECS)
@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16])
def test_values_and_16bit_gradients(spec, xs, ws, dtype):
    cpu = True  # the form for this backend (the other form's program: test_other_platforms_form)
    x, w, kg = _operands(xs, ws, dtype)
    want = jnp.einsum(spec, x, w, preferred_element_type=F32)
    got = einsum16(spec, x, w, cpu)
    assert got.dtype == F32 and got.shape == want.shape
    np.testing.assert_array_equal(np.asarray(got), np.asarray(want))

    g = jax.random.normal(kg, want.shape, F32)
    dx, dw = jax.jit(jax.grad(lambda x, w: jnp.sum(einsum16(spec, x, w, cpu) * g), (0, 1)))(x, w)
    # The reference: the same products of the cotangent rounded to 16 bits, in fp32, rounded to each operand.
    g16 = g.astype(dtype).astype(F32)
    rx, rw = jax.grad(lambda x, w: jnp.sum(jnp.einsum(spec, x, w, precision="highest") * g16), (0, 1))(
        x.astype(F32), w.astype(F32))
    assert dx.dtype == dtype and dw.dtype == dtype
    tol = float(jnp.finfo(dtype).eps)  # one ulp of the 16-bit result
    np.testing.assert_allclose(np.asarray(dx, np.float32), np.asarray(rx.astype(dtype), np.float32), rtol=tol,
                               atol=tol)
    np.testing.assert_allclose(np.asarray(dw, np.float32), np.asarray(rw.astype(dtype), np.float32), rtol=tol,
                               atol=tol)
    # Every dot of the gradient program multiplies 16-bit operands (JAX's own would promote to fp32).
    dots = list(_dots(jax.make_jaxpr(jax.grad(lambda x, w: jnp.sum(einsum16(spec, x, w, cpu) * g), (0, 1)))(x, w)))
    assert len(dots) == 3
    assert all(v.aval.dtype == dtype for e in dots for v in e.invars)
    plain = jax.make_jaxpr(jax.grad(lambda x, w: jnp.sum(jnp.einsum(spec, x, w, preferred_element_type=F32) * g),
                                    (0, 1)))(x, w)
    assert any(v.aval.dtype == F32 for e in _dots(plain) for v in e.invars)  # what einsum16 avoids


def test_fp32_and_untransposable_specs_keep_jax_gradients():
    x, w, kg = _operands((3, 8), (8, 4), F32)
    g = jax.random.normal(kg, (3, 4), F32)
    for dtype, spec in ((F32, "ab,bc->ac"), (jnp.bfloat16, "ab,bc->a")):  # "c" only in w: no einsum transpose
        xx, ww = x.astype(dtype), w.astype(dtype)
        out = jnp.einsum(spec, xx, ww, preferred_element_type=F32)
        gg = g if out.ndim == 2 else g[:, 0]
        got = jax.grad(lambda x, w: jnp.sum(einsum16(spec, x, w) * gg), (0, 1))(xx, ww)
        want = jax.grad(lambda x, w: jnp.sum(jnp.einsum(spec, x, w, preferred_element_type=F32) * gg), (0, 1))(xx, ww)
        for a, b in zip(got, want):
            np.testing.assert_array_equal(np.asarray(a, np.float32), np.asarray(b, np.float32))


@pytest.mark.parametrize("spec,xs,ws", SPECS)
def test_other_platforms_form(spec, xs, ws):
    """cpu=False (TPU/GPU programs: no merged letter runs) has the same 16-bit gradient dots; its values are
    the same products (XLA:CPU cannot run some of them: the reason for the merged form)."""
    x, w, kg = _operands(xs, ws, jnp.bfloat16)
    g = jax.random.normal(kg, jnp.einsum(spec, x, w).shape, F32)
    grads = {cpu: jax.make_jaxpr(jax.grad(lambda x, w: jnp.sum(einsum16(spec, x, w, cpu) * g), (0, 1)))(x, w)
             for cpu in (True, False)}
    for jaxpr in grads.values():
        dots = list(_dots(jaxpr.jaxpr))
        assert len(dots) == 3 and all(v.aval.dtype == jnp.bfloat16 for e in dots for v in e.invars)
    assert not any(e.primitive.name == "reshape" for e in grads[False].jaxpr.eqns)


def test_sharded_gradients_equal_unsharded():
    """On the 8-device mesh (Auto axes, as parallel/mesh.py), with heads sharded over `tensor` and rows over
    `fsdp`, the gradients equal the unsharded ones (to a bf16 ulp: the row sum of dw runs in parts)."""
    mesh8 = mesh_lib.make_mesh({"fsdp": 4, "tensor": 2})
    x, w, _ = _operands((8, 6, 64), (64, 4, 16), jnp.bfloat16)
    xs = jax.device_put(x, NamedSharding(mesh8, P("fsdp")))
    ws = jax.device_put(w, NamedSharding(mesh8, P(None, "tensor")))
    f = jax.jit(jax.grad(lambda x, w: jnp.sum(jnp.tanh(einsum16("...d,dhk->...hk", x, w, True))), (0, 1)))
    for a, b in zip(f(xs, ws), f(x, w)):
        np.testing.assert_allclose(np.asarray(a, np.float32), np.asarray(b, np.float32), rtol=2 ** -7, atol=1e-6)


def test_explicit_spec():
    assert einsum16_lib._explicit("...d,dv->...v", 3, 2) == "ABd,dv->ABv"
    assert einsum16_lib._explicit("bqhd,bkhd->bhqk", 4, 4) == "bqhd,bkhd->bhqk"
    assert einsum16_lib._explicit("ab,bc->a", 2, 2) is None       # c is summed within w alone
    assert einsum16_lib._explicit("aa,ab->b", 2, 2) is None       # a repeated index (a diagonal)
    assert einsum16_lib._explicit("ab,...b->a", 2, 2) is None     # "..." in w


def _dot_count(fn, *args):
    return len(list(_dots(jax.make_jaxpr(jax.grad(fn, argnums=(0, 1, 2)))(*args).jaxpr)))


@pytest.mark.parametrize("policy,saved", [("full", False), ("save_dots", True), ("save_dots_all", True)])
def test_remat_policies_save_einsum16_outputs(policy, saved):
    x, w, _ = _operands((4, 8), (8, 16), jnp.bfloat16)
    w2 = jax.random.normal(jax.random.key(3), (16, 8), F32).astype(jnp.bfloat16)

    def f(x, w, w2):
        h = jnp.tanh(einsum16("ab,bc->ac", x, w).astype(jnp.bfloat16))
        return jnp.sum(jnp.tanh(einsum16("ab,bc->ac", h, w2)))

    remat = jax.checkpoint(f, policy=layers.REMAT_POLICIES[policy])
    # 2 forward dots + 2 per backward; a policy that saves the dots' outputs recomputes none of them.
    assert _dot_count(remat, x, w, w2) == (6 if saved else 8)


@pytest.mark.parametrize("form", ["pair", "projection", "einsum"])
def test_layers_matmul_gradients_use_16bit_dots(form, monkeypatch):
    monkeypatch.setattr(layers, "RAW_TAKE_MIN_BYTES", 0 if form == "pair" else 1 << 40)
    spec = {"pair": "...d,dv->...v", "projection": "...d,dv->...v", "einsum": "bd,dv->bv"}[form]
    x, w, kg = _operands((1, 1, 16) if form == "pair" else (3, 16), (16, 8), jnp.bfloat16)

    def loss(x, w):
        return jnp.sum(layers.matmul(x, w, spec, dtype=F32) ** 2)

    dots = list(_dots(jax.make_jaxpr(jax.grad(loss, (0, 1)))(x, w).jaxpr))
    assert dots and all(v.aval.dtype == jnp.bfloat16 for e in dots for v in e.invars)
    if form == "pair":  # the two-row form: the second row's cotangent is zero, the first's is the row's
        x2 = jnp.concatenate([x.reshape(1, 16)] * 2)
        got = jax.grad(loss, 1)(x, w)
        want = jax.grad(lambda w: jnp.sum(einsum16("ad,dv->av", x2, w)[:1] ** 2))(w)
        np.testing.assert_array_equal(np.asarray(got, np.float32), np.asarray(want, np.float32))
