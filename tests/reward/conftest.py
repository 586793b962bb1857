"""Shared fixtures: one OpenAI-compatible test server per session on a free port, reset before each test."""
import time

import numpy as np
import pytest

from alphagrpo_jax.reward.openai_server import OpenAIServer
from alphagrpo_jax.reward.records import Question, QuestionSet
from alphagrpo_jax.reward.service import reward_config


def red_level(question, image) -> float:
    """The verifier used by the tests: P(yes) = mean red value / 255 (so the image really has to arrive)."""
    del question
    return float(np.asarray(image)[..., 0].mean()) / 255.0


@pytest.fixture(scope="session")
def session_server():
    server = OpenAIServer(answer=red_level, hang_s=5.0, model=reward_config().model).start()  # the name cfg sends
    yield server
    server.stop()


@pytest.fixture
def server(session_server):
    deadline = time.monotonic() + 2.0
    while session_server.in_flight and time.monotonic() < deadline:  # handlers a previous test hung up on
        time.sleep(0.01)
    session_server.reset()
    session_server.answer, session_server.chat, session_server.api_key = red_level, None, None
    session_server.echo_pad = 0
    session_server.latency_s, session_server.hang_s = 0.0, 5.0
    session_server.yes_tokens, session_server.no_tokens = (" Yes",), (" No",)
    yield session_server
    session_server.reset()


@pytest.fixture
def cfg(server):
    """Reward config pointed at the test server, with short timeouts and backoff."""
    c = reward_config()
    c.endpoints = (server.url,)
    c.timeout_s = 3.0  # generous: a loaded CI machine must not turn slow answers into retries
    c.connect_timeout_s = 3.0
    c.backoff_s = 0.005
    c.backoff_max_s = 0.02
    c.max_retries = 3
    c.image_format = "png"  # lossless: the server sees the exact pixel values
    return c


def solid_images(reds, size=16) -> np.ndarray:
    """uint8 [N, size, size, 3] images whose red channel is constant per image."""
    imgs = np.zeros((len(reds), size, size, 3), np.uint8)
    for i, r in enumerate(reds):
        imgs[i, ..., 0] = r
    return imgs


def question_set(tag: str, n_semantic: int, n_quality: int, prompt: str = "a prompt") -> QuestionSet:
    """Questions whose texts are unique per `tag`, so the server can count requests per question."""
    sem = tuple(Question("semantic", f"{tag} s{j}?", "Existence") for j in range(n_semantic))
    qual = tuple(Question("quality", f"{tag} q{j}?", "Texture") for j in range(n_quality))
    return QuestionSet(prompt, sem, qual)
