"""Chat templates rendered from the model's own Jinja template, and the prompt/answer token boundary."""

from __future__ import annotations

import contextlib
import datetime
import functools
import json
import signal
import threading
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import jinja2
import jinja2.ext
import jinja2.sandbox

from bitune_jax.tokenizer import Tokenizer

Message = dict[str, str]


def _raise(message: str):
    raise jinja2.exceptions.TemplateError(message)


@functools.lru_cache(maxsize=16)
def _compile(template: str) -> jinja2.Template:
    # The same environment Hugging Face uses: sandboxed, trimmed blocks, a few helpers.
    env = jinja2.sandbox.ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True, extensions=[jinja2.ext.loopcontrols]
    )
    env.filters["tojson"] = lambda x, indent=None, ensure_ascii=False: json.dumps(
        x, indent=indent, ensure_ascii=ensure_ascii
    )
    env.globals["raise_exception"] = _raise
    env.globals["strftime_now"] = lambda fmt: datetime.datetime.now().strftime(fmt)
    return env.from_string(template)


RENDER_LIMIT_S = 10.0  # one conversation renders in milliseconds; a template that takes this long never ends


class TemplateTimeout(ValueError):
    """A chat template that did not finish rendering one conversation within `RENDER_LIMIT_S`."""


def check_template(template: str, source: str) -> None:
    """Compile `template` now, so a syntax error names its file before any row is rendered."""
    try:
        _compile(template)
    except jinja2.TemplateError as e:
        line = f" (line {e.lineno})" if getattr(e, "lineno", None) else ""
        raise ValueError(f"{source}: not a valid Jinja chat template{line}: {e}") from None


@contextlib.contextmanager
def _time_limit(seconds: float) -> Iterator[None]:
    """Raise `TemplateTimeout` after `seconds` (a real-time alarm; only the main thread can take one, so
    elsewhere the render runs unlimited)."""
    if threading.current_thread() is not threading.main_thread() or not hasattr(signal, "setitimer"):
        yield
        return

    def expired(signum, frame):
        raise TemplateTimeout(
            f"the chat template did not finish rendering within {seconds:g} s (a loop that never ends?)"
        )

    previous = signal.signal(signal.SIGALRM, expired)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def render_chat(
    tok: Tokenizer, messages: Sequence[Message], add_generation_prompt: bool = True, **template_kwargs
) -> str:
    """The conversation rendered by the tokenizer's chat template. Template errors (its `raise_exception`, a bad
    variable, a render that never ends) come back as `ValueError`s, so callers name the row."""
    if not tok.chat_template:
        raise ValueError("this tokenizer has no chat template; encode plain text with tok.encode() instead")
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or "role" not in m or "content" not in m:
            raise ValueError(f"message {i} must be a dict with 'role' and 'content', got {m!r}")
    try:
        with _time_limit(RENDER_LIMIT_S):
            return _compile(tok.chat_template).render(
                messages=list(messages),
                add_generation_prompt=add_generation_prompt,
                **tok.special_tokens,
                **template_kwargs,
            )
    except jinja2.TemplateError as e:
        raise ValueError(f"the chat template failed: {type(e).__name__}: {e}") from None


def encode_chat(
    tok: Tokenizer, messages: Sequence[Message], add_generation_prompt: bool = True, **template_kwargs
) -> list[int]:
    """Token ids of the rendered conversation (the template adds BOS itself where the model wants one)."""
    return tok.encode(render_chat(tok, messages, add_generation_prompt, **template_kwargs), add_bos=False)


def encode_prompt_answer(
    tok: Tokenizer, messages: Sequence[Message], prompt_kwargs: Mapping[str, Any] | None = None, **template_kwargs
) -> tuple[list[int], list[int]]:
    """Split a conversation ending in an assistant turn into `(prompt_ids, answer_ids)`.

    The prompt is everything up to and including the generation prompt (what the model sees before it
    answers); the answer is the rest of the rendered conversation, template end tokens included. `prompt_kwargs`
    go to the prompt's rendering only, as the repetition authors pass `enable_thinking=True` to the query and not
    to the whole conversation (their `train.py`, `process_sample`).
    """
    if not messages or messages[-1].get("role") != "assistant":
        raise ValueError("encode_prompt_answer needs a conversation whose last message has role 'assistant'")
    prompt_text = render_chat(tok, messages[:-1], True, **{**template_kwargs, **(prompt_kwargs or {})})
    full_text = render_chat(tok, messages, False, **template_kwargs)
    if not full_text.startswith(prompt_text):
        raise ValueError(
            "the chat template renders the prompt differently with and without the answer; "
            "cannot find the prompt/answer boundary"
        )
    prompt_ids = tok.encode(prompt_text, add_bos=False)
    full_ids = tok.encode(full_text, add_bos=False)
    if full_ids[: len(prompt_ids)] == prompt_ids:
        return prompt_ids, full_ids[len(prompt_ids) :]
    return prompt_ids, tok.encode(full_text[len(prompt_text) :], add_bos=False)
