"""The reward function the trainer calls: weighted reward components, scored on a background event loop.

    fn = build_reward_fn(config.reward)          # config.reward = reward_config() (+ overrides)
    fut = fn.submit(images, prompts, records)    # returns at once; scoring runs while the trainer works on
    ...                                          # the next batch
    result = fut.result()                        # RewardResult: rewards [N] float32, info, failures, counts
    result = fn(images, prompts, records)        # the same, blocking
    fn.close()

Inputs: images = uint8 [N, H, W, C] array or a list of [H, W, C] arrays / PIL images; prompts = N strings;
records = N `QuestionSet`s (or reference-format dicts); texts = N generated strings (needed by think_format).
Arrays are copied at `submit`, so the caller may reuse its buffers right away.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import threading
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from ml_collections import ConfigDict
from PIL import Image

from alphagrpo_jax.reward.client import ClientSettings
from alphagrpo_jax.reward.components import ComponentOutput, RewardBatch, RewardComponent, make_component
from alphagrpo_jax.reward.dvreward import VerifierSettings
from alphagrpo_jax.reward.records import QuestionSet, record_from_json


def reward_config() -> ConfigDict:
    """Defaults for the reward section of a training config. Times in seconds. The client's and the verifier's
    settings take their defaults from `ClientSettings` (reward/client.py) and `VerifierSettings` (dvreward.py)."""
    client, verifier = ClientSettings, VerifierSettings
    c = ConfigDict()
    c.endpoints = ("http://127.0.0.1:30000/v1",)  # one or more OpenAI-compatible base URLs (SGLang/vLLM)
    c.model = "Qwen/Qwen3-VL-30B-A3B-Instruct"  # the served model name
    c.api_key_env = client.api_key_env  # env var with the key; unset -> no Authorization header
    c.concurrency_per_endpoint = client.concurrency_per_endpoint  # requests in flight per endpoint, this process
    c.timeout_s = client.timeout_s
    c.connect_timeout_s = client.connect_timeout_s
    c.max_retries = client.max_retries
    c.backoff_s = client.backoff_s
    c.backoff_max_s = client.backoff_max_s
    c.jitter = client.jitter
    c.endpoint_rest_s = client.endpoint_rest_s  # skip an endpoint that refused a connection this long
    c.failure_policy = verifier.failure_policy  # "fail": raise; "drop": leave failed questions out (counted)
    c.aggregation = verifier.aggregation  # "geometric" sqrt(S*Q) | "mean" (S+Q)/2 | "sum_mean" over all questions
    c.image_format = verifier.image_format  # "jpeg" | "png"
    c.jpeg_quality = verifier.jpeg_quality
    c.max_tokens = verifier.max_tokens
    c.top_logprobs = verifier.top_logprobs
    c.verifier_system_prompt = ""  # the verifier's system prompt: text or file:PATH; "" = ours (docs/prompts.md)
    # An answer without usable logprobs fails like any bad answer (retried, then per failure_policy). True: it
    # is scored 0/1 from its text instead, counted as dvreward/from_text in the step metrics, with a warning.
    c.allow_text_scores = verifier.allow_text_scores
    c.weights = ConfigDict({"dvreward": 1.0, "think_format": 0.0})  # weight 0 = component not built
    return c


@dataclasses.dataclass(frozen=True)
class RewardResult:
    rewards: np.ndarray  # [N] float32: sum over components of weight * value
    components: dict[str, np.ndarray]  # name -> [N] float32 unweighted values
    info: list[dict[str, float]]  # per sample: "<component>/<key>" -> value (e.g. "dvreward/tag/Count")
    failures: list[dict[str, Any]]  # dropped questions: {"component", "sample", "question", "error"}
    counts: dict[str, int]  # "<component>/<count>" -> n
    details: dict[str, list] = dataclasses.field(default_factory=dict)  # "dvreward" -> QuestionScores per sample

    def metrics(self) -> dict[str, float]:
        """Batch means for logging: reward/mean, reward/<component>, reward/<component>/<key> (over the samples
        that have the key; per-tag means only exist for samples whose questions carry that tag)."""
        out = {"reward/mean": float(self.rewards.mean()) if self.rewards.size else float("nan")}
        for name, v in self.components.items():
            out[f"reward/{name}"] = float(v.mean()) if v.size else float("nan")
        sums: dict[str, list[float]] = {}
        for row in self.info:
            for k, v in row.items():
                sums.setdefault(k, []).append(v)
        out.update({f"reward/{k}": float(np.mean(v)) for k, v in sorted(sums.items())})
        out.update({f"reward/count/{k}": float(v) for k, v in self.counts.items()})
        return out


def _copy_images(images, n: int) -> list:
    if not isinstance(images, (list, tuple)) and hasattr(images, "__array__"):  # numpy, or a jax array on device
        images = np.array(images, copy=True)
        if images.ndim != 4:
            raise ValueError(f"reward images: expected a uint8 [N, H, W, C] array, got shape {images.shape}")
        images = list(images)
    elif not isinstance(images, Sequence):
        raise ValueError(f"reward images: expected an array or a list, got {type(images).__name__}")
    out = []
    for i, img in enumerate(images):
        if isinstance(img, Image.Image):
            out.append(img.copy())
            continue
        arr = np.array(img, copy=True)
        if arr.dtype != np.uint8 or arr.ndim not in (2, 3):
            raise ValueError(f"reward images[{i}]: expected uint8 [H, W, C], got {arr.dtype} {arr.shape}")
        out.append(arr)
    if len(out) != n:
        raise ValueError(f"reward: {len(out)} images for {n} prompts")
    return out


def _records(records, n: int) -> list[QuestionSet]:
    out = [r if isinstance(r, QuestionSet) else record_from_json(r, f"reward records[{i}]")
           for i, r in enumerate(records)]
    if len(out) != n:
        raise ValueError(f"reward: {len(out)} question sets for {n} prompts")
    return out


class RewardFn:
    """Weighted sum of components; `ascore` runs in the caller's event loop."""

    def __init__(self, components: Mapping[str, RewardComponent], weights: Mapping[str, float]):
        if set(components) != set(weights):
            raise ValueError(f"reward: components {sorted(components)} vs weights {sorted(weights)}")
        self.components = dict(components)
        self.weights = {k: float(v) for k, v in weights.items()}

    def make_batch(self, images, prompts, records, texts=None) -> RewardBatch:
        """Validates and copies the inputs (call in the caller's thread, before returning to it)."""
        prompts = [str(p) for p in prompts]
        n = len(prompts)
        needs = {f for c in self.components.values() for f in c.needs}
        given = {"images": images, "records": records, "texts": texts}
        missing = [f for f, v in given.items() if f in needs and v is None]
        if missing:
            users = sorted(k for k, c in self.components.items() if set(c.needs) & set(missing))
            raise ValueError(f"reward: components {users} need {missing}, which were not given")
        if texts is not None:
            texts = list(texts)
            if len(texts) != n:
                raise ValueError(f"reward: {len(texts)} texts for {n} prompts")
        return RewardBatch(prompts=prompts,
                           images=_copy_images(images, n) if "images" in needs else None,
                           records=_records(records, n) if "records" in needs else None, texts=texts)

    async def ascore(self, batch: RewardBatch) -> RewardResult:
        names = list(self.components)
        outs: list[ComponentOutput] = await asyncio.gather(*(self.components[k].score(batch) for k in names))
        n = len(batch)
        rewards = np.zeros((n,), np.float32)
        info: list[dict[str, float]] = [{} for _ in range(n)]
        failures, counts, values, details = [], {}, {}, {}
        for name, out in zip(names, outs):
            if out.values.shape != (n,):
                raise RuntimeError(f"reward component {name!r} returned shape {out.values.shape}, expected ({n},)")
            values[name] = out.values
            rewards += np.float32(self.weights[name]) * out.values
            for row, extra in zip(info, out.info):
                row.update({f"{name}/{k}": v for k, v in extra.items()})
            failures += [{"component": name, **f} for f in out.failures]
            counts.update({f"{name}/{k}": v for k, v in out.counts.items()})
            if out.details is not None:
                details[name] = out.details
        return RewardResult(rewards, values, info, failures, counts, details)

    async def aclose(self) -> None:
        for c in self.components.values():
            await c.aclose()


class RewardService:
    """A RewardFn on its own event loop thread, so callers stay synchronous and overlap scoring with work."""

    def __init__(self, reward_fn: RewardFn):
        self.reward_fn = reward_fn
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="reward-loop", daemon=True)
        self._thread.start()
        self._closed = False

    def submit(self, images, prompts, records=None, texts=None) -> concurrent.futures.Future:
        """Starts scoring and returns a Future[RewardResult]; input errors raise here, at once."""
        if self._closed:
            raise RuntimeError("reward service is closed")
        batch = self.reward_fn.make_batch(images, prompts, records, texts)
        return asyncio.run_coroutine_threadsafe(self.reward_fn.ascore(batch), self._loop)

    def __call__(self, images, prompts, records=None, texts=None) -> RewardResult:
        return self.submit(images, prompts, records, texts).result()

    def stats(self) -> dict[str, int]:
        """Cumulative HTTP counters of every client-backed component (attempts, ok, retries, timeout, ...)."""
        out = {}
        for name, c in self.reward_fn.components.items():
            client = getattr(c, "client", None)
            if client is not None:
                out.update({f"{name}/{k}": v for k, v in client.stats.items()})
        return out

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        asyncio.run_coroutine_threadsafe(self.reward_fn.aclose(), self._loop).result()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()

    def __enter__(self) -> RewardService:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def build_reward_fn(config: ConfigDict) -> RewardService:
    """A RewardService with every component whose weight in `config.weights` is non-zero."""
    weights = {k: float(v) for k, v in dict(config.weights).items() if float(v) != 0.0}
    if not weights:
        raise ValueError(f"reward weights: every weight is 0 in {dict(config.weights)}")
    components = {k: make_component(k, config) for k in weights}
    return RewardService(RewardFn(components, weights))
