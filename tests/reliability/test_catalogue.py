"""The catalogue of usage errors (docs/errors.md): malformed configs, flags and files, each with its exact
one-line message, found before any model loads.

Training-config cases run through `check_train_config` (what `train()` runs first; cheap, in process); the
entry-point cases run the real programs as a user would (subprocess, real files, a real HTTP server) and check
exit code 2, one `error: ...` line on stderr and no traceback.
"""
import os
import subprocess
import sys

import pytest

from alphagrpo_jax import cli
from alphagrpo_jax.errors import UsageError
from alphagrpo_jax.reward.components import COMPONENTS
from alphagrpo_jax.reward.openai_server import OpenAIServer
from alphagrpo_jax.reward.records import Question, QuestionSet
from alphagrpo_jax.rl.validate import check_train_config
from configs import toy_rt2i
from tests.models.bagel.parity_utils import GOLDENS

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

DEAD = "http://127.0.0.1:9/v1"  # the discard port: nobody listens
RELEASE_NEEDS = "expected llm_config.json, vit_config.json, ema.safetensors and tokenizer.json or vocab.json + merges.txt"


def _record(i: int, questions: int = 2) -> str:
    qs = tuple(Question("semantic", f"is there thing {i}.{j}?", "Existence") for j in range(questions))
    return QuestionSet(f"prompt {i}", qs, ()).to_line()


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("catalogue")
    (d / "train.jsonl").write_text("".join(_record(i) for i in range(6)))
    (d / "eval.jsonl").write_text("".join(_record(i) for i in range(2)))
    (d / "empty.jsonl").write_text("\n")
    (d / "two.jsonl").write_text(_record(0) + _record(1))
    (d / "badjson.jsonl").write_text(_record(0) + '{"prompt": "x", ')
    (d / "noquestions.jsonl").write_text(_record(0) + _record(1, questions=0) + _record(2))
    (d / "nometrics").mkdir()
    (d / "afile").write_text("x")
    novocab = d / "novocab"
    novocab.mkdir()
    for name in os.listdir(GOLDENS):
        if name != "vocab.json":
            os.symlink(os.path.join(GOLDENS, name), novocab / name)
    return d


def base_config(d):
    c = toy_rt2i.get_config()
    c.workdir = str(d / "work")
    c.model.release = str(GOLDENS)
    c.data.update(dict(prompt_source="files", train_prompts=str(d / "train.jsonl"), eval_prompts=str(d / "eval.jsonl")))
    return c


def _set(config, key, value):
    *parents, last = key.split(".")
    node = config
    for p in parents:
        node = node[p]
    with node.unlocked() if hasattr(node, "unlocked") else _nullcontext():
        node[last] = value


class _nullcontext:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


# (overrides {key: value, "{d}" is the fixture folder}, exact message)
CONFIG_CASES = [
    ({"rollout.group_size": 1},
     "config.rollout.group_size: expected an integer >= 2 (GRPO compares the samples of a prompt's group), got 1"),
    ({"rollout.group_size": 0},
     "config.rollout.group_size: expected an integer >= 2 (GRPO compares the samples of a prompt's group), got 0"),
    ({"total_steps": 0}, "config.total_steps: expected an integer >= 1, got 0"),
    ({"total_steps": -3}, "config.total_steps: expected an integer >= 1, got -3"),
    ({"reward.aggregation": "median"},
     "config.reward.aggregation: expected one of ['geometric', 'mean', 'sum_mean'], got 'median'"),
    ({"reward.failure_policy": "skip"}, "config.reward.failure_policy: expected one of ['drop', 'fail'], got 'skip'"),
    ({"reward.top_logprobs": 0}, "config.reward.top_logprobs: expected an integer in 1..20, got 0"),
    ({"reward.weights": {"clip": 1.0}},
     "config.reward.weights: expected one of {components}, got 'clip'"),
    ({"reward.weights": {"dvreward": 0.0, "think_format": 0.0}},
     "config.reward.weights: every weight is 0 in {{'dvreward': 0.0, 'think_format': 0.0}}; expected at least one "
     "non-zero"),
    ({"reward.weights": {"dvreward": 1.0}, "reward.endpoints": ("ftp://verifier",)},
     "config.reward endpoints: expected one or more http(s):// base URLs, got ('ftp://verifier',)"),
    ({"reward.weights": {"dvreward": 1.0}, "reward.endpoints": (DEAD,)},
     f"config.reward.endpoints: {DEAD} does not answer (GET {DEAD}/models: [Errno 111] Connection refused); "
     "expected a running OpenAI-compatible server (SGLang/vLLM) at that base URL"),
    ({"task.kinds": ("t2v",)}, "config.task.kinds: expected one of ['rt2i', 'srr'], got 't2v'"),
    ({"task.kinds": ()}, "config.task.kinds: expected a non-empty tuple of tasks from ['rt2i', 'srr'], got ()"),
    ({"task.kinds": ("srr",), "task.srr.selection": "best"},
     "config.task.srr.selection: expected one of ['softmax', 'worst'], got 'best'"),
    ({"task.kinds": ("srr",), "task.srr.sde_window_range": (0, 40, 2)},
     "config.task.srr.sde_window_range: expected two integers (lo, hi) with 0 <= lo < hi, got (0, 40, 2)"),
    ({"rollout.image.sde_window_range": (0, 5, 7)},
     "config.rollout.image.sde_window_range: expected two integers (lo, hi) with 0 <= lo < hi, got (0, 5, 7)"),
    ({"rollout.image.sde_window": 12},
     "config.rollout.image.sde_window: 12 SDE steps do not fit in the 11 steps of "
     "rollout.image.num_timesteps=12; expected <= 11"),
    ({"rollout.image.sde_window_range": (6, 7)},
     "config.rollout.image.sde_window_range: (6, 7) cannot hold a window of 2 steps (of 11); expected hi - lo >= 2 "
     "with hi <= 11"),
    ({"rollout.image.num_timesteps": 1}, "config.rollout.image.num_timesteps: expected an integer >= 2, got 1"),
    ({"rollout.text.top_p": 0.0}, "config.rollout.text.top_p: expected a number in (0, 1], got 0.0"),
    ({"rollout.prompts_per_round": 0}, "config.rollout.prompts_per_round: expected an integer >= 1, got 0"),
    ({"advantage.name": "ppo"}, "config.advantage.name: expected one of ['drgrpo', 'grpo', 'rloo'], got 'ppo'"),
    ({"loss.image_loss": "mse"},
     "config.loss.image_loss: expected one of ['flow_grpo', 'gspo', 'image_kl', 'text_k3_kl'], got 'mse'"),
    ({"optim.schedule": "linear"}, "config.optim.schedule: expected one of ('constant', 'cosine'), got 'linear'"),
    ({"train.params": "partial"}, "config.train.params: expected one of ['full', 'lora'], got 'partial'"),
    ({"train.lora_rank": 0}, "config.train.lora_rank: expected an integer >= 1, got 0"),
    ({"eval.num_timesteps": 1}, "config.eval.num_timesteps: expected 0 (the rollout's) or >= 2, got 1"),
    ({"checkpoint.every": -1}, "config.checkpoint.every: expected an integer >= 0, got -1"),
    ({"model.release": "{d}/nope"},
     "config.model.release: {d}/nope: no such folder; expected a BAGEL release folder"),
    ({"model.release": "{d}/novocab"},
     f"config.model.release: release folder {{d}}/novocab lacks vocab.json; {RELEASE_NEEDS}"),
    ({"data.train_prompts": ""},
     "config.data.train_prompts: expected a JSONL prompt file (or a plug-in's data.prompt_source), got ''"),
    ({"data.prompt_source": "web"},
     "config.data.prompt_source: expected one of ['files', 'toy'], got 'web'"),
    ({"data.train_prompts": "{d}/missing.jsonl"}, "config.data.train_prompts: {d}/missing.jsonl: no such file"),
    ({"data.train_prompts": "{d}/empty.jsonl"},
     "config.data.train_prompts: {d}/empty.jsonl: no prompt records (the file is empty); expected JSONL question "
     "sets"),
    ({"data.train_prompts": "{d}/badjson.jsonl"},
     "config.data.train_prompts: {d}/badjson.jsonl:2: not valid JSON (Expecting property name enclosed in double "
     "quotes at column 17)"),
    ({"data.train_prompts": "{d}/noquestions.jsonl"},
     "config.data.train_prompts: {d}/noquestions.jsonl:2: prompt 'prompt 1' has an empty question set; expected at "
     "least one semantic or quality question"),
    ({"data.train_prompts": "{d}/two.jsonl"},
     "config.data.train_prompts: {d}/two.jsonl: 2 prompts cannot fill a round of "
     "config.rollout.prompts_per_round=4"),
    ({"data.eval_prompts": "{d}/empty.jsonl"},
     "config.data.eval_prompts: {d}/empty.jsonl: no prompt records (the file is empty); expected JSONL question "
     "sets"),
    ({"workdir": "{d}/afile/work"},
     "config.workdir: {d}/afile/work: cannot write there (Not a directory); expected a writable folder"),
]


@pytest.mark.parametrize("overrides, message", CONFIG_CASES, ids=[next(iter(o)) for o, _ in CONFIG_CASES])
def test_config_catalogue(files, overrides, message):
    c = base_config(files)
    for key, value in overrides.items():
        _set(c, key, value.format(d=files) if isinstance(value, str) else value)
    with pytest.raises(UsageError) as err:
        check_train_config(c)
    # The component list is the registry's (other test modules may register components in the same process).
    assert str(err.value) == message.format(d=files, components=sorted(COMPONENTS))


def test_the_base_config_passes(files):
    check_train_config(base_config(files))


def _run(module, *args, cwd=ROOT):
    env = dict(os.environ, PYTHONPATH=ROOT, JAX_PLATFORMS="cpu")
    return subprocess.run([sys.executable, "-m", module, *args], capture_output=True, text=True, env=env, cwd=cwd,
                          timeout=120)


@pytest.fixture(scope="module")
def verifier():
    with OpenAIServer(answer=lambda q, im: 0.5, model="test-model") as server:
        yield server


def entry_cases(d, verifier):
    g, novocab = str(GOLDENS), str(d / "novocab")
    train = ("alphagrpo_jax.train", "--config", "configs/toy_rt2i.py")
    return [
        (train + ("--config.rollout.group_size=1",),
         "config.rollout.group_size: expected an integer >= 2 (GRPO compares the samples of a prompt's group), "
         "got 1"),
        (train + ("--config.reward.weights.clip=1.0",),
         "--config.reward.weights.clip=1.0: config.reward.weights has no key 'clip'; its keys: ['dvreward', "
         "'think_format', 'toy_dvreward'] (overrides may only set keys the config file defines)"),
        (train + ("--config.reward.weights.dvreward=1.0", f"--config.reward.endpoints=('{DEAD}',)"),
         f"config.reward.endpoints: {DEAD} does not answer (GET {DEAD}/models: [Errno 111] Connection refused); "
         "expected a running OpenAI-compatible server (SGLang/vLLM) at that base URL"),
        (train + (f"--config.workdir={d}/w", "--config.total_steps=0"), "config.total_steps: expected an integer >= 1, got 0"),
        (("alphagrpo_jax.train", "--config", "configs/missing.py"),
         "--config=configs/missing.py: [Errno 2] No such file or directory: 'configs/missing.py'"),
        (("alphagrpo_jax.sft", "--config", "configs/toy_sft.py", "--config.total_steps=0"),
         "config.total_steps: expected an integer >= 1, got 0"),
        (("alphagrpo_jax.export", "--config", "configs/toy_rt2i.py"),
         "--out is required: the folder to write the release into"),
        (("alphagrpo_jax.component_eval", "--config", "configs/toy_rt2i.py", "--config.task.kinds=('t2v',)"),
         "config.task.kinds: expected one of ['rt2i', 'srr'], got 't2v'"),
        (("alphagrpo_jax.tools.compile_check", "--config", "configs/toy_rt2i.py", "--config.mesh.fsdp=x"),
         "flag --config.mesh.fsdp=x: invalid literal for int() with base 10: 'x'"),
        (("alphagrpo_jax.generate", "--checkpoint", g, "--prompt", "x", "--out", "no/such/dir/x.png"),
         "--out no/such/dir/x.png: folder no/such/dir does not exist; create it first"),
        (("alphagrpo_jax.generate", "--checkpoint", g, "--prompt", "x", "--out", f"{d}/x.png", "--num-steps", "1"),
         "--num-steps: expected >= 2 timestep grid points (steps = this - 1), got 1"),
        (("alphagrpo_jax.generate", "--checkpoint", novocab, "--prompt", "x", "--out", f"{d}/x.png"),
         f"--checkpoint: release folder {novocab} lacks vocab.json; {RELEASE_NEEDS}"),
        (("alphagrpo_jax.generate", "--checkpoint", g, "--prompts-file", f"{d}/empty.jsonl", "--out", f"{d}/o"),
         f"--prompts-file {d}/empty.jsonl: no prompts (the file is empty); expected one prompt per line"),
        (("alphagrpo_jax.generate", "--checkpoint", g, "--prompt", "x", "--out", f"{d}/x.png", "--transform", "toy"),
         "--transform: expected one of ['bagel'], got 'toy' (a plug-in's name needs its module: --plugin MODULE, "
         "e.g. --plugin alphagrpo_jax.toy.plugin)"),
        (("alphagrpo_jax.generate", "--plugin", "no_such.plugin", "--checkpoint", g, "--prompt", "x", "--out",
          f"{d}/x.png"),
         "--plugin: no module 'no_such.plugin'; expected importable module names such as 'alphagrpo_jax.toy.plugin'"),
        (train + ("--config.plugins=('no_such.plugin',)",),
         "config.plugins: no module 'no_such.plugin'; expected importable module names such as "
         "'alphagrpo_jax.toy.plugin'"),
        (("alphagrpo_jax.generate", "--checkpoint", g, "--prompt", "x", "--out", f"{d}/o", "--refine", "2"),
         "--refine needs the prompt's decomposed questions: --records FILE or --questions NAME"),
        (("alphagrpo_jax.reward.decompose", "--prompts", f"{d}/empty.jsonl", "--out", f"{d}/q.jsonl",
          "--endpoint", verifier.url, "--model", "test-model"),
         f"--prompts {d}/empty.jsonl: no prompts (the file is empty); expected one prompt per non-blank line"),
        (("alphagrpo_jax.reward.decompose", "--prompts", f"{d}/two.jsonl", "--out", f"{d}/q.jsonl",
          "--endpoint", DEAD, "--model", "test-model"),
         f"--endpoint: {DEAD} does not answer (GET {DEAD}/models: [Errno 111] Connection refused); expected a "
         "running OpenAI-compatible server (SGLang/vLLM) at that base URL"),
        (("alphagrpo_jax.report", "--workdir", f"{d}/nometrics"),
         f"--workdir {d}/nometrics: no metrics.jsonl; expected a training workdir"),
    ]


def test_entry_points_exit_2_with_one_line(files, verifier):
    """Each program as a user runs it: exit code 2, exactly `error: <message>` on stderr, no traceback."""
    failures = []
    for args, message in entry_cases(files, verifier):
        r = _run(*args)
        lines = [x for x in r.stderr.splitlines() if x.strip()]
        if r.returncode != 2 or lines != [f"error: {message}"] or "Traceback" in r.stderr:
            failures.append(f"{' '.join(args)}\n  rc={r.returncode}\n  stderr={r.stderr[-600:]!r}")
    assert not failures, "\n".join(failures)


@pytest.mark.parametrize("name, variant", [("toy_rt2i", None), ("toy_rt2i", "image_only"), ("toy_srr", None),
                                           ("toy_srr", "mixed")])
def test_shipped_toy_configs_pass(tmp_path, monkeypatch, name, variant):
    monkeypatch.chdir(ROOT)  # their release and prompts are relative to the repository root
    c = cli.load_config(f"configs/{name}.py" + (f":{variant}" if variant else ""))
    c.workdir = str(tmp_path / "work")
    check_train_config(c)
