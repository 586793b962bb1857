"""Shared command-line plumbing for every entry point.

    python -m alphagrpo_jax.<entry> --config configs/x.py[:arg] --config.a.b=value

The config file's `get_config(arg)` returns an `ml_collections.ConfigDict`; it is locked (a typo in an
override is an error, not a new key), its plug-ins (`config.plugins`, plugins.py) are imported and it is printed
at start. `load_config(spec, overrides)` is the same loader for code (tests, tools, benchmarks):

    config = cli.load_config("configs/toy_rt2i.py:image_only", ["--config.total_steps=2"])
"""
from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Sequence

from absl import app, flags
from ml_collections import config_flags

from alphagrpo_jax import compile_cache, config_paths, errors, plugins, run_config
from alphagrpo_jax.parallel import distributed

FLAGS = flags.FLAGS
_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Python config file with get_config(); `path.py:arg` passes arg.", lock_config=True)
_COMPILATION_CACHE = flags.DEFINE_string(
    "compilation_cache", None, "persistent JAX compilation cache folder, or 'off' (default: "
    f"${compile_cache.ENV}, else ~/.cache/alphagrpo_jax/jax)")


def load_config(spec: str, overrides: Sequence[str] = ()):
    """The locked ConfigDict of `--config spec` (`path.py[:arg]`) with `overrides` (`--config.a.b=value` strings,
    parsed exactly as on the command line). A bad file, argument or override raises UsageError (one line)."""
    bad = [o for o in overrides if not o.startswith("--config.")]
    if bad:
        raise errors.UsageError(f"config override {bad[0]!r}: expected --config.a.b=value")
    argv = ["load_config", f"--config={spec}", *overrides]
    values = flags.FlagValues()
    holder = config_flags.DEFINE_config_file("config", None, "config file", flag_values=values, lock_config=True,
                                             sys_argv=argv)
    try:
        values(argv)
        holder.value.keys()  # ml_collections defers a file that failed to load until the config is used
    except flags.Error as e:
        raise errors.UsageError(_flag_error(str(e))) from None
    except (AttributeError, KeyError) as e:
        raise errors.UsageError(_unknown_key(argv, e)) from None
    except OSError as e:
        last = [x.strip() for x in str(e).splitlines() if x.strip()][-1]
        raise errors.UsageError(f"--config={spec}: {last}") from None
    _resolve_paths(values["config"])
    return holder.value


def _resolve_paths(flag) -> None:
    """The config file's relative paths made absolute under its root; command-line overrides left as given
    (relative to the current folder). See config_paths.py."""
    with flag.value.unlocked():
        config_paths.resolve(flag.value, flag.config_filename.split(":", 1)[0],
                             config_flags.get_override_values(flag).keys())


def setup_logging(level: int = logging.INFO) -> None:
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        stream=sys.stderr, force=True)
    # absl routes its own logs through Python logging once this handler exists.
    logging.getLogger("absl").setLevel(logging.WARNING)
    logging.getLogger("jax").setLevel(logging.WARNING)  # backend probing ("Unable to initialize backend ...")
    logging.getLogger("fsspec").setLevel(logging.WARNING)  # gcsfs: a read-ahead line per file opened on gs://


def print_config(config) -> None:
    """Prints the config as the readable YAML that train records in `<workdir>/config.yaml` (process 0)."""
    import jax  # deferred: keeps `import alphagrpo_jax.cli` light

    if jax.process_index() == 0:
        print("=" * 30 + " config " + "=" * 30, flush=True)
        print(run_config.to_yaml(config).rstrip("\n"), flush=True)
        print("=" * 68, flush=True)


def _parse_flags(argv: list[str]) -> list[str]:
    """absl's flag parsing with a bad flag or config override reported as a usage error (one line, exit 2)."""
    try:
        return FLAGS(argv)
    except flags.Error as e:
        sys.exit(errors.report(errors.UsageError(_flag_error(str(e)))))
    except (AttributeError, KeyError) as e:  # ml_collections: an override of a key the config does not have
        sys.exit(errors.report(errors.UsageError(_unknown_key(argv, e))))


def _unknown_key(argv: list[str], e: BaseException) -> str:
    """`--config.a.b.c=v: config.a.b has no key 'c'; its keys: [...]` for the first override naming a missing key."""
    config = _load_config(argv)
    for arg in argv[1:]:
        if not arg.startswith("--config.") or config is None:
            continue
        path = arg[len("--config."):].split("=", 1)[0].split(".")
        node = config
        for i, part in enumerate(path):
            try:
                keys = list(node.keys())
            except AttributeError:
                break
            if part not in keys:
                where = ".".join(["config", *path[:i]])
                return (f"{arg}: {where} has no key {part!r}; its keys: {sorted(keys)} (overrides may only set "
                        "keys the config file defines)")
            node = node[part]
    while e.args and isinstance(e.args[0], BaseException):
        e = e.args[0]
    return f"config override: no such key {e.args[0] if e.args else e}"


def _load_config(argv: list[str]):
    """The ConfigDict `--config path.py[:arg]` names (re-run here: absl drops it when an override fails)."""
    spec = None
    for i, a in enumerate(argv):
        if a == "--config" and i + 1 < len(argv):
            spec = argv[i + 1]
        elif a.startswith("--config="):
            spec = a.split("=", 1)[1]
    if not spec:
        return None
    try:
        return load_config(spec)
    except errors.UsageError:  # only used to word an error message better
        return None


def _flag_error(msg: str) -> str:
    """absl/ml_collections flag errors without the embedded traceback of a failing get_config()."""
    if "Traceback (most recent call last)" not in msg:
        return msg
    lines = [x.strip() for x in msg.splitlines() if x.strip()]
    return f"{lines[0].split('Traceback')[0].rstrip(': ;')}: {lines[-1]}"


def _show_in_help(*names: str) -> None:
    """Lists these cli-defined flags in the program's `--help` (absl shows only the main module's own flags)."""
    for name in names:
        FLAGS.register_key_flag_for_module(sys.argv[0], FLAGS[name])


def run(main: Callable) -> None:
    """Parses flags and calls `main(config)` (config already locked and printed). A `UsageError` from `main`
    (bad config, flag or input file) is printed as one line `error: ...` without a traceback, exit code 2."""

    def _main(argv):
        try:
            if len(argv) > 1:
                raise errors.UsageError(f"unexpected arguments: {argv[1:]}; expected only --flags")
            if _CONFIG.value is None:
                raise errors.UsageError("--config is required, e.g. --config configs/toy_rt2i.py")
            try:  # ml_collections defers a config file that failed to load until the config is used
                _CONFIG.value.keys()
            except OSError as e:
                last = [x.strip() for x in str(e).splitlines() if x.strip()][-1]
                raise errors.UsageError(f"{flags.FLAGS['config'].serialize()}: {last}") from None
            _resolve_paths(FLAGS["config"])
            setup_logging()
            compile_cache.setup(_COMPILATION_CACHE.value)
            distributed.setup()  # before print_config: it starts the backend, after which a pod cannot initialise
            plugins.load(_CONFIG.value)
            print_config(_CONFIG.value)
            main(_CONFIG.value)
        except errors.UsageError as e:
            sys.exit(errors.report(e))

    _show_in_help("config")
    app.run(_main, flags_parser=_parse_flags)


def run_on_workdir(main: Callable) -> None:
    """Like `run`, for programs that work on a training run's checkpoints (export, component_eval): `--workdir RUN`
    reads the run's recorded config (run_config.py), so its overrides need not be retyped; with `--config` as
    well, that config is used after checking it against the run's (a mismatch exits with code 2)."""
    workdir = flags.DEFINE_string("workdir", None, "a training run's workdir: its config.yaml is the config")

    def _main(argv):
        try:
            if len(argv) > 1:
                raise errors.UsageError(f"unexpected arguments: {argv[1:]}; expected only --flags")
            if _CONFIG.value is not None:
                _CONFIG.value.keys()  # a config file that failed to load raises here (ml_collections defers it)
                _resolve_paths(FLAGS["config"])
            setup_logging()
            compile_cache.setup(_COMPILATION_CACHE.value)
            distributed.setup()
            config = run_config.resolve(workdir.value, _CONFIG.value)
            plugins.load(config)
            print_config(config)
            main(config)
        except errors.UsageError as e:
            sys.exit(errors.report(e))

    _show_in_help("config", "workdir")
    app.run(_main, flags_parser=_parse_flags)
