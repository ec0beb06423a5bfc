"""Hugging Face safetensors directories (single file or sharded index) <-> parameter pytrees."""

from __future__ import annotations

import json
import pathlib
from collections.abc import Callable, Mapping
from typing import Any

import jax
import numpy as np
import safetensors
import safetensors.numpy

from bitune_jax.checkpoints.hf_config import config_from_hf, config_to_hf
from bitune_jax.models.config import ModelConfig
from bitune_jax.models.transformer import NORMS_BY_LAYOUT, Params, init_params, param_shapes
from bitune_jax.tree_paths import named_leaves

_PROJ = {
    "q_proj": "self_attn.q_proj.weight",
    "k_proj": "self_attn.k_proj.weight",
    "v_proj": "self_attn.v_proj.weight",
    "o_proj": "self_attn.o_proj.weight",
    "q_norm": "self_attn.q_norm.weight",
    "k_norm": "self_attn.k_norm.weight",
    "gate_proj": "mlp.gate_proj.weight",
    "up_proj": "mlp.up_proj.weight",
    "down_proj": "mlp.down_proj.weight",
}
_NORMS = {
    "pre": {"attn_in_norm": "input_layernorm.weight", "mlp_in_norm": "post_attention_layernorm.weight"},
    "post": {"attn_out_norm": "post_attention_layernorm.weight", "mlp_out_norm": "post_feedforward_layernorm.weight"},
    "sandwich": {
        "attn_in_norm": "input_layernorm.weight",
        "attn_out_norm": "post_attention_layernorm.weight",
        "mlp_in_norm": "pre_feedforward_layernorm.weight",
        "mlp_out_norm": "post_feedforward_layernorm.weight",
    },
}
_TRANSPOSED = {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}


def layer_names(cfg: ModelConfig) -> dict[str, str]:
    """Internal layer parameter name -> HF name suffix under `model.layers.{i}.`."""
    names = dict(_NORMS[cfg.norm_layout])
    assert set(names) == set(NORMS_BY_LAYOUT[cfg.norm_layout])
    for k, v in _PROJ.items():
        if k in ("q_norm", "k_norm") and cfg.qk_norm == "none":
            continue
        names[k] = v
    return names


def _open(f: pathlib.Path):
    """`safe_open`, with the file named in its errors (safetensors' own name none)."""
    try:
        return safetensors.safe_open(f, framework="numpy")
    except Exception as e:
        raise ValueError(f"{f}: not a readable safetensors file ({type(e).__name__}: {e})") from e


FLOAT_DTYPES = ("F32", "F16", "BF16", "F64")  # safetensors' names; weights of any other dtype are refused


class TensorSource:
    """Lazy reader over one or many `.safetensors` files; knows which file holds which tensor."""

    def __init__(self, directory: pathlib.Path):
        self.directory = directory
        index = directory / "model.safetensors.index.json"
        if index.exists():
            try:
                weight_map = json.loads(index.read_text())["weight_map"]
            except (ValueError, KeyError, TypeError) as e:
                raise ValueError(f"{index}: not a safetensors index with a 'weight_map' ({e!r})") from e
            self.files = {name: directory / f for name, f in weight_map.items()}
        else:
            files = sorted(directory.glob("*.safetensors"))
            if not files:
                raise FileNotFoundError(f"{directory}: no *.safetensors file and no model.safetensors.index.json")
            self.files = {}
            for f in files:
                with _open(f) as h:
                    self.files.update({name: f for name in h.keys()})
        self._handles: dict[pathlib.Path, object] = {}

    def __contains__(self, name: str) -> bool:
        return name in self.files

    def _handle(self, name: str):
        f = self.files[name]
        if not f.exists():
            raise FileNotFoundError(f"{f}: listed in the index for tensor {name!r} but missing")
        if f not in self._handles:
            self._handles[f] = _open(f)
        return self._handles[f]

    def get(self, name: str) -> np.ndarray:
        return self._handle(name).get_tensor(name)

    def dtype(self, name: str) -> str:
        """safetensors' dtype name (`F32`, `BF16`, `I32`, ...), from the file header."""
        return self._handle(name).get_slice(name).get_dtype()

    def shape(self, name: str) -> tuple[int, ...]:
        """From the file header; no tensor data is read."""
        return tuple(self._handle(name).get_slice(name).get_shape())

    def read(self, name: str, index: tuple[slice, ...]) -> np.ndarray:
        """Only the elements under `index` (one slice per dim) are read from disk."""
        return self._handle(name).get_slice(name)[index]


def _prefix(source: TensorSource) -> str:
    for p in ("model.", "model.language_model.", "language_model.model."):
        if p + "embed_tokens.weight" in source:
            return p
    raise KeyError(f"{source.directory}: no embed_tokens.weight under any known prefix; is this a decoder LM?")


def tensor_plan(cfg: ModelConfig, prefix: str) -> dict[str, tuple[str | tuple[str, ...], bool]]:
    """Parameter path -> its HF tensor name (one per layer for the stacked `layers/...`) and whether HF stores it
    transposed (`[out, in]`; ours are `[in, out]`)."""
    plan: dict[str, tuple[str | tuple[str, ...], bool]] = {
        "embed": (prefix + "embed_tokens.weight", False),
        "final_norm": (prefix + "norm.weight", False),
    }
    if not cfg.tie_embeddings:
        plan["lm_head"] = ("lm_head.weight", True)
    for name, suffix in layer_names(cfg).items():
        plan[f"layers/{name}"] = (
            tuple(f"{prefix}layers.{i}.{suffix}" for i in range(cfg.num_layers)),
            name in _TRANSPOSED,
        )
    return plan


def check_tensors(source: TensorSource, cfg: ModelConfig, prefix: str) -> None:
    """From the file headers, before any weight is read: every tensor the config needs is present, floating point
    and of its shape; every tensor of the language model is one the config uses (a config with fewer layers than
    the file, or one for another model, would otherwise train on part of it); and a tied model's file holds no
    `lm_head.weight` that differs from its embedding. Each error names the file and the tensor."""
    expected = param_shapes(cfg)
    plan = tensor_plan(cfg, prefix)
    used = set()
    for path, (names, transpose) in plan.items():
        for n in names if isinstance(names, tuple) else (names,):
            if n not in source:
                raise KeyError(f"{source.directory}: missing tensor {n!r} (needed for parameter {path!r})")
            used.add(n)
            if source.dtype(n) not in FLOAT_DTYPES:
                raise ValueError(
                    f"{source.files[n]}: tensor {n!r} is {source.dtype(n)}; weights must be floating point "
                    f"({', '.join(FLOAT_DTYPES)})"
                )
            want = expected[path][1:] if isinstance(names, tuple) else expected[path]
            _check_shape(str(source.files[n]), n, path, source.shape(n), transpose, want)
    if cfg.tie_embeddings and "lm_head.weight" in source:
        embed, head = source.get(prefix + "embed_tokens.weight"), source.get("lm_head.weight")
        if embed.shape != head.shape or not np.array_equal(embed, head):
            raise ValueError(
                f"{source.files['lm_head.weight']}: holds an lm_head.weight that differs from the embedding, but "
                f"{source.directory / 'config.json'} says tie_word_embeddings=true, which would ignore it; set "
                "tie_word_embeddings to false to use it"
            )
        used.add("lm_head.weight")
    unused = sorted(
        n
        for n in source.files
        if n not in used
        and (n.startswith(prefix) or n == "lm_head.weight")
        and not n.endswith("rotary_emb.inv_freq")  # a buffer some exports keep; recomputed from the config
    )
    if unused:
        raise ValueError(
            f"{source.files[unused[0]]}: {len(unused)} tensors that the config does not use, e.g. "
            f"{', '.join(map(repr, unused[:3]))}; {source.directory / 'config.json'} says "
            f"num_hidden_layers={cfg.num_layers} (a config from another model?)"
        )


def _check_finite(where: str, hf_name: str, t: np.ndarray) -> np.ndarray:
    bad = np.size(t) - int(np.count_nonzero(np.isfinite(t)))
    if bad:
        raise ValueError(f"{where}: tensor {hf_name!r} holds {bad} NaN or infinite values of {np.size(t)}")
    return t


def _check_shape(
    where: str, hf_name: str, path: str, shape: tuple[int, ...], transpose: bool, want: tuple[int, ...]
) -> None:
    shape = tuple(shape[::-1]) if transpose else tuple(shape)
    if shape != tuple(want):
        raise ValueError(
            f"{where}: tensor {hf_name!r} has shape {shape} after conversion, but parameter {path!r} "
            f"expects {tuple(want)} for this config"
        )


def _nest(flat: dict[str, Any]) -> Params:
    out: dict[str, Any] = {}
    for path, value in flat.items():
        *parents, leaf = path.split("/")
        node = out
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = value
    return out


def params_from_tensors(
    get: Callable[[str], np.ndarray],
    has: Callable[[str], bool],
    cfg: ModelConfig,
    prefix: str,
    where: str,
    dtype=np.float32,
    where_is: Callable[[str], str] | None = None,
) -> Params:
    """Assemble the parameter pytree on the host, validating every shape against the config and every value as
    finite. where_is: the file a tensor comes from, for the errors (default `where`)."""
    expected = param_shapes(cfg)

    def fetch(hf_name: str, path: str, transpose: bool, want: tuple[int, ...]) -> np.ndarray:
        if not has(hf_name):
            raise KeyError(f"{where}: missing tensor {hf_name!r} (needed for parameter {path!r})")
        t = get(hf_name)
        at = where if where_is is None else where_is(hf_name)
        _check_shape(at, hf_name, path, t.shape, transpose, want)
        return _check_finite(at, hf_name, np.asarray(t.T if transpose else t, dtype=dtype))

    flat = {}
    for path, (names, transpose) in tensor_plan(cfg, prefix).items():
        if isinstance(names, tuple):  # stacked layers
            flat[path] = np.stack([fetch(n, path, transpose, expected[path][1:]) for n in names])
        else:
            flat[path] = fetch(names, path, transpose, expected[path])
    return _nest(flat)


def sharded_params(
    source: TensorSource, cfg: ModelConfig, prefix: str, shardings: Callable[[Any], Any], dtype=np.float32
) -> Params:
    """Every parameter read straight into its sharding: each device's shard is read from disk slice by slice (a
    stacked layer parameter one layer at a time), so no host or device ever holds a whole sharded tensor, and a
    process of a multi-host run reads only what its own devices hold. `shardings` maps the abstract parameter
    tree (`ShapeDtypeStruct`s) to a tree of `jax.sharding.Sharding`s, e.g. `tree_shardings(..., mesh)`.
    Every tensor is checked from the file headers before any tensor data is read (`check_tensors`), and every
    slice read is checked for NaN and infinite values."""
    expected = param_shapes(cfg)
    plan = tensor_plan(cfg, prefix)
    check_tensors(source, cfg, prefix)
    abstract = jax.eval_shape(lambda: init_params(cfg, jax.random.key(0)))
    sharding_of = dict(named_leaves(shardings(abstract)))

    def read(name: str, index: tuple[slice, ...], transpose: bool) -> np.ndarray:
        t = source.read(name, index[::-1] if transpose else index)
        return _check_finite(str(source.files[name]), name, np.asarray(t.T if transpose else t, dtype=dtype))

    def shard(names, transpose: bool, index: tuple[slice, ...]) -> np.ndarray:
        if not isinstance(names, tuple):
            return read(names, index, transpose)
        layers = range(len(names))[index[0]]
        return np.stack([read(names[i], index[1:], transpose) for i in layers])

    flat = {
        path: jax.make_array_from_callback(
            expected[path],
            sharding_of[path],
            lambda index, names=names, transpose=transpose: shard(names, transpose, index),
            dtype=dtype,
        )
        for path, (names, transpose) in plan.items()
    }
    return _nest(flat)


def load_hf(
    directory: str | pathlib.Path, dtype=np.float32, shardings: Callable[[Any], Any] | None = None
) -> tuple[ModelConfig, Params]:
    """Config and parameters of a Hugging Face directory: NumPy arrays on the host, or with `shardings` (abstract
    parameter tree -> shardings) `jax.Array`s read shard by shard into them (see `sharded_params`)."""
    directory = pathlib.Path(directory)
    config_file = directory / "config.json"
    if not config_file.exists():
        raise FileNotFoundError(f"{config_file}: not found; a Hugging Face model directory needs config.json")
    try:
        hf = json.loads(config_file.read_text())
    except ValueError as e:
        raise ValueError(f"{config_file}: not valid JSON ({e})") from e
    if not isinstance(hf, dict):
        raise ValueError(f"{config_file}: holds a {type(hf).__name__}, not a JSON object")
    cfg = config_from_hf(hf, source=str(config_file))
    source = TensorSource(directory)
    prefix = _prefix(source)
    if shardings is not None:
        return cfg, sharded_params(source, cfg, prefix, shardings, dtype)
    check_tensors(source, cfg, prefix)
    params = params_from_tensors(
        source.get, source.__contains__, cfg, prefix, str(directory), dtype, where_is=lambda n: str(source.files[n])
    )
    return cfg, params


def params_to_tensors(params: Params, cfg: ModelConfig) -> dict[str, np.ndarray]:
    out = {
        "model.embed_tokens.weight": np.asarray(params["embed"]),
        "model.norm.weight": np.asarray(params["final_norm"]),
    }
    if not cfg.tie_embeddings:
        out["lm_head.weight"] = np.ascontiguousarray(np.asarray(params["lm_head"]).T)
    for name, suffix in layer_names(cfg).items():
        stacked = np.asarray(params["layers"][name])
        for i in range(cfg.num_layers):
            t = stacked[i].T if name in _TRANSPOSED else stacked[i]
            out[f"model.layers.{i}.{suffix}"] = np.ascontiguousarray(t)
    return out


def save_hf(
    directory: str | pathlib.Path,
    cfg: ModelConfig,
    params: Params,
    extra_files: Mapping[str, str] | None = None,
) -> pathlib.Path:
    """Write `model.safetensors`, `config.json` (read right by transformers 4 and 5), `generation_config.json`
    (the special token ids) and `extra_files` (e.g. the tokenizer's)."""
    directory = pathlib.Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tensors = params_to_tensors(params, cfg)
    safetensors.numpy.save_file(tensors, directory / "model.safetensors", metadata={"format": "pt"})
    dtypes = {str(t.dtype) for t in tensors.values()}
    dtype = dtypes.pop() if len(dtypes) == 1 else "float32"
    hf = config_to_hf(cfg, dtype="bfloat16" if dtype == "bfloat16" else "float32")
    (directory / "config.json").write_text(json.dumps(hf, indent=2))
    generation = {k: hf[k] for k in ("bos_token_id", "eos_token_id", "pad_token_id") if hf.get(k) is not None}
    (directory / "generation_config.json").write_text(json.dumps(generation, indent=2))
    for name, text in (extra_files or {}).items():
        (directory / name).write_text(text)
    return directory
