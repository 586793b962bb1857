"""The toy world's verifier and decomposer behind an OpenAI-compatible server (the SGLang/vLLM protocol).

    python -m alphagrpo_jax.toy.serve --port 8000

Vision requests (image + yes/no question) are answered by the programmatic verifier with top-logprobs for
" Yes"/" No" carrying its calibrated P(yes); text requests of the decomposition conversation
(`python -m alphagrpo_jax.reward.decompose`) are answered from the exact toy decomposer. So the real DVReward
client and decomposition pipeline run against it unchanged.
"""
from __future__ import annotations

import argparse
from collections.abc import Sequence

from alphagrpo_jax.reward.openai_server import OpenAIServer
from alphagrpo_jax.reward.scripted import decomposer_chat
from alphagrpo_jax.toy import decompose, prompts, verifier


def toy_decomposer(prompt: str):
    """The exact DVReward record of a toy prompt (its text must follow the toy grammar)."""
    return decompose.decompose(prompts.parse(prompt))


def make_server(host: str = "127.0.0.1", port: int = 0, latency_s: float = 0.0,
                model: str = "toy-verifier") -> OpenAIServer:
    return OpenAIServer(answer=verifier.answer, chat=decomposer_chat(toy_decomposer), host=host, port=port,
                        model=model, latency_s=latency_s)


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m alphagrpo_jax.toy.serve", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8000)
    ap.add_argument("--latency-ms", type=float, default=0.0, help="added to every request (load tests)")
    ap.add_argument("--model", default="toy-verifier", help="model name reported to clients")
    args = ap.parse_args(argv)
    server = make_server(args.host, args.port, args.latency_ms / 1000.0, args.model)
    print(f"toy verifier + decomposer serving on http://{args.host}:{args.port}/v1", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
