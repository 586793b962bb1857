"""Batched text decoding over a preallocated KV cache: one jitted `lax.while_loop`.

Decoding starts by feeding `<|im_start|>` at the context's RoPE id (as BAGEL does) and appends each sampled
token's K/V; a row stops after it has sampled `<|im_end|>` and fed it, so the decoded text ends up in the
context as its own `[im_start] text [im_end]` segment with the exact sampled ids (no re-tokenisation). A row
that reaches `max_new_tokens` without EOS gets a forced `<|im_end|>` (to close the segment) and `truncated=True`;
the forced EOS is not a sampled action. Log-probs are those of the sampled tokens under the UNTRUNCATED
temperature-scaled distribution (log_softmax(logits / T)), whatever top-k / top-p truncation was used to sample.
Only [B, vocab] logits exist at any step.
"""
from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
from flax import struct

from alphagrpo_jax.models import layers
from alphagrpo_jax.models.bagel.attention import CacheMask
from alphagrpo_jax.models.bagel.llm import Routing
from alphagrpo_jax.sampling.context import Context


@dataclasses.dataclass(frozen=True)
class TextSamplerConfig:
    max_new_tokens: int = 256
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0          # 0 = off
    greedy: bool = False

    def __post_init__(self):
        if self.max_new_tokens < 1:
            raise ValueError("max_new_tokens must be >= 1")
        if not self.greedy and self.temperature <= 0:
            raise ValueError("temperature must be > 0 (use greedy=True for argmax decoding)")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")


@struct.dataclass
class DecodeOutput:
    tokens: jax.Array      # [B, T] sampled ids (incl. a sampled EOS), pad 0 after `lengths`
    log_probs: jax.Array   # [B, T] fp32 log-prob of each sampled token, 0 after `lengths`
    lengths: jax.Array     # [B] number of sampled tokens (actions)
    truncated: jax.Array   # [B] bool: hit max_new_tokens without sampling EOS


def _filter_logits(logits: jax.Array, top_k: int, top_p: float) -> jax.Array:
    """Masks logits [B, V] outside the top-k and the nucleus (smallest set with mass >= top_p)."""
    neg = jnp.finfo(jnp.float32).min
    if top_k > 0:
        kth = jax.lax.top_k(logits, top_k)[0][:, -1:]
        logits = jnp.where(logits < kth, neg, logits)
    if top_p < 1.0:
        sorted_logits = jnp.sort(logits, axis=-1)[:, ::-1]
        probs = jax.nn.softmax(sorted_logits, axis=-1)
        # Keep tokens whose preceding cumulative mass is < top_p (always keeps the top token).
        keep_sorted = (jnp.cumsum(probs, axis=-1) - probs) < top_p
        threshold = jnp.min(jnp.where(keep_sorted, sorted_logits, jnp.inf), axis=-1, keepdims=True)
        logits = jnp.where(logits < threshold, neg, logits)
    return logits


def sample_token(logits: jax.Array, keys: jax.Array, cfg: TextSamplerConfig) -> tuple[jax.Array, jax.Array]:
    """(token [B], its log-prob [B] under log_softmax(logits / T)) for fp32 logits [B, V]; one key per row."""
    t = 1.0 if cfg.greedy else cfg.temperature
    scaled = logits.astype(jnp.float32) / t
    logp = jax.nn.log_softmax(scaled, axis=-1)
    if cfg.greedy:
        tok = jnp.argmax(scaled, axis=-1)
    else:
        filtered = _filter_logits(scaled, cfg.top_k, cfg.top_p)
        tok = jax.vmap(lambda k, lg: jax.random.categorical(k, lg))(keys, filtered)
    return tok.astype(jnp.int32), jnp.take_along_axis(logp, tok[:, None], axis=-1)[:, 0]


def step_logits(model, ctx: Context, tokens: jax.Array, positions: jax.Array, active: jax.Array):
    """Feeds one token per row at its position; K/V written at the row's length, which advances only for
    `active` rows. Returns (fp32 logits [B, V], new context with advanced rope for active rows)."""
    b = tokens.shape[0]
    mask = CacheMask(ctx.cache.length, jnp.ones((b,), jnp.int32), causal=True)
    h, cache, _ = model.language_model(model.embed_text(tokens[:, None]), positions[:, None], Routing.und(), mask,
                                       ctx.cache, write_cache=True)
    step = active.astype(jnp.int32)
    cache = cache.replace(length=ctx.cache.length + step)
    return model.logits(h[:, 0]), Context(cache, ctx.rope + step)


@functools.partial(jax.jit, static_argnames=("cfg",), donate_argnums=(1,))
def decode(model, ctx: Context, keys: jax.Array, cfg: TextSamplerConfig) -> tuple[Context, DecodeOutput]:
    """Samples one text segment per row and appends it to the context (which is consumed).

    `keys` [B]: one PRNG key per row, so a row's text depends only on its own key and context.
    """
    b, t_max = ctx.batch, cfg.max_new_tokens
    tok_ids = model.cfg.tokens
    if ctx.cache.size < 1:
        raise ValueError("empty cache")
    init = dict(
        s=jnp.int32(0), tokens=jnp.zeros((b, t_max), jnp.int32), logp=jnp.zeros((b, t_max), jnp.float32),
        n=jnp.zeros((b,), jnp.int32), eos=jnp.zeros((b,), bool), closed=jnp.zeros((b,), bool),
        last=jnp.full((b,), tok_ids.bos, jnp.int32))

    def cond(st):
        return (st["s"] < t_max + 2) & ~jnp.all(st["closed"])

    def body(st):
        s, n, eos, closed = st["s"], st["n"], st["eos"], st["closed"]
        # Step s feeds the token sampled at step s-1; a row past its last sample feeds the forced EOS.
        feed = jnp.where(s == 0, tok_ids.bos, jnp.where(s <= n, st["last"], tok_ids.eos))
        active = ~closed
        logits, new_ctx = step_logits(model, st["ctx"], feed, st["ctx"].rope, active)
        fed_eos = active & (s > 0) & (feed == tok_ids.eos)
        can_sample = active & ~eos & (n < t_max) & ~fed_eos
        tok, lp = sample_token(logits, jax.vmap(lambda k: jax.random.fold_in(k, s))(keys), cfg)
        rows = jnp.arange(b)
        col = jnp.minimum(n, t_max - 1)
        tokens = st["tokens"].at[rows, col].set(jnp.where(can_sample, tok, st["tokens"][rows, col]))
        logp = st["logp"].at[rows, col].set(jnp.where(can_sample, lp, st["logp"][rows, col]))
        return dict(s=s + 1, ctx=new_ctx, tokens=tokens, logp=logp, n=n + can_sample.astype(jnp.int32),
                    eos=eos | (can_sample & (tok == tok_ids.eos)), closed=closed | fed_eos,
                    last=jnp.where(can_sample, tok, st["last"]))

    def loop(c):
        st = jax.lax.while_loop(cond, body, dict(init, ctx=c))
        return st["ctx"], st

    out, st = decode_loop(model, ctx, loop)
    return out, DecodeOutput(st["tokens"], st["logp"], st["n"], ~st["eos"])


def decode_loop(model, ctx: Context, loop):
    """`loop(ctx) -> (ctx, other)`, a token loop over `ctx` (traced), run with each LLM layer's weights and cache
    copied out of their stacks once rather than per token (CPU: `layers.presliced`, `KVCache.per_layer`).
    Returns (ctx with a stacked cache, other)."""
    with layers.presliced(model.language_model.layers) as one_by_one:
        if one_by_one:
            ctx = ctx.replace(cache=ctx.cache.per_layer())
        ctx, other = loop(ctx)
    return ctx.replace(cache=ctx.cache.stacked()), other


def continuation_log_probs(model, cache, prompt_len: jax.Array, prompt_rope: jax.Array, ids: jax.Array,
                           temperature: float = 1.0) -> jax.Array:
    """Teacher-forced log-probs [B, T] of a text segment `[im_start] ids` given the first `prompt_len` slots of
    `cache` (a stop-gradient input; later slots are ignored): log_softmax(logits / T)[ids]. The segment starts
    at RoPE id `prompt_rope`. This is the training path of the decoder's log-probs (same ids, same positions)."""
    b, t = ids.shape
    bos = model.cfg.tokens.bos
    inputs = jnp.concatenate([jnp.full((b, 1), bos, jnp.int32), ids[:, :-1]], axis=1)
    pos = prompt_rope[:, None] + jnp.arange(t)[None]
    mask = CacheMask(prompt_len, jnp.full((b,), t, jnp.int32), causal=True)
    h, _, _ = model.language_model(model.embed_text(inputs), pos, Routing.und(), mask, jax.lax.stop_gradient(cache))
    return model.language_model.token_log_probs(h, ids, temperature)
