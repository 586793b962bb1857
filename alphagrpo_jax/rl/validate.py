"""The whole GRPO training config checked before any model loads (seconds, not minutes after compile).

    check_train_config(config)              # UsageError: one line naming the first bad key/file
    check_train_config(config, probe=False) # without the reward endpoints' health requests

The config's plug-ins (`config.plugins`) are imported first: they register names the checks accept. Checks every
key the trainer reads (type, range, choices from the registries: advantages, losses, reward components,
aggregations, tasks, schedules, prompt sources, transforms), the SDE windows against their timestep grids, the
release folder, the prompt files (they parse, every record has questions, enough prompts for a round), that the
workdir is writable and (probe=True) one health request per reward endpoint of the components that use them.
"""
from __future__ import annotations

from alphagrpo_jax import checks, optim, plugins
from alphagrpo_jax.data.sources import PROMPT_SOURCES
from alphagrpo_jax.errors import UsageError
from alphagrpo_jax.models.bagel.config import ConfigError, from_release_dir
from alphagrpo_jax.models.bagel.image_transform import TRANSFORMS
from alphagrpo_jax.reward import components, dvreward
from alphagrpo_jax.reward.client import settings_from_config
from alphagrpo_jax.reward.health import check_endpoints
from alphagrpo_jax.reward.images import IMAGE_FORMATS
from alphagrpo_jax.reward.records import RecordError, iter_numbered_records, read_records
from alphagrpo_jax.rl import accumulation, advantages, losses
from alphagrpo_jax.rl.config import optim_config
from alphagrpo_jax.rl.lora import LORA_INITS
from alphagrpo_jax.rl.tasks import TASKS
from alphagrpo_jax.rl.tasks.srr import SELECTIONS

ADVANTAGE_STDS = ("global", "group", "none")  # rl/advantages._scale
ENDPOINT_COMPONENTS = ("dvreward",)  # components that call config.reward.endpoints


def _get(config, key: str):
    node = config
    for part in key.split("."):
        try:
            node = node[part]
        except (KeyError, TypeError, AttributeError):
            raise UsageError(f"config.{key}: missing; the trainer needs it (see configs/grpo_base.py)") from None
    return node


def _window(config, prefix: str, timesteps_key: str) -> None:
    """sde_window fits in sde_window_range and the timestep grid (RolloutConfig.draw_window_start)."""
    num_timesteps = checks.int_at_least(_get(config, timesteps_key), 2, f"config.{timesteps_key}")
    window = checks.int_at_least(_get(config, f"{prefix}.sde_window"), 0, f"config.{prefix}.sde_window")
    if window > num_timesteps - 1:
        raise UsageError(f"config.{prefix}.sde_window: {window} SDE steps do not fit in the {num_timesteps - 1} "
                         f"steps of {timesteps_key}={num_timesteps}; expected <= {num_timesteps - 1}")
    lo, hi = checks.int_pair(_get(config, f"{prefix}.sde_window_range"), f"config.{prefix}.sde_window_range")
    if window and min(hi, num_timesteps - 1) - window < lo:
        raise UsageError(f"config.{prefix}.sde_window_range: {(lo, hi)} cannot hold a window of {window} steps "
                         f"(of {num_timesteps - 1}); expected hi - lo >= {window} with hi <= {num_timesteps - 1}")


def _rollout(config) -> None:
    r = "rollout"
    checks.int_at_least(_get(config, f"{r}.prompts_per_round"), 1, f"config.{r}.prompts_per_round")
    group = _get(config, f"{r}.group_size")
    if not isinstance(group, int) or isinstance(group, bool) or group < 2:
        raise UsageError(f"config.{r}.group_size: expected an integer >= 2 (GRPO compares the samples of a "
                         f"prompt's group), got {group!r}")
    for k in ("rounds_per_step", "height", "width", "cache_size", "text.max_new_tokens"):
        checks.int_at_least(_get(config, f"{r}.{k}"), 1, f"config.{r}.{k}")
    checks.number_in(_get(config, f"{r}.text.temperature"), 0.0, float("inf"), f"config.{r}.text.temperature",
                     low_open=True)
    checks.number_in(_get(config, f"{r}.text.top_p"), 0.0, 1.0, f"config.{r}.text.top_p", low_open=True)
    checks.number_in(_get(config, f"{r}.image.eta"), 0.0, float("inf"), f"config.{r}.image.eta")
    _window(config, f"{r}.image", f"{r}.image.num_timesteps")


def _tasks(config) -> None:
    names = tuple(TASKS)
    kinds = _get(config, "task.kinds")
    if isinstance(kinds, str) or not isinstance(kinds, (tuple, list)) or not kinds:
        raise UsageError(f"config.task.kinds: expected a non-empty tuple of tasks from {list(names)}, "
                         f"got {kinds!r}")
    for kind in kinds:
        checks.one_of(kind, names, "config.task.kinds")
    if "srr" in kinds:
        s = "task.srr"
        checks.one_of(_get(config, f"{s}.selection"), SELECTIONS, f"config.{s}.selection")
        checks.one_of(_get(config, f"{s}.transforms"), TRANSFORMS, f"config.{s}.transforms")
        checks.int_at_least(_get(config, f"{s}.stage1_images"), 1, f"config.{s}.stage1_images")
        checks.int_at_least(_get(config, f"{s}.stage1_timesteps"), 2, f"config.{s}.stage1_timesteps")
        _window(config, s, f"{s}.num_timesteps")


def _learning(config) -> None:
    checks.one_of(_get(config, "advantage.name"), advantages.ADVANTAGES, "config.advantage.name")
    checks.one_of(_get(config, "advantage.std"), ADVANTAGE_STDS, "config.advantage.std")
    checks.one_of(_get(config, "loss.image_loss"), losses.LOSSES, "config.loss.image_loss")
    checks.one_of(_get(config, "loss.text_loss"), losses.LOSSES, "config.loss.text_loss")
    checks.one_of(_get(config, "train.params"), ("lora", "full"), "config.train.params")
    if config.train.params == "lora":
        checks.int_at_least(_get(config, "train.lora_rank"), 1, "config.train.lora_rank")
        checks.one_of(_get(config, "train.lora_init"), LORA_INITS, "config.train.lora_init")
    checks.one_of(_get(config, "loss.grad_normalization"), accumulation.NORMALIZATIONS,
                  "config.loss.grad_normalization")
    checks.one_of(_get(config, "train.skipped_rounds"), accumulation.SKIPPED, "config.train.skipped_rounds")
    checks.int_at_least(_get(config, "train.max_extra_rounds"), 0, "config.train.max_extra_rounds")
    checks.int_at_least(_get(config, "train.max_nonfinite_steps"), 1, "config.train.max_nonfinite_steps")
    checks.int_at_least(_get(config, "advantage.population"), 0, "config.advantage.population")
    for step in range(1, len(config.task.kinds) + 1):  # every step's mix of tasks (they cycle)
        try:
            accumulation.from_config(config, accumulation.step_kinds(config, step), {})
        except ValueError as e:
            raise UsageError(f"config.{e}") from None
    try:
        optim._get(optim_config(config))
    except optim.OptimConfigError as e:
        raise UsageError(f"config.{e}") from None


def _endpoint_users(config) -> list[str]:
    weights = dict(config.reward.weights)
    return [n for n in ENDPOINT_COMPONENTS if float(weights.get(n, 0.0)) != 0.0]


def _reward(config) -> None:
    rc = _get(config, "reward")
    weights = dict(_get(config, "reward.weights"))
    for name, w in weights.items():
        checks.one_of(name, components.COMPONENTS, "config.reward.weights")
        checks.number_in(w, float("-inf"), float("inf"), f"config.reward.weights.{name}")
    if not any(float(w) != 0.0 for w in weights.values()):
        raise UsageError(f"config.reward.weights: every weight is 0 in {weights}; expected at least one non-zero")
    checks.one_of(_get(config, "reward.aggregation"), dvreward.AGGREGATIONS, "config.reward.aggregation")
    checks.one_of(_get(config, "reward.failure_policy"), dvreward.FAILURE_POLICIES, "config.reward.failure_policy")
    checks.one_of(_get(config, "reward.image_format"), IMAGE_FORMATS, "config.reward.image_format")
    top = _get(config, "reward.top_logprobs")
    if not isinstance(top, int) or not 1 <= top <= 20:
        raise UsageError(f"config.reward.top_logprobs: expected an integer in 1..20, got {top!r}")
    if _endpoint_users(config):
        try:
            settings_from_config(rc)
        except ValueError as e:
            raise UsageError(f"config.{e}") from None


def _prompt_file(path: str, key: str, min_records: int) -> None:
    checks.existing_file(path, key)
    try:
        records = read_records(path)
    except RecordError as e:
        raise UsageError(f"{key}: {e}") from None
    if not records:
        raise UsageError(f"{key}: {path}: no prompt records (the file is empty); expected JSONL question sets")
    if not all(rec.questions for rec in records):
        line, rec = next((n, r) for n, r in iter_numbered_records(path) if not r.questions)
        raise UsageError(f"{key}: {path}:{line}: prompt {rec.prompt[:60]!r} has an empty question set; "
                         f"expected at least one semantic or quality question")
    if len(records) < min_records:
        raise UsageError(f"{key}: {path}: {len(records)} prompts cannot fill a round of "
                         f"config.rollout.prompts_per_round={min_records}")


def _data(config) -> None:
    d = _get(config, "data")
    checks.one_of(_get(config, "data.prompt_source"), PROMPT_SOURCES, "config.data.prompt_source")
    if d.prompt_source != "files":
        return  # a plug-in's source writes its prompt files when the trainer starts
    if not d.train_prompts:
        raise UsageError("config.data.train_prompts: expected a JSONL prompt file (or a plug-in's "
                         "data.prompt_source), got ''")
    _prompt_file(d.train_prompts, "config.data.train_prompts", int(config.rollout.prompts_per_round))
    if d.eval_prompts:
        _prompt_file(d.eval_prompts, "config.data.eval_prompts", 1)


def _schedule(config) -> None:
    checks.int_at_least(_get(config, "total_steps"), 1, "config.total_steps")
    checks.int_at_least(_get(config, "seed"), 0, "config.seed")
    checks.int_at_least(_get(config, "checkpoint.every"), 0, "config.checkpoint.every")  # 0: only at the end
    checks.int_at_least(_get(config, "checkpoint.keep"), 1, "config.checkpoint.keep")
    every = checks.int_at_least(_get(config, "eval.every"), 0, "config.eval.every")
    if every:
        checks.int_at_least(_get(config, "eval.num_prompts"), 1, "config.eval.num_prompts")
        checks.int_at_least(_get(config, "eval.batch_size"), 1, "config.eval.batch_size")
        n = checks.int_at_least(_get(config, "eval.num_timesteps"), 0, "config.eval.num_timesteps")
        if n == 1:
            raise UsageError("config.eval.num_timesteps: expected 0 (the rollout's) or >= 2, got 1")


def _image_sizes(config) -> None:
    """Every image the run draws or reads back fits the release's latent grid (max_latent_size x the latent
    stride): the rollout's height x width, and the SRR first draw after its VAE transform."""
    try:
        cfg = from_release_dir(config.model.release)
    except (ConfigError, ValueError, OSError) as e:
        raise UsageError(f"config.model.release: {e}") from None
    stride, most = cfg.latent_downsample, cfg.max_latent_size * cfg.latent_downsample
    h, w = int(config.rollout.height), int(config.rollout.width)
    for key, v in (("rollout.height", h), ("rollout.width", w)):
        if v % stride or v > most:
            raise UsageError(f"config.{key}: {v} px; expected a multiple of {stride} up to {most} px "
                             f"(the release's max_latent_size {cfg.max_latent_size} x latent stride {stride})")
    if "srr" in tuple(config.task.kinds):
        tw, th = TRANSFORMS[config.task.srr.transforms][0].target_size(w, h)
        if max(tw, th) > most:
            raise UsageError(f"config.task.srr.transforms: {config.task.srr.transforms!r} resizes the {w}x{h} first "
                             f"draw to {tw}x{th} px for the VAE, beyond the release's {most} px; expected a "
                             f"transform that keeps it within (e.g. 'toy' for small releases)")


def check_train_config(config, probe: bool = True) -> None:
    """Raises UsageError (one line) for the first problem found; see the module docstring."""
    plugins.load(config)  # they register names the checks below accept (components, prompt sources, transforms)
    _schedule(config)
    _rollout(config)
    _tasks(config)
    _learning(config)
    _reward(config)
    checks.release_folder(_get(config, "model.release"), "config.model.release")
    _image_sizes(config)
    _data(config)
    checks.creatable_folder(_get(config, "workdir"), "config.workdir")  # train creates it after the checks
    if probe and _endpoint_users(config):  # last: the only check that waits on the network
        check_endpoints(config.reward)
