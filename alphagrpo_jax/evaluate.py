r"""Evaluate a checkpoint on a benchmark, writing the official scorer's layout (docs/evaluation.md).

    python -m alphagrpo_jax.evaluate --benchmark toy --release assets/toy_base --out eval/toy_base
    python -m alphagrpo_jax.evaluate --benchmark geneval --release DIR \
        --data geneval/prompts/evaluation_metadata.jsonl --out eval/geneval
    python -m alphagrpo_jax.evaluate --benchmark tiif --workdir RUN --step 400 --data TIIF-Bench/data --out eval/tiif \
        --judge-endpoint http://judge:8000/v1 --judge-model Qwen/Qwen2.5-VL-72B-Instruct
    python -m alphagrpo_jax.evaluate --config configs/eval_base.py:wise --config.data=... --config.refine.rounds=2

Without --config the config is configs/eval_base.py:<--benchmark>; the flags below set its keys of the same name.
Every input is checked before any model loads (a one-line error, exit code 2). A killed evaluation resumes where
it stopped when run again with the same --out. With several processes (jax.distributed) each draws every
process_count-th prompt and process 0 writes the report once all manifests are complete.
"""
from __future__ import annotations

import logging
import os
import sys

from absl import flags

from alphagrpo_jax import cli, paths
from alphagrpo_jax import plugins
from alphagrpo_jax.errors import UsageError

_FLAGS = {  # flag -> config key
    "benchmark": "benchmark", "variant": "variant", "data": "data", "release": "release", "workdir": "workdir",
    "out": "out", "judge-endpoint": "judge.endpoint", "judge-model": "judge.model", "gate": "refine.gate",
}

DEFAULT_CONFIG = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs", "eval_base.py")
log = logging.getLogger("alphagrpo_jax.evaluate")


def define_flags() -> None:
    """The CLI form's flags (defined by the program only: other entry points own --out / --step too)."""
    for name in _FLAGS:
        flags.DEFINE_string(name, None, f"sets config.{_FLAGS[name]}")
    flags.DEFINE_integer("step", None, "sets config.step (checkpoint step of --workdir; default the latest)")
    flags.DEFINE_integer("refine", None, "sets config.refine.rounds (Self-Reflective Refinement rounds)")
    flags.DEFINE_boolean("think", None, "sets config.generation.think")


def apply_flags(config) -> None:
    """Sets the config keys of the flags given on the command line (printed: the config above predates them)."""
    f = flags.FLAGS
    values = {key: f[name].value for name, key in _FLAGS.items()}
    values.update({"step": f["step"].value, "refine.rounds": f["refine"].value, "generation.think": f["think"].value})
    for key, value in values.items():
        if value is None:
            continue
        node, *rest = key.split(".")
        target = config if not rest else config[node]
        target[rest[0] if rest else node] = value
        print(f"flag: config.{key} = {value!r}", flush=True)


def prepare(config):
    """Everything checked before any model loads: (benchmark, variant, its items, judge templates)."""
    from alphagrpo_jax.evaluation import benchmarks, model

    plugins.load(config)  # the toy benchmark comes with the toy plug-in
    bench = benchmarks.get(config.benchmark)
    variant = bench.check_variant(config.variant)
    if not config.out:
        raise UsageError("config.out: expected the output folder (local or gs://), got ''")
    from alphagrpo_jax import checks

    checks.writable_folder(config.out, "config.out")
    if not config.data and bench.needs_data:
        raise UsageError(f"config.data: expected the path of {bench.name}'s official prompt files (docs/evaluation.md)")
    n = config.generation.images_per_prompt
    if n:
        most = bench.max_images_per_prompt
        if n < 1 or (most is not None and n > most):
            raise UsageError(f"config.generation.images_per_prompt: {bench.name}'s layout holds "
                             f"{'1 to ' + str(most) if most else 'at least 1'} image(s) per prompt, got {n}")
        bench.images_per_prompt = n  # the layouts name as many files
    items = bench.read(config.data, variant)
    if config.limit:
        items = items[:config.limit]
    model.check_source(config.release, config.workdir, config.step)
    g = config.generation
    for key in ("height", "width", "batch_size", "num_timesteps", "think_tokens"):
        checks.int_at_least(g[key], 2 if key == "num_timesteps" else 1, f"config.generation.{key}")
    checks.one_of(config.refine.gate, ("self", "dvreward", "oracle"), "config.refine.gate")
    checks.one_of(config.transform, ("", "bagel", "toy"), "config.transform")
    if config.judge.endpoint:
        if not bench.judged:
            raise UsageError(f"config.judge.endpoint: {bench.name} is not scored by a VLM judge here")
        if not config.judge.model:
            raise UsageError("config.judge.model: expected the judge's served model id, got ''")
        from alphagrpo_jax.reward.health import check_endpoint

        check_endpoint(config.judge.endpoint, config.judge.model, config.judge.api_key_env or None,
                       key="config.judge.endpoint")
    for other in (x for x in config.compare.split(",") if x):
        if not paths.exists(paths.join(other, "scores.json")):
            raise UsageError(f"config.compare: {other}: no scores.json; expected a finished evaluation's --out folder")
    templates = judge_templates(config)
    return bench, variant, items, templates


def judge_templates(config) -> dict[str, str]:
    from alphagrpo_jax.evaluation.templates import TEMPLATES
    from alphagrpo_jax.sampling.prompts import PromptError, prompt_text

    out = {}
    for name, default in TEMPLATES.items():
        try:
            out[name] = prompt_text(config.judge.templates[name], f"config.judge.templates.{name}") or default
        except PromptError as e:
            raise UsageError(str(e)) from None
    return out


def question_sets(config, bench, items):
    """item -> its DVReward question set: the benchmark's own (toy) or config.records' (checked to cover every
    item, before any model loads)."""
    if hasattr(bench, "record"):
        return bench.record
    if not config.records:
        raise UsageError("config.records: refinement gates and the DVReward score need each prompt's question set "
                         "(DVReward records JSONL, `python -m alphagrpo_jax.reward.decompose`)")
    from alphagrpo_jax import checks
    from alphagrpo_jax.reward.records import RecordError, read_records

    checks.existing_file(config.records, "config.records")
    try:
        by_prompt = {rec.prompt: rec for rec in read_records(config.records)}
    except RecordError as e:
        raise UsageError(f"config.records: {e}") from None
    missing = [it.prompt for it in items if it.prompt not in by_prompt]
    if missing:
        raise UsageError(f"config.records: {config.records}: no question set for prompt {missing[0]!r} "
                         f"({len(missing)} prompt(s) without one)")
    return lambda item: by_prompt[item.prompt]


def reward_fn(endpoint: str, model: str, api_key_env: str, bench, image_format: str = "jpeg"):
    """A DVReward function: through `endpoint`, or (none given) the benchmark's in-process verifier (toy)."""
    from alphagrpo_jax.reward.service import build_reward_fn, reward_config

    rc = reward_config()
    if endpoint:
        rc.endpoints, rc.model, rc.api_key_env, rc.image_format = (endpoint,), model, api_key_env, image_format
        rc.weights = {"dvreward": 1.0, "think_format": 0.0}
    elif hasattr(bench, "gate_weights"):
        rc.weights = bench.gate_weights()
    else:
        raise UsageError("config.refine.verifier_endpoint: the dvreward and oracle gates need a DVReward verifier")
    return build_reward_fn(rc)


def scorers(config, bench, items) -> tuple:
    """(score(item, image) or None, refinement gate {record, reward_fn} or None, what to close when done),
    checked before any model loads. The score: the benchmark's own (toy: the exact verifier) or DVReward
    through config.dvreward."""
    score, gate, closers = getattr(bench, "score", None), None, []
    if score is None and config.dvreward.endpoint:
        record = question_sets(config, bench, items)
        d = config.dvreward
        fn = reward_fn(d.endpoint, d.model, d.api_key_env, bench, d.image_format)
        closers.append(fn)
        score = lambda item, image: float(fn([image], [item.prompt], [record(item)]).rewards[0])  # noqa: E731
    if config.refine.rounds:
        r = config.refine
        gate = {"record": question_sets(config, bench, items), "reward_fn": None}
        if r.gate in ("dvreward", "oracle"):
            gate["reward_fn"] = reward_fn(r.verifier_endpoint, r.verifier_model, "OPENAI_API_KEY", bench)
            closers.append(gate["reward_fn"])
    return score, gate, closers


def process() -> tuple[int, int]:
    """(this process's index, the number of processes): prompt i is drawn by process i % count."""
    import jax

    return jax.process_index(), jax.process_count()


def main(config) -> None:
    from alphagrpo_jax.evaluation import files, model, runner, scoring
    from alphagrpo_jax.parallel import distributed

    bench, variant, items, templates = prepare(config)
    distributed.maybe_initialize()  # as train does: a multi-process job's runtime (single process: nothing)
    pi, pc = process()
    mine = items[pi::pc]
    settings = runner.GenerationSettings(**{k: config.generation[k] for k in config.generation.keys()})
    refine = runner.RefineSettings(config.refine.rounds, config.refine.gate, config.refine.threshold,
                                   config.refine.reflection)
    manifest = runner.open_manifest(config.out, pi, pc)
    step = None
    if any(it.key not in manifest for it in mine):
        score, gate, closers = scorers(config, bench, mine)
        from alphagrpo_jax.models.bagel import image_transform
        from alphagrpo_jax.sampling.pipeline import Pipeline

        kw = {}
        name = config.transform or bench.transform
        if name:  # a registered transform pair (the toy plug-in registers "toy")
            if name not in image_transform.TRANSFORMS:
                raise UsageError(f"config.transform: unknown transform {name!r}; known: "
                                 f"{sorted(image_transform.TRANSFORMS)} (plug-ins register more)")
            vae, vit = image_transform.TRANSFORMS[name]
            kw = dict(vae_transform=vae, vit_transform=vit)
        rel, step = model.load(config.release, config.workdir, config.step, config.dtype)
        pipe = Pipeline(rel, cache_size=config.cache_size, **kw)
        del rel  # the pipeline's copy (on CPU: layers split apart) is the one kept
        try:
            runner.generate(bench, mine, pipe, settings, config.out, variant, config.model_name, manifest,
                            score=score, refine=refine, gate=gate)
        finally:
            for fn in closers:
                fn.close()
    if pi != 0:
        return
    rows = {}
    for p in range(pc):
        rows.update(runner.open_manifest(config.out, p, pc).rows)
    if len(rows) < len(items):
        log.warning("%d of %d prompts drawn so far (other processes still running?); no report yet",
                    len(rows), len(items))
        return
    scores = {}
    if "score" in next(iter(rows.values()), {}):
        label = "dvreward" if config.dvreward.endpoint and not hasattr(bench, "score") else "score"
        scores["refined" if refine.rounds else label] = scoring.per_dimension(list(rows.values()), "score")
        if refine.rounds:
            scores["first draw"] = scoring.per_dimension(list(rows.values()), "first_score")
    if config.judge.endpoint:
        from alphagrpo_jax.evaluation.judge import Judge

        j = config.judge
        judge = Judge(j.endpoint, j.model, j.api_key_env, j.concurrency, j.max_retries, j.timeout_s, j.temperature)
        judged = scoring.judge_pending(bench, items, rows, config.out, variant, config.model_name, judge, templates)
        scores["judge"] = bench.aggregate(judged, variant)
    if config.scores_from:
        from alphagrpo_jax.evaluation import geneval

        scores["geneval"] = geneval.summarize(config.scores_from)
    caveats = []
    if config.limit:
        caveats.append(f"only the first {config.limit} prompts")
    if config.judge.endpoint:
        ours = [n for n in bench.template_names(variant) if config.judge.templates[n] == ""]
        if ours:
            caveats.append(f"judge templates {ours} are this project's wording, not the benchmark's")
    if bench.images_per_prompt != type(bench).images_per_prompt:
        caveats.append(f"{bench.images_per_prompt} images per prompt instead of the benchmark's "
                       f"{type(bench).images_per_prompt}")
    if refine.rounds and refine.gate == "oracle":
        caveats.append("refinement gated by the evaluator itself (oracle gate)")
    provenance = {
        "checkpoint": config.release or f"{config.workdir} step {step if step is not None else config.step}",
        "generation": settings.__dict__, "refine": refine.__dict__,
        "prompt_set_sha256": files.sha256_of(*[f"{it.key}\t{it.prompt}\n" for it in items]), "data": config.data,
        "judge": {"endpoint": config.judge.endpoint, "model": config.judge.model,
                  "template_sha256": {n: files.sha256_of(templates[n]) for n in bench.template_names(variant)}}
        if config.judge.endpoint else None}
    others = [x for x in config.compare.split(",") if x]
    compare = scoring.compare_runs(others, others, scores) if others else {}
    print(scoring.write(config.out, bench, variant, scores, provenance, caveats, [rows[it.key] for it in items],
                        compare))


def _default_config(argv: list[str]) -> list[str]:
    """argv with `--config configs/eval_base.py:<--benchmark>` added when no --config is given."""
    if any(a == "--config" or a.startswith("--config=") for a in argv[1:]):
        return argv
    name = "toy"
    for i, a in enumerate(argv):
        if a.startswith("--benchmark="):
            name = a.split("=", 1)[1]
        elif a == "--benchmark" and i + 1 < len(argv):
            name = argv[i + 1]
    return [argv[0], "--config", f"{DEFAULT_CONFIG}:{name}", *argv[1:]]


def _main_with_flags(config) -> None:
    apply_flags(config)
    main(config)


if __name__ == "__main__":
    define_flags()
    sys.argv = _default_config(sys.argv)
    cli.run(_main_with_flags)
