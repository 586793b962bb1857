"""One health request per reward endpoint, before any model loads: `GET {base}/models` with a short timeout.

    check_endpoints(config.reward)   # UsageError naming the first endpoint that does not answer, or that does
                                     # not serve config.reward.model

Refused connections, timeouts and 401/403 are errors; any other answer means a server is listening (some
proxies do not implement /models). A model list without config.reward.model is a warning (SGLang serves any
name; vLLM will answer the chat requests with 404).
"""
from __future__ import annotations

import json
import logging
import os
import urllib.error
import urllib.request

from alphagrpo_jax.errors import UsageError
from alphagrpo_jax.reward.client import scrub

HEALTH_TIMEOUT_S = 5.0
log = logging.getLogger(__name__)


def _scrub(text: str, key: str) -> str:
    return scrub(text, key)


def check_endpoint(base: str, model: str, api_key_env: str | None, timeout_s: float = HEALTH_TIMEOUT_S,
                   key: str = "config.reward.endpoints") -> None:
    """Raises UsageError unless `base` answers `GET {base}/models`; warns if it lists models but not `model`."""
    api_key = os.environ.get(api_key_env, "") if api_key_env else ""
    url = base.rstrip("/").removesuffix("/chat/completions") + "/models"
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {api_key}"} if api_key else {})
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # like the client: no HTTP proxy
    try:
        with opener.open(request, timeout=timeout_s) as resp:
            body = resp.read(1 << 20)
    except urllib.error.HTTPError as e:
        if e.code in (401, 403):
            hint = f"check that ${api_key_env} holds a valid key" if api_key_env else "set config.reward.api_key_env"
            raise UsageError(f"{key}: {base} refused the key (HTTP {e.code} on GET {url}); {hint}") from None
        return  # listening; /models may simply not be implemented
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", e)
        raise UsageError(_scrub(f"{key}: {base} does not answer (GET {url}: {reason}); expected a running "
                                f"OpenAI-compatible server (SGLang/vLLM) at that base URL", api_key)) from None
    try:
        served = [m["id"] for m in json.loads(body)["data"]]
    except (ValueError, KeyError, TypeError):
        return  # not a model list: the server is up, the chat requests will tell more
    if served and model not in served:  # vLLM will answer 404; SGLang ignores the name: a warning, not an error
        log.warning("config.reward.model: %r is not among the models %s lists: %s", model, base, served[:10])


def check_endpoints(config, timeout_s: float = HEALTH_TIMEOUT_S) -> None:
    """Every endpoint of a reward ConfigDict (service.reward_config)."""
    for base in tuple(config.endpoints):
        check_endpoint(base, config.model, config.api_key_env or None,
                       min(timeout_s, float(config.connect_timeout_s) or timeout_s))
