"""Upstream PyTorch BAGEL (ByteDance-Seed/Bagel) timed on bench_upstream.py's workloads. Runs in a separate
torch virtual environment (never a dependency of this package; set-up in benchmarks/README.md):

    TORCH_PY benchmarks/upstream_bagel.py --bagel UPSTREAM_DIR [--release DIR] [--dtype float32,bfloat16]
                                          [--repeats 5] [--size 256] [--steps 16] [--threads 2] [--json OUT]
    TORCH_PY benchmarks/upstream_bagel.py --bagel UPSTREAM_DIR --check [--release tests/goldens/bagel_tiny_a]

Imports upstream's modules unchanged from its work tree (`modeling`, `data`, `inferencer.py`, loaded by path)
and builds its Bagel from our release folder as app.py does (Qwen2ForCausalLM with Qwen2MoTDecoderLayer,
qk_norm, untied head; SiglipVisionModel without its last layer, patch embedding as Linear; weights from
ema.safetensors, strict), its AutoEncoder from ae.safetensors with the release's bagel_config.json
vae_config (upstream's `load_ae` hard-codes the 7B release's). Timed, under torch.inference_mode(), with
upstream's own functions (first call apart from the median of `--repeats`, as bench_upstream.py):
- prefill 128: `forward_cache_update_text` of `prepare_prompts` ([bos] + 126 ids + [eos]) into a NaiveCache;
- decode 64, batch b: `generate_text` greedy, 64 steps after that prompt (end_token_id None); b = 16 packs 16
  copies of the prompt's cache (generate_text's packed batch; the inferencer itself decodes one sequence);
- gen step, 1 / 2 branch: `_forward_flow` of `prepare_vae_latent`'s 256 latents (a 16x16 grid, 258 queries)
  at t 0.5 against the 128-token cache; 2 branches = text CFG 4 with the same cache as its unconditional
  context (upstream runs the branches one after the other); latent position ids wrap modulo the release's
  table when the grid exceeds it (tiny releases), as ours index it;
- T2I: `InterleaveInferencer.update_context_text` (16 ids) then `gen_image` (text CFG 4 against the empty
  context, img CFG 1, interval (0.4, 1], global renorm, shift 3, num_timesteps steps + 1) with its VAE decode;
- VAE decode: `InterleaveInferencer.decode_image` of a 1 x (side/16)^2 latent.
Precision, as the tiny_a goldens (tests/goldens/bagel_tiny_a/README.md): float32 = all weights f32 with
upstream's hard-coded bf16 casts made no-ops (its qwen2_navit / siglip_navit module-level `torch` is a proxy
whose bfloat16 is float32; without it upstream's gen mode cannot run f32 weights); bfloat16 = parameters bf16
(rotary inv_freq stays f32) under torch.autocast("cpu", bf16) in place of upstream's autocast("cuda"), the AE
f32 outside autocast (app.py keeps it in f32). flash_attn (CUDA only) is replaced by `flash_attn_varlen_func`
below (torch SDPA per segment). `--threads` torch threads (default 2), OMP_WAIT_POLICY PASSIVE unless set.
Rows {workload, dtype, compile_s, run_s} are printed and written to --json.
"""
from __future__ import annotations

import argparse
import importlib
import importlib.machinery
import importlib.util
import json
import os
import sys
import types

os.environ.setdefault("TQDM_DISABLE", "1")  # generate_image's per-step progress bar
# OpenMP threads that sleep when idle instead of spinning (read when torch loads): on a shared, loaded host the
# spinning default slowed upstream's small ops several-fold. Set OMP_WAIT_POLICY=ACTIVE to time torch's default.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

import upstream_workloads as W  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def flash_attn_varlen_func(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q=None, max_seqlen_k=None,
                           dropout_p=0.0, softmax_scale=None, causal=False, **_):
    """CPU stand-in for flash_attn's kernel: q [Nq, Hq, D], k/v [Nk, Hk, D] packed by cu_seqlens [B + 1];
    GQA by head ratio; causal aligned bottom-right (flash-attn >= 2.1: a query sees every key up to its own
    position counted from the end). Equal-length segments run as one batched SDPA call."""
    cq, ck = cu_seqlens_q.tolist(), cu_seqlens_k.tolist()
    lq, lk = np.diff(cq), np.diff(ck)
    gqa = q.shape[1] != k.shape[1]

    def attend(q, k, v):  # [B, L, H, D] -> [B, Lq, Hq, D]
        nq, nk = q.shape[1], k.shape[1]
        mask = torch.ones(nq, nk, dtype=torch.bool).tril(nk - nq) if causal and 1 < nq < nk else None
        o = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
                                           attn_mask=mask, is_causal=causal and nq == nk > 1,
                                           scale=softmax_scale, enable_gqa=gqa)
        return o.transpose(1, 2)

    if (lq == lq[0]).all() and (lk == lk[0]).all():
        b = len(lq)
        return attend(*(x.reshape(b, -1, *x.shape[1:]) for x in (q, k, v))).reshape(q.shape)
    return torch.cat([attend(q[None, cq[i]:cq[i + 1]], k[None, ck[i]:ck[i + 1]], v[None, ck[i]:ck[i + 1]])[0]
                      for i in range(len(lq))])


class Fp32Torch(types.ModuleType):
    """Upstream's module-level `torch` in float32 runs: `bfloat16` is float32, everything else is torch."""
    bfloat16 = torch.float32

    def __getattr__(self, name):
        return getattr(torch, name)


class IdTokenizer:
    """Upstream's tokenizer argument: `encode` returns the token ids it is given (prompts are id lists)."""

    def encode(self, ids):
        return [int(i) for i in ids]


def import_upstream(bagel: str) -> types.SimpleNamespace:
    """Upstream's modules from the work tree `bagel`, unchanged, with the flash_attn stand-in."""
    shim = types.ModuleType("flash_attn")
    shim.__spec__ = importlib.machinery.ModuleSpec("flash_attn", None)  # transformers probes it (no version:
    shim.flash_attn_varlen_func = flash_attn_varlen_func               # it reports flash-attn 2 absent)
    sys.modules["flash_attn"] = shim
    for pkg in ("data", "modeling"):  # the work tree's packages, found by path (no sys.path edit)
        mod = types.ModuleType(pkg)
        mod.__path__ = [os.path.join(bagel, pkg)]
        sys.modules[pkg] = mod
    spec = importlib.util.spec_from_file_location("inferencer", os.path.join(bagel, "inferencer.py"))
    inferencer = importlib.util.module_from_spec(spec)
    sys.modules["inferencer"] = inferencer
    spec.loader.exec_module(inferencer)
    mods = {n: importlib.import_module(f"modeling.{n}") for n in ("bagel", "autoencoder")}
    mods.update(navit=importlib.import_module("modeling.bagel.qwen2_navit"), inferencer=inferencer,
                siglip=importlib.import_module("modeling.bagel.siglip_navit"),
                data_utils=importlib.import_module("data.data_utils"))
    return types.SimpleNamespace(**mods)


def build(up, release: str, dtype: str):
    """(Bagel, AutoEncoder, new_token_ids) of upstream's classes from our release folder in `dtype`."""
    from safetensors.torch import load_file
    for m in (up.navit, up.siglip):  # fp32: upstream's hard-coded bf16 casts become no-ops
        m.torch = Fp32Torch("torch") if dtype == "float32" else torch
    b = up.bagel
    llm_config = b.Qwen2Config.from_json_file(os.path.join(release, "llm_config.json"))
    llm_config.qk_norm, llm_config.tie_word_embeddings = True, False
    llm_config.layer_module = "Qwen2MoTDecoderLayer"
    vit_config = b.SiglipVisionConfig.from_json_file(os.path.join(release, "vit_config.json"))
    vit_config.rope = False
    vit_config.num_hidden_layers -= 1
    top_path = os.path.join(release, "bagel_config.json")
    top = json.load(open(top_path)) if os.path.exists(top_path) else {}
    ae_path = os.path.join(release, "ae.safetensors")
    if "vae_config" in top:
        fields = up.autoencoder.AutoEncoderParams.__dataclass_fields__
        params = up.autoencoder.AutoEncoderParams(**{k: v for k, v in top["vae_config"].items() if k in fields})
        vae = up.autoencoder.AutoEncoder(params)
        vae.load_state_dict(load_file(ae_path), strict=True)
    else:
        vae, params = up.autoencoder.load_ae(ae_path)
    config = b.BagelConfig(visual_gen=True, visual_und=True, llm_config=llm_config, vit_config=vit_config,
                           vae_config=params, vit_max_num_patch_per_side=top.get("vit_max_num_patch_per_side", 70),
                           connector_act="gelu_pytorch_tanh", latent_patch_size=top.get("latent_patch_size", 2),
                           max_latent_size=top.get("max_latent_size", 64))
    model = b.Bagel(b.Qwen2ForCausalLM(llm_config), b.SiglipVisionModel(vit_config), config)
    model.vit_model.vision_model.embeddings.convert_conv2d_to_linear(vit_config)
    model.load_state_dict(load_file(os.path.join(release, "ema.safetensors")), strict=True)
    if dtype == "bfloat16":
        for p in model.parameters():  # buffers (rotary inv_freq) stay f32, as load_checkpoint_and_dispatch
            p.data = p.data.to(torch.bfloat16)
    model.language_model.model.enable_taylorseer = False  # generate_image sets it; _forward_flow reads it
    if "new_token_ids" in top:
        tokens = top["new_token_ids"]
    else:
        from transformers import Qwen2Tokenizer
        _, tokens, _ = up.data_utils.add_special_tokens(Qwen2Tokenizer.from_pretrained(release))
    return model.eval(), vae.eval(), tokens


def f32_decoder(vae):
    """vae.decode in float32 outside autocast (app.py keeps the AE in f32 on the CPU)."""
    decode = vae.decode

    def run(z):
        with torch.autocast("cpu", enabled=False):
            return decode(z.float())

    vae.decode = run


def workloads(up, model, vae, tokens, args) -> dict:
    """name -> zero-argument callable running upstream once (names as bench_upstream.py's)."""
    rng = np.random.default_rng(0)
    cfg = model.config
    n_layers, vocab = cfg.llm_config.num_hidden_layers, cfg.llm_config.vocab_size
    NaiveCache, tok = up.navit.NaiveCache, IdTokenizer()
    inf = up.inferencer.InterleaveInferencer(model, vae, tok, None, None, tokens)
    prompt = rng.integers(5, vocab, W.PROMPT - 2)
    gi, _, _ = model.prepare_prompts([0], [0], [prompt], tok, tokens)
    out = {W.PREFILL: lambda: model.forward_cache_update_text(NaiveCache(n_layers), **gi)}
    cache = model.forward_cache_update_text(NaiveCache(n_layers), **gi)

    def with_cache(layers):  # a NaiveCache over the given tensors (upstream replaces them, never writes into)
        c = NaiveCache(n_layers)
        c.key_cache, c.value_cache = dict(layers[0]), dict(layers[1])
        return c

    for b in (1, 16):
        layers = tuple({i: t.repeat(b, 1, 1) for i, t in kv.items()} for kv in (cache.key_cache, cache.value_cache))
        start = model.prepare_start_tokens([W.PROMPT] * b, [W.PROMPT] * b, tokens)

        def decode(layers=layers, start=start):  # generate_text shifts packed_key_value_indexes in place
            model.generate_text(with_cache(layers), max_length=W.NEW_TOKENS, do_sample=False, end_token_id=None,
                                **{k: v.clone() for k, v in start.items()})

        out[W.decode_name(b)] = decode
    g = int(round(W.LATENTS ** 0.5))
    hw = (g * model.latent_downsample, g * model.latent_downsample)
    flow = model.prepare_vae_latent([W.PROMPT], [W.PROMPT], [hw], tokens)
    flow["packed_vae_position_ids"] %= model.max_latent_size ** 2
    x_t = flow.pop("packed_init_noises")
    t = torch.full((x_t.shape[0],), 0.5)
    unc = model.prepare_vae_latent_cfg([W.PROMPT], [W.PROMPT], [hw])
    cfg2 = dict(cfg_text_scale=4.0, cfg_text_past_key_values=cache,
                **{k.replace("cfg_", "cfg_text_", 1): v for k, v in unc.items()})
    for branches, extra in ((1, {}), (2, cfg2)):
        out[W.gen_name(branches)] = lambda extra=extra: model._forward_flow(
            x_t=x_t, timestep=t, past_key_values=cache, **flow, **extra)
    side = W.t2i_side(args.size, model.max_latent_size, model.latent_downsample)
    t2i_ids = rng.integers(5, vocab, W.T2I_PROMPT)

    def t2i():
        ctx = inf.update_context_text(t2i_ids, inf.init_gen_context())
        inf.gen_image((side, side), ctx, cfg_text_scale=4.0, cfg_img_scale=1.0,
                      cfg_text_precontext=inf.init_gen_context(), cfg_img_precontext=ctx, cfg_interval=(0.4, 1.0),
                      cfg_renorm_min=0.0, cfg_renorm_type="global", num_timesteps=args.steps + 1, timestep_shift=3.0)

    out[W.t2i_name(side, args.steps)] = t2i
    gs = side // model.latent_downsample
    lat = torch.randn(gs * gs, model.patch_latent_dim)
    out[W.vae_name(side)] = lambda: inf.decode_image(lat, (side, side))
    return out



def check(up, model, tokens, release: str, dtype: str) -> dict:
    """Max |upstream - golden| of the text-prefill case a (logits = lm_head of the captured Qwen2Model
    output, as the goldens; K/V cache) against a_text_prefill.npz (_fp32, or _bf16asis for bfloat16)."""
    a = np.load(os.path.join(release, "a_text_prefill.npz"))
    suffix = "_fp32" if dtype == "float32" else "_bf16asis"
    ids = a["input_ids"]
    gi, _, _ = model.prepare_prompts([0], [0], [ids[1:-1]], IdTokenizer(), tokens)
    assert gi["packed_text_ids"].tolist() == ids.tolist(), "prepare_prompts framing differs from the golden's"
    seen = {}
    hook = model.language_model.model.register_forward_hook(lambda m, i, o: seen.update(h=o.packed_query_sequence))
    cache = model.forward_cache_update_text(up.navit.NaiveCache(len(model.language_model.model.layers)), **gi)
    hook.remove()
    got = dict(logits=model.language_model.lm_head(seen["h"]), k_cache=torch.stack(list(cache.key_cache.values())),
               v_cache=torch.stack(list(cache.value_cache.values())))
    return {k: float(np.abs(v.float().numpy() - a[k + suffix]).max()) for k, v in got.items()}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bagel", required=True, help="work tree of ByteDance-Seed/Bagel")
    ap.add_argument("--release", default=os.path.join(REPO, "tests/goldens/bagel_tiny_a"))
    ap.add_argument("--dtype", default="float32,bfloat16")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--steps", type=int, default=16)
    ap.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    ap.add_argument("--check", action="store_true", help="compare the text prefill with the release's goldens")
    ap.add_argument("--json", default=None, help="also write the rows here")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    up = import_upstream(os.path.abspath(args.bagel))
    rows = []
    for dtype in args.dtype.split(","):
        model, vae, tokens = build(up, args.release, dtype)
        f32_decoder(vae)
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == "bfloat16"):
            if args.check:
                print(f"{dtype}: max abs upstream - golden (a_text_prefill.npz):",
                      {k: f"{v:.3g}" for k, v in check(up, model, tokens, args.release, dtype).items()}, flush=True)
                continue
            for name, fn in workloads(up, model, vae, tokens, args).items():
                compile_s, run_s = W.timed(fn, args.repeats)
                print(f"upstream {name:36s} {dtype:9s} {compile_s:9.2f} {run_s:8.4f}", flush=True)
                rows.append(dict(workload=name, dtype=dtype, compile_s=compile_s, run_s=run_s))
        del model, vae
    if args.json:
        with open(args.json, "w") as f:
            json.dump(dict(threads=args.threads, torch=torch.__version__,
                           omp_wait_policy=os.environ["OMP_WAIT_POLICY"], rows=rows), f, indent=1)


if __name__ == "__main__":
    main()
