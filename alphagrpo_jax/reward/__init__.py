"""DVReward and friends: pure I/O (asyncio/aiohttp, numpy, PIL); nothing here imports jax or model code.

    records.py            question sets (JSONL, reference-compatible) and their validation
    decompose.py          offline prompt -> question set pipeline (CLI, resumable)
    decompose_prompts.py  its conversation: system prompts, request bodies, reply checks; llm_json.py repairs JSON
    client.py             OpenAI-compatible async client: endpoints, concurrency, retries
    images.py             images to / from data URIs
    verifier.py           one yes/no question -> P(yes) from first-token top logprobs
    dvreward.py           per-image scoring, failure policy, aggregation
    fmt.py                think-format reward
    components.py         registry of reward components
    service.py            RewardFn / RewardService (background loop), reward_config(), build_reward_fn()
    openai_server.py      OpenAI-compatible test server (pluggable handlers, fault injection); openai_shapes.py
                          builds its responses, scripted.py holds programmatic handlers
"""
from alphagrpo_jax.reward.dvreward import AGGREGATIONS, FAILURE_POLICIES, RewardFailure, aggregate
from alphagrpo_jax.reward.records import (QUALITY_TAGS, SEMANTIC_TAGS, Question, QuestionSet, RecordError,
                                          read_records)
from alphagrpo_jax.reward.service import RewardResult, RewardService, build_reward_fn, reward_config

__all__ = [
    "AGGREGATIONS", "FAILURE_POLICIES", "QUALITY_TAGS", "SEMANTIC_TAGS", "Question", "QuestionSet", "RecordError",
    "RewardFailure", "RewardResult", "RewardService", "aggregate", "build_reward_fn", "read_records",
    "reward_config",
]
