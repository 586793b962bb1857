"""Small shared building blocks: Dense with logical axes, norms, activations, numerics helpers.

Numerics: params may be bf16; every matmul accumulates in fp32 (`preferred_element_type`), norms are
computed in fp32, and results are cast to the activation dtype `dtype`.
"""
from __future__ import annotations

import contextlib
import contextvars
import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from alphagrpo_jax.models import einsum16 as einsum16_lib, transposed
from alphagrpo_jax.models.einsum16 import einsum16, is_16bit_float
from alphagrpo_jax.parallel import rules as rules_lib
from alphagrpo_jax.parallel.state import param, prepend_axis

Axes = tuple[str | None, ...]


def matmul(x: jax.Array, w: jax.Array, spec: str, dtype=None) -> jax.Array:
    """einsum with fp32 accumulation; output cast to `dtype` (default: x.dtype). 16-bit operands keep their
    dtype in the backward dots (einsum16.py).

    A CPU program multiplying a single row (`spec` "...<in>,<in><out>->...<out>", every leading dim of x 1) by a
    large 16-bit `w` computes two rows and keeps the first: XLA:CPU hands a one-row dot to its own kernel, which
    reads `w` as f32, and a two-row one to YNNPACK, which reads it as bf16 (a decode step at batch 1)."""
    out_dtype = dtype or x.dtype
    if isinstance(w, transposed.Transposed):  # a decode loop's copy (`presliced`)
        return w.matmul(x, out_dtype)
    x = x.astype(w.dtype) if x.dtype != w.dtype else x
    n_in = len(spec.split(",")[0]) - 3  # contracted dims of x after "..."
    if (spec.startswith("...") and 0 < n_in < x.ndim and x.size == math.prod(x.shape[-n_in:])
            and is_16bit_float(w) and _nbytes(w) >= RAW_TAKE_MIN_BYTES and program_platform() == "cpu"):
        out = transposed.two_rows(lambda r: einsum16(spec, r, w, cpu=True), x.reshape((1,) + x.shape[-n_in:]))
        return out.reshape(x.shape[:-n_in] + out.shape[1:]).astype(out_dtype)
    if _is_projection(spec) and program_platform() == "cpu":
        # As one 2-D [rows, in] x [in, out] dot: with several row or feature dims, XLA:CPU lays the gradient
        # dots out with a transposing copy of the [rows, out] cotangent (a third of a LoRA gradient's time).
        lead, w_in = x.shape[:x.ndim - n_in], math.prod(w.shape[:n_in])
        out = einsum16("ab,bc->ac", x.reshape(-1, w_in), w.reshape(w_in, -1), cpu=True)
        return out.reshape(lead + w.shape[n_in:]).astype(out_dtype)
    return einsum16(spec, x, w, cpu=program_platform() == "cpu").astype(out_dtype)


def _is_projection(spec: str) -> bool:
    """spec is "...<in>,<in><out>->...<out>": x's trailing dims contracted with w's leading ones."""
    lhs, _, out = spec.partition("->")
    x_spec, _, w_spec = lhs.partition(",")
    return x_spec.startswith("...") and out.startswith("...") and w_spec == x_spec[3:] + out[3:]


class Dense(nnx.Module):
    """y = x @ kernel (+ bias). kernel [*in_shape, *out_shape] with logical `axes`.

    `in_features`/`out_features` may be tuples (e.g. out = (heads, head_dim)); the einsum contracts the
    trailing `len(in)` dims of x.
    """

    def __init__(self, in_features: int | Sequence[int], out_features: int | Sequence[int], axes: Axes,
                 *, use_bias: bool = True, rngs: nnx.Rngs, param_dtype=jnp.float32,
                 kernel_init=None, bias_init=jax.nn.initializers.zeros):
        self.in_shape = (in_features,) if isinstance(in_features, int) else tuple(in_features)
        self.out_shape = (out_features,) if isinstance(out_features, int) else tuple(out_features)
        if len(axes) != len(self.in_shape) + len(self.out_shape):
            raise ValueError(f"axes {axes} do not match kernel rank {len(self.in_shape) + len(self.out_shape)}")
        fan_in = 1
        for s in self.in_shape:
            fan_in *= s
        kernel_init = kernel_init or jax.nn.initializers.normal(fan_in ** -0.5)
        self.kernel = param(kernel_init(rngs.params(), self.in_shape + self.out_shape, param_dtype), axes)
        self.bias = (param(bias_init(rngs.params(), self.out_shape, param_dtype), axes[len(self.in_shape):])
                     if use_bias else None)

    def __call__(self, x: jax.Array, dtype=None) -> jax.Array:
        letters = "abcdefghijklmnopqrstuvw"
        n_in, n_out = len(self.in_shape), len(self.out_shape)
        batch = "".join(letters[: x.ndim - n_in])
        ins = letters[x.ndim - n_in: x.ndim]
        outs = letters[x.ndim: x.ndim + n_out]
        y = matmul(x, self.kernel[...], f"{batch}{ins},{ins}{outs}->{batch}{outs}", dtype=jnp.float32)
        if self.bias is not None:
            y = y + self.bias[...].astype(jnp.float32)
        return y.astype(dtype or x.dtype)


def rms_norm(x: jax.Array, weight: jax.Array, eps: float) -> jax.Array:
    """Qwen2 RMSNorm: normalise in fp32, cast back to x.dtype, then multiply by the weight."""
    xf = x.astype(jnp.float32)
    y = (xf * jax.lax.rsqrt(jnp.mean(xf * xf, axis=-1, keepdims=True) + eps)).astype(x.dtype)
    return (weight * y).astype(x.dtype)


class RMSNorm(nnx.Module):
    def __init__(self, dim: int, eps: float, axes: Axes = ("norm",), *, param_dtype=jnp.float32):
        self.eps = eps
        self.weight = param(jnp.ones((dim,), param_dtype), axes)

    def __call__(self, x):
        return rms_norm(x, self.weight[...], self.eps)


def layer_norm(x: jax.Array, scale: jax.Array, bias: jax.Array, eps: float) -> jax.Array:
    xf = x.astype(jnp.float32)
    mean = jnp.mean(xf, axis=-1, keepdims=True)
    var = jnp.mean(jnp.square(xf - mean), axis=-1, keepdims=True)
    y = (xf - mean) * jax.lax.rsqrt(var + eps)
    return (y * scale.astype(jnp.float32) + bias.astype(jnp.float32)).astype(x.dtype)


class LayerNorm(nnx.Module):
    def __init__(self, dim: int, eps: float, axes: Axes = ("norm",), *, param_dtype=jnp.float32):
        self.eps = eps
        self.scale = param(jnp.ones((dim,), param_dtype), axes)
        self.bias = param(jnp.zeros((dim,), param_dtype), axes)

    def __call__(self, x):
        return layer_norm(x, self.scale[...], self.bias[...], self.eps)


def gelu_tanh(x):
    return jax.nn.gelu(x, approximate=True)


class Frozen(nnx.Variable):
    """A non-trainable array that is still part of the state (e.g. BAGEL's sin-cos position tables)."""


# ------------------------------------------------------------------------------------------- scanned stacks

_cp = jax.checkpoint_policies
REMAT_POLICIES = {
    "none": None,
    # No layer-level remat: llm.DecoderLayer recomputes its per-token expert functions (norms, QKV, MLP) in
    # the backward and attention keeps only q/k/v and row statistics. Cheapest on CPU (the toy SFT: 0.33 ->
    # 0.30 s/step), where writing and reading per-layer activation stacks costs more than the recompute.
    "experts": None,
    "full": _cp.nothing_saveable,
    # The dots, and einsum16's by name (its custom gradient hides the dot from the policies).
    "save_dots": _cp.save_from_both_policies(_cp.dots_with_no_batch_dims_saveable,
                                             _cp.save_only_these_names(einsum16_lib.NAME)),
    "save_dots_all": _cp.save_from_both_policies(_cp.checkpoint_dots, _cp.save_only_these_names(
        einsum16_lib.NAME, einsum16_lib.BATCH_NAME)),
}


def create_stacked(make_layer, num_layers: int, rngs: nnx.Rngs) -> nnx.Module:
    """`num_layers` copies of `make_layer(rngs)` with params stacked on a leading `layers` axis."""
    @nnx.split_rngs(splits=num_layers)
    @nnx.vmap(in_axes=(0,), out_axes=0)
    def make(r):
        return make_layer(r)

    return prepend_axis(make(rngs), "layers")


# XLA:CPU's float normalization turns a dynamic-slice of a 16-bit float array into convert(f32) -> slice ->
# convert back; inside a loop, loop-invariant code motion then hoists the convert of the whole array out:
# a layer scan over bf16 weights converted every layer's weights (both experts) and the KV cache to f32 on
# every call. `scan_layers` and attention.write_cache_layers avoid it on CPU.
_BITS = {jnp.dtype(jnp.bfloat16): jnp.uint16, jnp.dtype(jnp.float16): jnp.uint16}
_RAW = {**_BITS, jnp.dtype(jnp.float32): jnp.uint32}  # `take`: f32 slices too (copied per loop pass otherwise)


def program_platform() -> str:
    """The platform the program being traced is for: the active rules mesh's devices (an AOT topology mesh
    counts), else the default backend."""
    ctx = rules_lib.current()
    if ctx is not None:
        return ctx[0].devices.flat[0].platform
    return jax.default_backend()


def to_bits(a: jax.Array) -> jax.Array | None:
    """The raw bits (uint16) of a 16-bit float array in a CPU program, else None (other dtypes; TPU and GPU
    handle 16-bit floats natively). Not differentiable."""
    dt = _BITS.get(jnp.dtype(a.dtype))
    return None if dt is None or program_platform() != "cpu" else jax.lax.bitcast_convert_type(a, dt)


@jax.custom_vjp
def attach(real: jax.Array, value: jax.Array) -> jax.Array:
    """`value` and `real` are equal, computed two ways: an undifferentiated program uses `value` (so computing
    `real` is dead code), one differentiated with respect to them uses `real` and sends the gradient there."""
    return value


attach.defvjp(lambda real, value: (real, None), lambda _, ct: (ct, None))


# Size thresholds of the CPU copy avoidance below (per slice / per layer; the slice threshold also gates
# `matmul`'s two-row form): the toy and tiny models' weights are under both, small_100m's (a 768 x 2048 expert
# kernel: 3-6 MB; a layer: 25-50 MB) and 7B's over.
RAW_TAKE_MIN_BYTES = 256 << 10


def _nbytes(tree) -> int:
    return sum(a.size * jnp.dtype(a.dtype).itemsize for a in jax.tree.leaves(tree))


class Split:
    """A stacked array [n, ...] held as n separate arrays (`parts`), each possibly a Split again (a layer's two
    experts). Indexing its leading axis returns a whole buffer, which a CPU program's dots read in place; a
    slice of a stacked array is copied first (see `split_layers`)."""

    def __init__(self, parts):
        self.parts = tuple(parts)

    def __getitem__(self, i):
        return self if i is Ellipsis else self.parts[i]

    def __len__(self):
        return len(self.parts)

    @property
    def shape(self) -> tuple[int, ...]:
        return (len(self.parts),) + tuple(self.parts[0].shape)

    @property
    def dtype(self):
        return self.parts[0].dtype


jax.tree_util.register_pytree_node(Split, lambda s: (s.parts, None), lambda _, parts: Split(parts))


def _is_split(x) -> bool:
    return isinstance(x, Split)


# Leading logical axes that `split_layers` holds as separate arrays.
SPLIT_AXES = ("layers", "expert")


def split_layers(module: nnx.Module) -> nnx.Module:
    """A CPU inference copy of `module`: each layer stack (the Variables stacked on a leading `layers` axis
    under one `...layers` attribute) of at least PRESLICE_MIN_BYTES per layer held as one array per layer, and
    per expert where the next axis is `expert` (`Split`). `scan_layers` runs such a stack's layers one by one on
    their own buffers: XLA:CPU copies a layer's weights out of a stacked array on every call (a quarter to a third
    of a bf16 gen step's op time on small_100m), these it reads in place.

    For undifferentiated CPU programs (generation, evaluation). Costs compile time (the layers are inlined) and,
    while the stacked original is alive, a second copy of those weights. Other platforms: `module` itself.
    Values equal the stacked module's to rounding (the unrolled layers may fuse differently)."""
    if jax.default_backend() != "cpu":
        return module
    graphdef, state = nnx.split(module)
    flat = list(nnx.to_flat_state(state))

    def stack_key(path, var):
        axes = tuple(rules_lib.axes_of(var) or ())
        if not axes or axes[0] != SPLIT_AXES[0] or _is_split(var.get_value()):
            return None
        return tuple(path[:path.index("layers") + 1]) if "layers" in path else tuple(path[:-1])

    per_layer: dict = {}
    for path, var in flat:
        key = stack_key(path, var)
        if key is not None:
            per_layer[key] = per_layer.get(key, 0) + _nbytes(var.get_value()) // var.get_value().shape[0]

    if not any(n >= PRESLICE_MIN_BYTES for n in per_layer.values()):
        return module

    def split(value, depth):
        return value if depth == 0 else Split(split(value[i], depth - 1) for i in range(value.shape[0]))

    out = []
    for path, var in flat:
        key = stack_key(path, var)
        if key is not None and per_layer[key] >= PRESLICE_MIN_BYTES:
            axes = rules_lib.axes_of(var)
            var = var.replace(split(var.get_value(), 2 if axes[1:2] == SPLIT_AXES[1:] else 1))
        out.append((path, var))
    return nnx.merge(graphdef, nnx.from_flat_state(out))


def take(a: jax.Array, i: int) -> jax.Array:
    """a[i] for a static i (a layer of a stack, an expert's weight). In a CPU program the slice is taken of the
    raw bits: XLA:CPU then hoists it out of an enclosing loop when `a` is loop-invariant, where a float slice is
    copied again on every pass (a decode loop copied each layer's expert weights per token) and a 16-bit one is
    also converted to f32. Same values; a differentiated program takes the float slice (`attach`). Slices under
    RAW_TAKE_MIN_BYTES are taken plainly (their copies are cheap, and the raw form costs tracing and compile
    time in every program)."""
    if isinstance(a, Split):  # a traced i (an expert id as data, `llm.apply_sorted`) indexes a restacked copy
        if isinstance(i, int):
            return a.parts[i]
        parts = a.parts
        return transposed.stack_take(parts, i) if isinstance(parts[0], transposed.Transposed) else jnp.stack(parts)[i]
    dt = _RAW.get(jnp.dtype(a.dtype))
    if dt is None or program_platform() != "cpu" or _nbytes(a) < a.shape[0] * RAW_TAKE_MIN_BYTES:
        return a[i]
    return attach(a[i], jax.lax.bitcast_convert_type(jax.lax.bitcast_convert_type(jax.lax.stop_gradient(a), dt)[i],
                                                     a.dtype))


_PRESLICED = contextvars.ContextVar("presliced_layers", default=())
# Layers under this are left to the scan: copying them per pass costs less than compiling the loop body with
# every layer inlined.
PRESLICE_MIN_BYTES = 4 << 20


@contextlib.contextmanager
def presliced(*stacked: nnx.Module):
    """Copies each layer of the stacked modules out of its stack here, once, with 16-bit projection kernels
    transposed (`transposed.Transposed`: one-row products read them ~1.8x faster); inside the block,
    `scan_layers` over one of them runs the layers one by one on those copies instead of scanning the stack.

    For the body of an undifferentiated loop traced inside the block (a decode loop): XLA:CPU materialises a
    scanned layer's slice of the stack on every pass and does not hoist those copies out of the loop itself.
    Costs one more copy of the layers' weights while the program runs. A no-op in TPU and GPU programs (they
    read a layer's slice in place) and for layers under PRESLICE_MIN_BYTES (a `split_layers` module's are over).
    Yields whether every module's layers run one by one in the block: their `xs` may then hold `Split`s.
    """
    entries = []
    for module in stacked:
        graphdef, state = nnx.split(module)
        n = len(jax.tree.leaves(state, is_leaf=_is_split)[0])
        if program_platform() != "cpu" or not _split_state(state) and _nbytes(state) < n * PRESLICE_MIN_BYTES:
            continue
        copies = [transposed.kernels(module, _layer(state, i), Split) for i in range(n)]
        # Behind a barrier: XLA would otherwise sink the slices back into the loop body (fusible-op sinking).
        entries.append((module, graphdef, jax.lax.optimization_barrier(copies)))
    token = _PRESLICED.set(_PRESLICED.get() + tuple(entries))
    try:
        yield len(entries) == len(stacked)
    finally:
        _PRESLICED.reset(token)


def _split_state(state) -> bool:
    return any(_is_split(a) for a in jax.tree.leaves(state, is_leaf=_is_split))


def _layer(state, i):
    """Layer i of a stacked state: its own arrays for split stacks (`split_layers`), else a slice (`take`)."""
    return jax.tree.map(lambda a: a.parts[i] if _is_split(a) else take(a, i), state, is_leaf=_is_split)


def _run_presliced(graphdef, layer_states, body, carry, xs):
    ys = []
    for i, layer_state in enumerate(layer_states):
        x = jax.tree.map(lambda a: take(a, i), xs, is_leaf=_is_split)  # a Split (per-layer buffers): its part
        carry, y = body(nnx.merge(graphdef, layer_state), carry, x)
        ys.append(y)
    return carry, jax.tree.map(lambda *t: jnp.stack(t), *ys)


def scan_layers(stacked: nnx.Module, body, carry, xs=None, remat: str = "none"):
    """Runs `body(layer, carry, x) -> (carry, y)` over the stacked layers with `lax.scan`.

    `xs` (optional pytree with a leading layer axis, e.g. a KV cache) is scanned alongside the params.
    `remat` names a policy in REMAT_POLICIES ("none" = no rematerialisation).

    In a CPU program, 16-bit float params and xs travel whole in the loop carry behind an optimization
    barrier and each layer slices its own from there, so XLA cannot hoist an f32 copy of the stack out of the
    loop (see `_BITS`). A differentiated program uses the scanned originals instead (`attach`): values and
    gradients are those of the plain scan. Inside `presliced(stacked)`, the layers run one by one on the copies
    made there; a module from `split_layers` runs them one by one on its own per-layer arrays (no remat).
    """
    if remat not in REMAT_POLICIES:
        raise ValueError(f"unknown remat policy {remat!r}; known: {sorted(REMAT_POLICIES)}")
    for module, graphdef, layer_states in _PRESLICED.get():
        if module is stacked:
            return _run_presliced(graphdef, layer_states, body, carry, xs)
    graphdef, state = nnx.split(stacked)
    if _split_state(state):
        n = len(jax.tree.leaves(state, is_leaf=_is_split)[0])
        return _run_presliced(graphdef, [_layer(state, i) for i in range(n)], body, carry, xs)
    cpu = program_platform() == "cpu"
    whole = jax.tree.map(lambda a: jax.lax.stop_gradient(a) if cpu and is_16bit_float(a) else None, (state, xs))
    n = jax.tree.leaves(state)[0].shape[0]

    def pick(real, w, i):
        return real if w is None else attach(real, jax.lax.dynamic_index_in_dim(w, i, 0, keepdims=False))

    def step(c, inp):
        (h, w), ((layer_real, x_real), i) = c, inp
        w = jax.lax.optimization_barrier(w)
        layer_state, x = jax.tree.map(lambda r, ww: pick(r, ww, i), (layer_real, x_real), w)
        h, y = body(nnx.merge(graphdef, layer_state), h, x)
        return (h, w), y

    if REMAT_POLICIES[remat] is not None:
        step = jax.checkpoint(step, policy=REMAT_POLICIES[remat], prevent_cse=False)
    (h, _), ys = jax.lax.scan(step, (carry, whole), ((state, xs), jnp.arange(n)))
    return h, ys
