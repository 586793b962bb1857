"""Generate images (or answers) with a BAGEL release folder.

    python -m alphagrpo_jax.generate --checkpoint DIR --prompt "a red cube" --out out.png [--think]
    python -m alphagrpo_jax.generate --checkpoint DIR --image in.png --prompt "make it blue" --out edit.png
    python -m alphagrpo_jax.generate --checkpoint DIR --prompts-file prompts.txt --out outdir/
    python -m alphagrpo_jax.generate --checkpoint DIR --prompt "two red circles" --refine 3 --out outdir/ \
        --records questions.jsonl [--gate self | --gate dvreward --verifier-endpoint URL | --oracle-gate ...]

`--refine N`: Self-Reflective Refinement: after the first image, up to N reflect-and-redraw rounds while the gate
says the image does not satisfy the prompt. Default gate "self": the model's own yes/no answers to the
prompt's decomposed questions (from --records, or a registered decomposer with --questions NAME). "dvreward": a
DVReward verifier (--verifier-endpoint, or a registered reward component in process with --verifier-component
NAME) above --threshold. `--oracle-gate`: the evaluator itself decides (all semantic questions yes) - this
reproduces the reference's evaluator-gated benchmark protocol and is reported as such.

Sampling flags left unset come from the release's generation_config.json, else the library defaults
(sampling/generation_config.py); the KV cache is sized to the longest context. Prompt i samples with seed
--seed + i in any batch; --prompts-file also writes manifest.jsonl. Hub ids (ByteDance-Seed/BAGEL-7B-MoT) are
downloaded once into the Hugging Face cache. Compiled programs persist in --compilation-cache (compile_cache.py).

Plug-ins (alphagrpo_jax/plugins.py) add names to --transform, --questions and --verifier-component; `--plugin
MODULE` imports one, and a release's generation_config.json may name its own (the toy base names the toy world's:
32 px transforms "toy", decomposer "toy", component "toy_dvreward"):

    python -m alphagrpo_jax.generate --checkpoint assets/toy_base --prompt "two red circles" --think --refine 2 \
        --questions toy --out o/

Prompts that steer the model (docs/prompts.md): `--think-system-prompt`, `--reflection-prompt` (template with
{prompt}) and `--verifier-system-prompt` take the text or file:PATH. Use the strings the checkpoint (and the
verifier) were used with: the defaults are this project's own wording.

--checkpoint, --prompts-file, --image and --out may be local or gs:// (alphagrpo_jax/paths.py).
"""
from __future__ import annotations

import argparse
import dataclasses
import datetime
import io
import json
import sys
import time

from PIL import Image

from alphagrpo_jax import checks, compile_cache, errors, paths, plugins
from alphagrpo_jax.errors import UsageError
from alphagrpo_jax.generate_refine import run_refine
from alphagrpo_jax.metrics import progress
from alphagrpo_jax.models.bagel import config as config_lib, release
from alphagrpo_jax.models.bagel.image_transform import TRANSFORMS
from alphagrpo_jax.parallel import distributed, mesh as mesh_lib
from alphagrpo_jax.reward.components import COMPONENTS
from alphagrpo_jax.reward.decomposers import DECOMPOSERS
from alphagrpo_jax.reward.health import check_endpoint
from alphagrpo_jax.reward.records import RecordError, read_records
from alphagrpo_jax.reward.service import reward_config
from alphagrpo_jax.sampling import generation_config as gen_lib
from alphagrpo_jax.sampling.pipeline import Pipeline
from alphagrpo_jax.sampling.prompts import (REFLECTION_PROMPT, PromptError, check_reflection_template,
                                            prompt_text)
from alphagrpo_jax.sampling.text import TextSamplerConfig


UNDERSTAND_TOKENS = 512  # --understand's answer length (Pipeline.understand's max_new_tokens)


def _read_prompts(path: str) -> list[str]:
    out = []
    checks.existing_file(path, "--prompts-file")
    with paths.open(path) as f:
        for i, line in enumerate(f, 1):
            line = line.strip()
            if not line:
                continue
            if line.startswith("{"):
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError as e:
                    raise UsageError(f"--prompts-file {path}:{i}: not valid JSON ({e.msg} at column {e.colno})") \
                        from None
                if not isinstance(rec, dict) or not isinstance(rec.get("prompt"), str):
                    raise UsageError(f"--prompts-file {path}:{i}: field 'prompt' (a string) is required")
                out.append(rec["prompt"])
            else:
                out.append(line)
    if not out:
        raise UsageError(f"--prompts-file {path}: no prompts (the file is empty); expected one prompt per line")
    return out


def _registered(value, known, flag: str) -> None:
    if value is not None and value not in known:
        raise UsageError(f"{flag}: expected one of {sorted(known)}, got {value!r} (a plug-in's name needs its module: "
                         "--plugin MODULE, e.g. --plugin alphagrpo_jax.toy.plugin)")


SETTINGS = {"height": "height", "width": "width", "num_steps": "num_timesteps", "cfg_text": "cfg_text",
            "cfg_img": "cfg_img", "cfg_interval": "cfg_interval", "shift": "shift", "think_tokens": "think_tokens",
            "think_temperature": "think_temperature", "cache_size": "cache_size", "transform": "transform"}


def apply_release_settings(args) -> config_lib.BagelConfig:
    """Fills the sampling flags left unset from the release's generation_config.json, then the library defaults
    (sampling/generation_config.py); imports the plug-ins the release names. Returns the release's BagelConfig."""
    cfg = config_lib.from_release_dir(args.checkpoint)
    given = {name: getattr(args, flag) for flag, name in SETTINGS.items()}
    if isinstance(given["cfg_interval"], str):
        try:
            given["cfg_interval"] = tuple(float(x) for x in given["cfg_interval"].split(","))
        except ValueError:
            raise UsageError(f"--cfg-interval: expected two numbers 'lo,hi', got {args.cfg_interval!r}") from None
        if len(given["cfg_interval"]) != 2:
            raise UsageError(f"--cfg-interval: expected two numbers 'lo,hi', got {args.cfg_interval!r}")
    args.cache_size_given = args.cache_size is not None
    g = gen_lib.resolve(args.checkpoint, cfg, **given)
    plugins.load({"plugins": list(g.plugins)})
    for flag, name in SETTINGS.items():
        setattr(args, flag, getattr(g, name))
    return cfg


def check_args(args) -> list[str] | None:
    """Every argument and input/output path checked before the model loads (UsageError); the prompts of
    --prompts-file. The checkpoint may be a Hugging Face Hub id (replaced by its downloaded folder)."""
    args.checkpoint = checks.release_folder(args.checkpoint, "--checkpoint")
    cfg = apply_release_settings(args)
    _registered(args.transform, TRANSFORMS, "--transform")
    _registered(args.questions, DECOMPOSERS, "--questions")
    _registered(args.verifier_component, set(COMPONENTS) - {"dvreward", "think_format"}, "--verifier-component")
    if not args.understand and not args.image:  # editing draws at the input image's (resized) size
        gen_lib.check_size(cfg, args.height, args.width)
    if args.num_steps < 2:
        raise UsageError(f"--num-steps: expected >= 2 timestep grid points (steps = this - 1), got {args.num_steps}")
    for name in ("height", "width", "batch_size", "think_tokens", "cache_size"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            raise UsageError(f"--{name.replace('_', '-')}: expected >= 1, got {getattr(args, name)}")
    if args.refine < 0:
        raise UsageError(f"--refine: expected >= 0 rounds, got {args.refine}")
    lo, hi = args.cfg_interval
    if not 0.0 <= lo <= hi <= 1.0:
        raise UsageError(f"--cfg-interval: expected 0 <= lo <= hi <= 1, got {args.cfg_interval!r}")
    if args.image:
        checks.existing_file(args.image, "--image")
    if args.understand and (args.image is None or args.prompt is None):
        raise UsageError("--understand needs --image and --prompt")
    if args.records:
        checks.existing_file(args.records, "--records")
    if args.refine and not (args.records or args.questions):
        raise UsageError("--refine needs the prompt's decomposed questions: --records FILE or --questions NAME")
    if (args.gate == "dvreward" or args.oracle_gate) and not (args.verifier_endpoint or args.verifier_component):
        raise UsageError("the dvreward/oracle gate needs --verifier-endpoint URL or --verifier-component NAME")
    prompts = _read_prompts(args.prompts_file) if args.prompts_file else None
    if args.refine and args.records and not args.questions:
        try:
            known = {rec.prompt for rec in read_records(args.records)}
        except RecordError as e:
            raise UsageError(f"--records {e}") from None
        missing = [p for p in (prompts or [args.prompt]) if p not in known]
        if missing:
            raise UsageError(f"--records {args.records}: no question set for prompt {missing[0]!r} "
                             f"({len(missing)} prompt(s) without one)")
    if args.understand:
        checks.output_file(args.out, "--out")
        return prompts
    if args.prompts_file or args.refine:  # a folder of images
        checks.writable_folder(args.out, "--out")
    else:
        checks.output_file(args.out, "--out")
    if (args.gate == "dvreward" or args.oracle_gate) and args.verifier_endpoint and not args.verifier_component:
        check_endpoint(args.verifier_endpoint, args.verifier_model, "OPENAI_API_KEY", key="--verifier-endpoint")
    return prompts


def parse_args(argv=None):
    """The flags, after importing the `--plugin` modules (they register --transform / --questions /
    --verifier-component names)."""
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--plugin", action="append", default=[])
    try:
        plugins.load({"plugins": pre.parse_known_args(argv)[0].plugin})
    except UsageError as e:
        raise UsageError(str(e).replace("config.plugins", "--plugin")) from None
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--plugin", action="append", default=[], metavar="MODULE",
                    help="import a plug-in module first (repeatable), e.g. alphagrpo_jax.toy.plugin")
    ap.add_argument("--checkpoint", required=True,
                    help="BAGEL release folder (ema.safetensors, configs, tokenizer) or a Hugging Face Hub id, "
                         "e.g. ByteDance-Seed/BAGEL-7B-MoT (downloaded once into the Hub cache)")
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--prompt")
    src.add_argument("--prompts-file", help="one prompt per line, or JSONL with a 'prompt' field")
    ap.add_argument("--image", help="input image: editing (or understanding with --understand)")
    ap.add_argument("--understand", action="store_true", help="answer --prompt about --image (printed and written "
                    "to --out)")
    ap.add_argument("--think", action="store_true", help="plan in <think> text before drawing")
    ap.add_argument("--out", required=True,
                    help="output PNG (one prompt), folder (--prompts-file, --refine) or text file (--understand)")
    ap.add_argument("--compilation-cache", default=None, metavar="DIR|off",
                    help=f"persistent JAX compilation cache (default: ${compile_cache.ENV}, else "
                         "~/.cache/alphagrpo_jax/jax)")
    dflt = "(default: the release's generation_config.json, else %s)"
    ap.add_argument("--height", type=int, help=dflt % "the largest the latent grid holds, <= 1024")
    ap.add_argument("--width", type=int, help=dflt % "the largest the latent grid holds, <= 1024")
    ap.add_argument("--num-steps", type=int, help="timestep grid points (steps = this - 1) " + dflt % 50)
    ap.add_argument("--cfg-text", type=float, help=dflt % 4.0)
    ap.add_argument("--cfg-img", type=float, help=dflt % "2.0 when editing, 1.0 otherwise")
    ap.add_argument("--cfg-interval", help="'lo,hi' " + dflt % "0.4,1.0")
    ap.add_argument("--renorm", default=None, choices=["global", "channel", "text_channel"])
    ap.add_argument("--renorm-min", type=float, default=0.0)
    ap.add_argument("--shift", type=float, help=dflt % "the release's inference_timestep_shift")
    ap.add_argument("--think-tokens", type=int, help=dflt % 1024)
    ap.add_argument("--think-temperature", type=float, help=dflt % 0.3)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--seed", type=int, default=0, help="prompt i (0-based) samples with seed + i, in any batch")
    ap.add_argument("--cache-size", type=int, help="KV cache slots per sample " + dflt % "what the context needs")
    ap.add_argument("--dtype", default=None, help="override param/activation dtype, e.g. float32")
    ap.add_argument("--transform", help="input-image resize rules: 'bagel' (VAE 512-1024 px) or a plug-in's (e.g. "
                    "toy: 32 px) " + dflt % "bagel")
    ap.add_argument("--refine", type=int, default=0, help="Self-Reflective Refinement rounds (see above)")
    ap.add_argument("--gate", default="self", choices=["self", "dvreward"])
    ap.add_argument("--oracle-gate", action="store_true",
                    help="evaluator-gated protocol of the reference (uses the verifier as an oracle)")
    ap.add_argument("--threshold", type=float, default=0.9, help="gate score that counts as satisfied")
    ap.add_argument("--records", help="JSONL question sets (DVReward records); the prompt's is looked up by text")
    ap.add_argument("--questions", help="decompose each prompt with this registered decomposer (a plug-in's, e.g. toy)")
    ap.add_argument("--verifier-endpoint", help="OpenAI-compatible verifier base URL for dvreward/oracle gates")
    ap.add_argument("--verifier-model", default=reward_config().model, help="served verifier model name")
    ap.add_argument("--verifier-component",
                    help="a plug-in's in-process verifier reward component for dvreward/oracle (e.g. toy_dvreward)")
    ap.add_argument("--think-system-prompt", default="",
                    help="think-mode system prompt: text or file:PATH (default: the release's, else ours)")
    ap.add_argument("--reflection-prompt", default="",
                    help="SRR reflection prompt template with {prompt}: text or file:PATH (default: ours)")
    ap.add_argument("--verifier-system-prompt", default="", help="verifier system prompt: text or file:PATH")
    return ap.parse_args(argv)


def resolve_prompt_flags(args) -> None:
    """--think-system-prompt / --reflection-prompt / --verifier-system-prompt: file:PATH -> the file's text
    (a one-line exit before any model loads when a file is missing or the template lacks {prompt})."""
    try:
        for flag in ("think_system_prompt", "reflection_prompt", "verifier_system_prompt"):
            setattr(args, flag, prompt_text(getattr(args, flag), "--" + flag.replace("_", "-")) or "")
        if args.reflection_prompt:
            check_reflection_template(args.reflection_prompt, "--reflection-prompt")
    except PromptError as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(2) from None


def _phase(msg: str) -> None:
    """A phase line on stderr (where the progress bars are)."""
    print(msg, file=sys.stderr, flush=True)


def cache_size(args, pipe, prompts, image) -> int:
    """KV slots per sample: what the longest context needs, or --cache-size / the release's when larger. A given
    --cache-size that is too small is a UsageError before anything compiles."""
    need = gen_lib.context_cache_size(
        pipe, prompts, think=args.think, think_tokens=args.think_tokens, image=image,
        understand_tokens=UNDERSTAND_TOKENS if args.understand else None,
        refine_size=(args.height, args.width) if args.refine else None,
        reflection=args.reflection_prompt or REFLECTION_PROMPT)
    if args.cache_size_given and args.cache_size < need:
        raise UsageError(f"--cache-size {args.cache_size}: the longest context needs {need} KV slots (prompt, "
                         f"think tokens, image tokens); use >= {need} or leave it unset")
    return max(need, args.cache_size or 0)


def settings_record(args) -> dict:
    """The sampling settings of a run, as written into manifest.jsonl."""
    keys = ("checkpoint", "think", "height", "width", "num_steps", "cfg_text", "cfg_img", "cfg_interval",
            "renorm", "renorm_min", "shift", "think_tokens", "think_temperature", "batch_size", "cache_size",
            "transform", "image", "dtype")
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in ((k, getattr(args, k)) for k in keys)}


def run_generate(args, pipe, prompts, image, think_cfg) -> int:
    """Images in batches of --batch-size (the last one padded: one compiled program); prompt i samples with
    seed + i whatever the batch. A prompts file writes NNNN.png (+ NNNN.txt think text) and manifest.jsonl."""
    batch = min(args.batch_size, len(prompts))
    manifest = paths.join(args.out, "manifest.jsonl") if args.prompts_file else None
    if manifest:
        paths.makedirs(args.out)
        paths.write_text(manifest, "")
    n_batches = -(-len(prompts) // batch)
    for b, start in enumerate(range(0, len(prompts), batch)):
        chunk = prompts[start:start + batch]
        seeds = [args.seed + start + j for j in range(len(chunk))]
        pad = batch - len(chunk)
        where = f"batch {b + 1}/{n_batches}"
        first = "compiling (first call), " if b == 0 else ""
        bar = progress(total=args.num_steps - 1, desc=f"{where}: {first}prefill{' + think' if args.think else ''}",
                       unit="step")

        def on_step(i, bar=bar, where=where):
            bar.set_description(f"{where}: denoising" if i + 2 < args.num_steps else f"{where}: decoding")
            bar.update(1)

        t0 = time.perf_counter()
        gens = pipe.generate_images(
            chunk + chunk[-1:] * pad, think=args.think, images=None if image is None else [image] * batch,
            height=args.height, width=args.width, num_timesteps=args.num_steps, cfg_text=args.cfg_text,
            cfg_img=args.cfg_img, cfg_interval=args.cfg_interval, renorm_type=args.renorm,
            renorm_min=args.renorm_min, shift=args.shift, row_seeds=seeds + seeds[-1:] * pad,
            think_sampler=think_cfg, on_step=on_step)[:len(chunk)]
        seconds = time.perf_counter() - t0
        bar.close()
        for j, g in enumerate(gens):
            k = start + j
            path = args.out if not args.prompts_file else paths.join(args.out, f"{k:04d}.png")
            paths.save_image(path, Image.fromarray(g.image))
            if g.think is not None:
                paths.write_text(path[:-len(".png")] + ".txt" if path.endswith(".png") else path + ".txt", g.think)
                print(f"[think {k}] {g.think}")
            print(f"wrote {path}")
            if manifest:
                row = dict(index=k, prompt=chunk[j], file=paths.basename(path), seed=seeds[j], think=g.think,
                           settings=settings_record(args), batch_seconds=round(seconds, 3),
                           time=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"))
                paths.append_text(manifest, json.dumps(row) + "\n")
    if manifest:
        print(f"wrote {manifest}")
    return 0


def main(argv=None) -> int:
    args = parse_args(argv)
    cache_dir = compile_cache.setup(args.compilation_cache)
    resolve_prompt_flags(args)
    file_prompts = check_args(args)
    distributed.setup()
    overrides = dict(param_dtype=args.dtype, dtype=args.dtype) if args.dtype else {}
    if args.think_system_prompt:  # wins over the release's recorded prompt
        overrides["think_system_prompt"] = args.think_system_prompt
    t0 = time.perf_counter()
    _phase(f"loading {args.checkpoint} ...")
    rel = release.load_release(args.checkpoint, mesh_lib.make_mesh({"fsdp": -1}), **overrides)
    _phase(f"loaded in {time.perf_counter() - t0:.1f} s; compilation cache: {cache_dir or 'off'}")
    vae_transform, vit_transform = TRANSFORMS[args.transform]
    pipe = Pipeline(rel, vae_transform=vae_transform, vit_transform=vit_transform)
    del rel  # the pipeline's copy (on CPU: layers split apart) is the one kept
    image = Image.open(io.BytesIO(paths.read_bytes(args.image))) if args.image else None
    prompts = [args.prompt] if args.prompt else file_prompts
    args.cache_size = cache_size(args, pipe, prompts, image)
    pipe = dataclasses.replace(pipe, cache_size=args.cache_size)
    if args.understand:
        _phase("compiling (first call) + answering ...")
        answer = pipe.understand([image], [args.prompt], think=args.think, max_new_tokens=UNDERSTAND_TOKENS)[0]
        print(answer)
        paths.write_text(args.out, answer + "\n")
        print(f"wrote {args.out}")
        return 0
    think_cfg = TextSamplerConfig(max_new_tokens=args.think_tokens, temperature=args.think_temperature)
    if args.refine:
        return run_refine(args, pipe, prompts, think_cfg, _phase)
    return run_generate(args, pipe, prompts, image, think_cfg)


if __name__ == "__main__":
    sys.exit(errors.run_main(main))
