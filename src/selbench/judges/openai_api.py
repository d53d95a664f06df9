"""OpenAI-compatible chat judge: OpenAI, a vLLM server, a llama.cpp server.

The API key is read from the environment variable named by ``api_key_env`` at call time;
it is never part of the config that is hashed, cached or written.

Retries: transport faults (timeouts, connection errors, 408/409/429/5xx) are retried by the
openai client itself (``max_retries``; it reads ``retry-after-ms`` and ``Retry-After`` in
seconds or as an HTTP date). A 200 whose body is malformed or has no answer is retried by
tenacity (exponential backoff with jitter, ``backoff_base``..``backoff_max``), which the
client does not do. Every HTTP request is counted by an httpx hook, so ``stats["retries"]``
= requests sent - items asked, whichever layer retried. After ``max_retries`` a
:class:`JudgeCallError` names the item; everything judged before stays in the cache.
"""
from __future__ import annotations

import os
import threading
import urllib.error
import urllib.request
from concurrent.futures import CancelledError, ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from typing import Callable

import tenacity

from .base import JUDGE_TYPES, Completion, Judge, JudgeItem, StopRequests
from .requests import request_params


class JudgeCallError(RuntimeError):
    pass


class MalformedAnswer(ValueError):
    """A 200 response without a usable answer (cut-off JSON, no choices, no content)."""


class _Stopped(Exception):
    """An item not sent (or not retried) because judging was told to stop."""


@dataclass
class OpenAIJudgeConfig:
    model: str = "gpt-5.1"
    base_url: str | None = None  # None = api.openai.com
    api_key_env: str = "OPENAI_API_KEY"
    family: str = "auto"  # auto | chat | reasoning: the request shape (judges/requests.py)
    temperature: float | None = None  # None: 0.0 for chat models, not sent to reasoning models
    max_tokens: int = 512  # max_tokens (chat) or max_completion_tokens (reasoning)
    reasoning_effort: str | None = None  # reasoning models only: none|minimal|low|medium|high
    concurrency: int = 4
    timeout: float = 60.0
    max_retries: int = 6
    backoff_base: float = 1.0
    backoff_max: float = 60.0
    price_per_mtok_prompt: float | None = None  # USD per 1M prompt tokens, for the leaderboard
    price_per_mtok_completion: float | None = None
    price_source: str | None = None  # where and when the prices were read (shown with costs)
    prompt_file: str | None = None  # own judge prompt (YAML: template, system, version)


def server_reachable(base_url: str, timeout: float = 2.0) -> bool:
    """Whether an OpenAI-compatible server answers at ``base_url`` (any HTTP answer counts)."""
    try:
        urllib.request.urlopen(base_url.rstrip("/") + "/models", timeout=timeout)
        return True
    except urllib.error.HTTPError:
        return True  # it answered (e.g. 401): it is there
    except Exception:  # noqa: BLE001 - refused, timed out, no route: not there
        return False


def scrub(text: str, secret: str | None) -> str:
    """`text` with the API key's value removed (an error body may echo it)."""
    if secret and len(secret) >= 4:
        text = text.replace(secret, "***")
    return text


@JUDGE_TYPES.register("openai")
class OpenAIJudge(Judge):
    config_cls = OpenAIJudgeConfig

    def __init__(self, name: str, config, source: str | None = None):
        super().__init__(name, config, source)
        self.params = request_params(config, source or f"judge '{name}'")  # fail at load
        self._lock = threading.Lock()
        self._requests = self._asked = 0

    def cache_identity(self) -> dict:
        return {**super().cache_identity(), "request": self.params}

    def needs(self) -> list[tuple[str, str]]:
        c = self.config
        if c.base_url is None and not self._key():
            return [("needs-key", f"judge '{self.name}' needs the environment variable "
                                  f"{c.api_key_env} (its API key)")]
        if c.base_url is not None and not server_reachable(c.base_url):
            return [("needs-server", f"judge '{self.name}' needs a server at {c.base_url} (not "
                                     f"reachable now; start it before the judge stage)")]
        return []

    def _key(self) -> str | None:
        return os.environ.get(self.config.api_key_env)

    def _client(self):
        import openai

        c = self.config
        key = self._key()
        if key is None:
            if c.base_url is None:
                raise JudgeCallError(f"judge '{self.name}': set the environment variable "
                                     f"{c.api_key_env} (its API key)")
            key = "EMPTY"  # local servers accept any key
        http = openai.DefaultHttpxClient(event_hooks={"request": [self._count_request]})
        return openai.OpenAI(api_key=key, base_url=c.base_url, timeout=c.timeout,
                             max_retries=c.max_retries, http_client=http)

    def _count_request(self, request) -> None:
        with self._lock:
            self._requests += 1
            self.stats["retries"] = self._requests - self._asked

    def _ask(self, client, item: JudgeItem, stop: threading.Event | None = None) -> Completion:
        """One answer; a malformed or empty 200 raises MalformedAnswer (retried by tenacity).
        Nothing is sent once ``stop`` is set (judging stopped: see :meth:`complete_many`)."""
        import openai

        if stop is not None and stop.is_set():
            raise _Stopped()

        try:
            resp = client.chat.completions.create(
                messages=self.messages(item), **self.params)
        except openai.APIResponseValidationError as e:
            raise MalformedAnswer(f"response failed validation: {e}") from None
        except ValueError as e:  # a 200 whose JSON body is cut off
            raise MalformedAnswer(f"response body is not JSON: {e}") from None
        choices = getattr(resp, "choices", None)
        if not choices:
            raise MalformedAnswer("response has no choices")
        text = getattr(getattr(choices[0], "message", None), "content", None)
        if not isinstance(text, str):
            raise MalformedAnswer("response choice has no content")
        usage = {}
        if getattr(resp, "usage", None) is not None:
            usage = {"prompt_tokens": int(resp.usage.prompt_tokens or 0),
                     "completion_tokens": int(resp.usage.completion_tokens or 0)}
        return Completion(text, usage)

    def call_one(self, client, item: JudgeItem, label: str,
                 stop: threading.Event | None = None) -> Completion:
        import openai

        c = self.config
        retrying = tenacity.Retrying(
            stop=tenacity.stop_after_attempt(c.max_retries + 1),
            wait=tenacity.wait_random_exponential(multiplier=c.backoff_base, max=c.backoff_max),
            retry=tenacity.retry_if_exception_type(MalformedAnswer), reraise=True)
        if stop is not None and stop.is_set():
            raise _Stopped()
        with self._lock:
            self._asked += 1
        try:
            out = retrying(self._ask, client, item, stop)
        except openai.APIStatusError as e:
            if e.status_code < 500 and e.status_code not in (408, 409, 429):
                raise JudgeCallError(self._client_error(e, label)) from None
            last = e
        except (openai.APIError, MalformedAnswer) as e:  # timeouts, connection errors
            last = e
        else:
            with self._lock:
                self.stats["calls"] += 1
                self.stats["prompt_tokens"] += out.usage.get("prompt_tokens", 0)
                self.stats["completion_tokens"] += out.usage.get("completion_tokens", 0)
            return out
        with self._lock:
            self.stats["errors"] += 1
        raise JudgeCallError(f"judge '{self.name}', item {label}: gave up after "
                             f"{c.max_retries} retries: {type(last).__name__}: "
                             f"{scrub(str(last), self._key())[:300]}")

    def _client_error(self, e, label: str) -> str:
        """One line for a 4xx: the rejected parameter and the YAML to edit, key scrubbed."""
        body = e.body if isinstance(getattr(e, "body", None), dict) else {}
        err = body.get("error", body) if isinstance(body.get("error", body), dict) else {}
        param = getattr(e, "param", None) or err.get("param")
        msg = err.get("message") or str(e)
        where = self.source or f"the judge YAML of '{self.name}'"
        text = f"judge '{self.name}', item {label}: HTTP {e.status_code}"
        if param:
            text += f": the API rejected parameter '{param}' ({msg}); edit {where}"
            if param in ("max_tokens", "temperature", "max_completion_tokens", "reasoning_effort"):
                text += " (family: reasoning sends max_completion_tokens and no temperature)"
        else:
            text += f": {msg}; check {where}"
        return scrub(text, self._key())[:600]

    def complete_many(self, items: list[JudgeItem],
                      on_done: Callable[[int, Completion], None]) -> None:
        """``concurrency`` requests at a time. Each worker thread hands its answer to
        ``on_done`` (one at a time, under a lock) before it takes its next item, so when
        ``on_done`` raises StopRequests (an answer could not be stored) no request is sent
        after it: the queued items are cancelled, an item not yet sent is dropped, and only
        the requests already in flight are still answered and handed over. Ctrl-C or an
        unexpected error stops the queue the same way."""
        client = self._client()  # counters and lock live for the judge: retries add up over batches
        stop = threading.Event()
        deliver = threading.Lock()
        futs: dict = {}
        stopped: list[StopRequests] = []

        def halt() -> None:
            stop.set()
            for g in list(futs):
                g.cancel()

        def one(i: int, it: JudgeItem) -> None:
            out = self.call_one(client, it, it.meta.get("label", str(i)), stop)
            with deliver:
                try:
                    on_done(i, out)
                except StopRequests as e:
                    stopped.append(e)
                    halt()

        error = None
        with ThreadPoolExecutor(max_workers=max(1, self.config.concurrency)) as pool:
            try:
                with deliver:
                    for i, it in enumerate(items):
                        futs[pool.submit(one, i, it)] = i
                for f in as_completed(futs):
                    try:
                        f.result()
                    except (CancelledError, _Stopped):
                        continue
                    except JudgeCallError as e:
                        error = error or e
            except BaseException:
                halt()  # Ctrl-C, an unexpected error: the queue is not sent on shutdown
                raise
        if stopped:
            raise stopped[0]
        if error:
            raise error
