"""What a caller hands the engine (`Request`) and gets back (`Completion`), and the checks that refuse a bad request
before anything compiles."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from bitune_jax.sampling import SamplingConfig


@dataclasses.dataclass(frozen=True)
class Request:
    """One prompt (token ids) and how to continue it; `n` samples share its prefill."""

    prompt: Sequence[int]
    max_new_tokens: int = 64
    n: int = 1
    temperature: float = 0.0  # 0: greedy
    top_p: float = 1.0
    top_k: int = 0  # 0: no cut
    seed: int = 0
    eos_ids: tuple[int, ...] | None = None  # None: the engine's
    stop: tuple[str, ...] = ()  # stop strings (the engine needs a tokenizer): the text is cut before them


@dataclasses.dataclass
class Completion:
    """A finished request: its n samples, each up to and including EOS (or cut at a stop string, or at the budget)."""

    index: int  # the request's place in the list given to `generate`
    tokens: list[list[int]]
    finished: list[bool]  # stopped at EOS or a stop string, not at the budget
    texts: list[str] | None = None  # with a tokenizer: the decoded samples, cut before a stop string


def check_requests(
    requests: Sequence[Request],
    vocab_size: int,
    max_len: int,
    can_stop: bool,
    min_width: int = 1,
    room: str = "the cache of a slot",
) -> None:
    """Every request checked before anything compiles; the error names the request."""
    for i, r in enumerate(requests):
        where = f"request {i}"
        if len(r.prompt) == 0:
            raise ValueError(f"{where}: the prompt is empty")
        bad = [t for t in r.prompt if not 0 <= int(t) < vocab_size]
        if bad:
            raise ValueError(f"{where}: token id {bad[0]} is outside the vocabulary of {vocab_size}")
        if r.max_new_tokens <= 0:
            raise ValueError(f"{where}: max_new_tokens must be >= 1, got {r.max_new_tokens}")
        if r.n < 1:
            raise ValueError(f"{where}: n (samples) must be >= 1, got {r.n}")
        try:
            SamplingConfig(r.temperature, r.top_p, r.top_k)  # the sampling settings' own checks
        except ValueError as e:
            raise ValueError(f"{where}: {e}") from None
        if r.stop and not can_stop:
            raise ValueError(f"{where}: stop strings need an engine with a tokenizer")
        if max(len(r.prompt), min_width) + r.max_new_tokens > max_len:
            raise ValueError(
                f"{where}: a prompt of {len(r.prompt)} tokens + max_new_tokens={r.max_new_tokens} exceeds {room}"
            )
