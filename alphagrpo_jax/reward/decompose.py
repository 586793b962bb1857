"""Offline, resumable decomposition of prompts into DVReward question sets.

    python -m alphagrpo_jax.reward.decompose --prompts prompts.txt --out train.jsonl \
        --endpoint http://llm-host:30000/v1 --model Qwen/Qwen3-235B-A22B-Instruct-2507 --concurrency 32

Per prompt (conversation in decompose_prompts.py): (1) the LLM lists atomic yes/no content questions
(Davidsonian-scene-graph style); (2) each question is validated and tagged with one of the 10 semantic
categories (two calls per question, concurrently); if any is judged invalid, step 1 is redone, up to
`--max-attempts` times; (3) the LLM writes quality questions under the 8 quality tags. A reply that is not
usable JSON of the right shape is repaired if possible (llm_json.py), else the model is re-asked with the error,
up to `--max-reasks` times.

Prompts file: plain text, one prompt per non-blank line (index = position among non-blank lines, as in the
reference), or JSONL with a "prompt" field (index = "original_index" if given, else position; other fields
are copied into the output record).

Resume: each finished record is appended as one whole line with a single write() and fsync'd; a re-run reads
the output, drops a torn last line (a kill mid-write), checks every line against the prompts file and skips the
indices already present. At the end of every run the file is rewritten sorted by index (temp file + rename),
so an interrupted-and-resumed run produces the same bytes as an uninterrupted one.

Files may be on gs:// (alphagrpo_jax/paths.py). An object store has no append: a gs:// `--out` is worked on in
a local copy (the records already there, fetched at start) and uploaded, sorted, at the end of the run; a run
killed before its end leaves the object as the previous run wrote it (its new records are decomposed again).
"""
from __future__ import annotations

import argparse
import asyncio
import dataclasses
import fcntl
import json
import logging
import os
import sys
import tempfile
from collections.abc import Callable
from typing import Any

from alphagrpo_jax import checks, errors, paths
from alphagrpo_jax.errors import UsageError
from alphagrpo_jax.reward import decompose_prompts as dp
from alphagrpo_jax.reward.client import ChatClient, ClientSettings, RequestFailed, message_content
from alphagrpo_jax.reward.health import check_endpoint
from alphagrpo_jax.reward.llm_json import JSONReplyError, extract_json
from alphagrpo_jax.reward.records import Question, QuestionSet, RecordError, parse_line, write_records

log = logging.getLogger(__name__)
_RECORD_FIELDS = ("prompt", "original_index", "semantic_questions", "quality_questions")


@dataclasses.dataclass(frozen=True)
class PromptItem:
    index: int
    prompt: str
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class DecomposeSettings:
    question_temperature: float = 0.3
    judge_temperature: float = 0.0  # validation and tagging
    quality_temperature: float = 0.6
    quality_top_p: float = 0.9
    max_tokens: int = 2048
    max_reasks: int = 2  # extra replies asked for after an unusable one
    max_attempts: int = 3  # question lists generated when some question is judged invalid


@dataclasses.dataclass
class Summary:
    total: int
    already_done: int
    written: int = 0
    failures: list[tuple[int, str, str]] = dataclasses.field(default_factory=list)  # (index, prompt, error)


class DecomposeFailure(RuntimeError):
    """A prompt could not be decomposed; it is reported and retried by the next run."""


def load_prompts(path: str, fmt: str = "auto") -> list[PromptItem]:
    if fmt == "auto":
        fmt = "jsonl" if path.endswith((".jsonl", ".json")) else "text"
    if fmt not in ("text", "jsonl"):
        raise UsageError(f"--prompts-format: expected auto, text or jsonl, got {fmt!r}")
    items, seen = [], {}
    if not paths.exists(path) or paths.isdir(path):
        raise UsageError(f"--prompts {path}: no such file")
    with paths.open(path) as f:
        lines = [(n, line) for n, line in enumerate(f, start=1) if line.strip()]
    for pos, (lineno, line) in enumerate(lines):
        where = f"{path}:{lineno}"
        if fmt == "text":
            items.append(PromptItem(pos, line.strip()))
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise UsageError(f"{where}: not valid JSON ({e.msg}); use --prompts-format text for plain "
                             "text") from None
        if not isinstance(obj, dict) or not isinstance(obj.get("prompt"), str) or not obj["prompt"].strip():
            raise UsageError(f"{where}: field 'prompt': expected a non-empty string")
        index = obj.get("original_index", pos)
        if isinstance(index, bool) or not isinstance(index, int) or index < 0:
            raise UsageError(f"{where}: field 'original_index': expected an integer >= 0, got {index!r}")
        if index in seen:
            raise UsageError(f"{where}: field 'original_index': {index} already used on line {seen[index]}")
        seen[index] = lineno
        items.append(PromptItem(index, obj["prompt"].strip(),
                                {k: v for k, v in obj.items() if k not in _RECORD_FIELDS}))
    return items


async def _ask_json(client: ChatClient, stage: str, user: str, check: Callable[[Any], Any], *, temperature: float,
                    settings: DecomposeSettings, label: str, top_p: float | None = None) -> Any:
    messages = [{"role": "system", "content": dp.SYSTEM_PROMPTS[stage]}, {"role": "user", "content": user}]
    error = None
    for _ in range(settings.max_reasks + 1):
        payload = {"messages": messages, "temperature": temperature, "max_tokens": settings.max_tokens}
        if top_p is not None:
            payload["top_p"] = top_p
        reply = await client.complete(payload, message_content, label=f"{label} {stage}")
        try:
            return check(extract_json(reply))
        except (JSONReplyError, dp.SchemaError) as e:
            error = str(e)
            messages = messages + [{"role": "assistant", "content": reply},
                                   {"role": "user", "content": dp.REASK.format(error=error)}]
    raise DecomposeFailure(f"{stage}: no usable reply after {settings.max_reasks + 1} tries; "
                           f"last problem: {error}")


async def decompose_prompt(client: ChatClient, item: PromptItem, settings: DecomposeSettings) -> QuestionSet:
    label, prompt = f"prompt {item.index}", item.prompt
    ask = lambda stage, user, check, **kw: _ask_json(client, stage, user, check, settings=settings,  # noqa: E731
                                                     label=label, **kw)
    invalid: list[str] = []
    for _ in range(settings.max_attempts):
        questions = await ask(dp.QUESTIONS, dp.user_message(dp.QUESTIONS, prompt=prompt), dp.check_questions,
                              temperature=settings.question_temperature)
        judged = await asyncio.gather(*(
            asyncio.gather(ask(dp.VALIDATE, dp.user_message(dp.VALIDATE, prompt=prompt, question=q),
                               dp.check_validation, temperature=settings.judge_temperature),
                           ask(dp.TAG, dp.user_message(dp.TAG, prompt=prompt, question=q), dp.check_tag,
                               temperature=settings.judge_temperature))
            for q in questions))
        invalid = [q for q, (ok, _) in zip(questions, judged) if not ok]
        if not invalid:
            break
    else:
        raise DecomposeFailure(f"{len(invalid)} question(s) still judged invalid after {settings.max_attempts} "
                               f"attempts, e.g. {invalid[0]!r}")
    semantic = tuple(Question("semantic", q, tag) for q, (_, tag) in zip(questions, judged))
    quality = await ask(dp.QUALITY, dp.user_message(dp.QUALITY, prompt=prompt, semantic_questions=questions),
                        dp.check_quality, temperature=settings.quality_temperature, top_p=settings.quality_top_p)
    return QuestionSet(prompt=prompt, semantic=semantic,
                       quality=tuple(Question("quality", q, t) for q, t in quality),
                       original_index=item.index, extra=dict(item.extra))


def completed_records(out_path: str, items: dict[int, PromptItem]) -> dict[int, QuestionSet]:
    """Records already in `out_path`, after cutting off a torn last line. Lines must match the prompts file."""
    if not os.path.exists(out_path):
        return {}
    with open(out_path, "rb") as f:
        data = f.read()
    end = data.rfind(b"\n") + 1
    if end < len(data):
        log.warning("%s: dropping a torn last line (%d bytes) left by an interrupted run", out_path,
                    len(data) - end)
        os.truncate(out_path, end)
    done: dict[int, tuple[int, QuestionSet]] = {}
    for lineno, line in enumerate(data[:end].decode("utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        rec = parse_line(line, f"{out_path}:{lineno}")
        i = rec.original_index
        if i is None or i not in items or items[i].prompt != rec.prompt:
            raise RecordError(f"{out_path}:{lineno}: record (original_index={i}) does not match the prompts file; "
                              "is --out the output of a different prompts file?")
        if i in done:
            raise RecordError(f"{out_path}:{lineno}: original_index {i} already written on line {done[i][0]}")
        done[i] = (lineno, rec)
    return {i: rec for i, (_, rec) in done.items()}


class _Appender:
    """Appends whole lines: one write() per record on an O_APPEND fd, then fsync. Holds an exclusive lock so
    two runs cannot write the same file (the lock dies with the process, even on SIGKILL)."""

    def __init__(self, path: str):
        self.fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self.fd)
            raise RuntimeError(f"{path}: another decompose run is writing this file") from None

    def write(self, rec: QuestionSet) -> None:
        data = rec.to_line().encode("utf-8")
        if os.write(self.fd, data) != len(data):
            raise OSError("short write to the decomposition output")
        os.fsync(self.fd)

    def close(self) -> None:
        os.close(self.fd)


async def run(items: list[PromptItem], out_path: str, client_settings: ClientSettings,
              settings: DecomposeSettings = DecomposeSettings(), progress: bool = True) -> Summary:
    """Decomposes every prompt not yet in `out_path`; returns what happened. See the module docstring."""
    by_index = {it.index: it for it in items}
    work = out_path
    if paths.is_remote(out_path) and paths.exists(out_path):  # appended to locally, uploaded at the end
        work = paths.local_copy(out_path)
    elif paths.is_remote(out_path):
        fd, work = tempfile.mkstemp(suffix=".jsonl")
        os.close(fd)
    appender = _Appender(work)  # lock first, then read: no other run can append in between
    try:
        done = completed_records(work, by_index)
        summary = Summary(total=len(items), already_done=len(done))
        todo: asyncio.Queue[PromptItem] = asyncio.Queue()
        for it in items:
            if it.index not in done:
                todo.put_nowait(it)
        from tqdm.auto import tqdm

        bar = tqdm(total=len(items), initial=len(done), desc="decompose", unit="prompt", disable=not progress,
                   dynamic_ncols=True)
        async with ChatClient(client_settings) as client:
            async def worker():
                while not todo.empty():
                    it = todo.get_nowait()
                    try:
                        rec = await decompose_prompt(client, it, settings)
                    except (DecomposeFailure, RequestFailed) as e:
                        summary.failures.append((it.index, it.prompt, str(e)))
                        log.warning("prompt %d failed: %s", it.index, e)
                    else:
                        appender.write(rec)
                        done[it.index] = rec
                        summary.written += 1
                    bar.update(1)

            n_workers = client_settings.concurrency_per_endpoint * len(client_settings.endpoints)
            await asyncio.gather(*(worker() for _ in range(min(n_workers, max(1, todo.qsize())))))
        bar.close()
        write_records(out_path, [done[i] for i in sorted(done)])
    finally:
        appender.close()
    return summary


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m alphagrpo_jax.reward.decompose",
                                description=__doc__.split("\n")[0])
    p.add_argument("--prompts", required=True,
                   help="text file (one prompt per line) or JSONL with a 'prompt' field")
    p.add_argument("--out", required=True, help="output JSONL of question sets (resumed if it exists)")
    p.add_argument("--endpoint", action="append", required=True,
                   help="OpenAI-compatible base URL ending in /v1; repeat to spread load over several servers")
    p.add_argument("--model", required=True, help="served model name")
    p.add_argument("--api-key-env", default=ClientSettings.api_key_env, help="env var holding the API key (if any)")
    p.add_argument("--concurrency", type=int, default=16, help="requests in flight per endpoint")
    p.add_argument("--timeout", type=float, default=300.0, help="seconds per request")
    p.add_argument("--max-retries", type=int, default=ClientSettings.max_retries,
                   help="retries per request on 429/5xx/timeouts")
    p.add_argument("--max-reasks", type=int, default=DecomposeSettings.max_reasks)
    p.add_argument("--max-attempts", type=int, default=DecomposeSettings.max_attempts)
    p.add_argument("--prompts-format", default="auto", choices=("auto", "text", "jsonl"))
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    items = load_prompts(args.prompts, args.prompts_format)
    if not items:
        raise UsageError(f"--prompts {args.prompts}: no prompts (the file is empty); expected one prompt per "
                         f"non-blank line")
    checks.output_file(args.out, "--out")
    try:
        client_settings = ClientSettings(endpoints=tuple(args.endpoint), model=args.model,
                                         api_key_env=args.api_key_env, concurrency_per_endpoint=args.concurrency,
                                         timeout_s=args.timeout, max_retries=args.max_retries)
        settings = DecomposeSettings(max_reasks=args.max_reasks, max_attempts=args.max_attempts)
    except ValueError as e:
        raise UsageError(str(e)) from None
    for base in client_settings.endpoints:
        check_endpoint(base, args.model, args.api_key_env, key="--endpoint")
    summary = asyncio.run(run(items, args.out, client_settings, settings, progress=not args.no_progress))
    print(f"decompose: {summary.written} written now, {summary.already_done} already done, "
          f"{len(summary.failures)} failed, {summary.total} prompts in {args.prompts}", file=sys.stderr)
    for index, prompt, error in sorted(summary.failures)[:50]:
        print(f"  FAILED {index}: {prompt[:60]!r}: {error}", file=sys.stderr)
    if summary.failures:
        print("  re-run the same command to retry the failed prompts", file=sys.stderr)
    return 1 if summary.failures else 0


if __name__ == "__main__":
    sys.exit(errors.run_main(main))
