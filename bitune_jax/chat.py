"""Chat templates rendered from the model's own Jinja template, and the prompt/answer token boundary."""

from __future__ import annotations

import datetime
import functools
import json
from collections.abc import Mapping, Sequence
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


def render_chat(
    tok: Tokenizer, messages: Sequence[Message], add_generation_prompt: bool = True, **template_kwargs
) -> str:
    if not tok.chat_template:
        raise ValueError("this tokenizer has no chat template; encode plain text with tok.encode() instead")
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or "role" not in m or "content" not in m:
            raise ValueError(f"message {i} must be a dict with 'role' and 'content', got {m!r}")
    return _compile(tok.chat_template).render(
        messages=list(messages),
        add_generation_prompt=add_generation_prompt,
        **tok.special_tokens,
        **template_kwargs,
    )


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
