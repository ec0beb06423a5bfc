"""Continuous batching: a fixed set of decode slots over one KV cache. A request enters as soon as a slot frees, the n
samples of a prompt share one prefill, and every slot stops at its own EOS or budget, so no row decodes past its end
while others still run (`generation.decode_loop`, the static batch, is kept as the reference the tests compare to).

The device side is three jitted pure functions (prefill a prompt, insert it into a slot, decode a chunk of steps for
all slots); `Engine.generate` is the host-side scheduler around them. Token `j` of a sample is drawn with
`fold_in(fold_in(key(seed), sample), j)`, so a request's samples do not depend on the slot count or on what else
runs beside them.
"""

from bitune_jax.engine.decoders import BituneDecoder, Decoder, PlainDecoder, Weights
from bitune_jax.engine.requests import Completion, Request, check_requests
from bitune_jax.engine.scheduler import WINDOW_MULTIPLE, Engine, prompt_width
from bitune_jax.engine.slots import Slots, decode, insert, prefill, release, slot_shardings, step_weights

__all__ = [
    "WINDOW_MULTIPLE",
    "BituneDecoder",
    "Completion",
    "Decoder",
    "Engine",
    "PlainDecoder",
    "Request",
    "Slots",
    "Weights",
    "check_requests",
    "decode",
    "insert",
    "prefill",
    "prompt_width",
    "release",
    "slot_shardings",
    "step_weights",
]
