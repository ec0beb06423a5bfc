"""Hugging Face safetensors directories (single file or sharded index) <-> parameter pytrees."""

from __future__ import annotations

import json
import pathlib
from collections.abc import Callable, Mapping

import numpy as np
import safetensors
import safetensors.numpy

from bitune_jax.checkpoints.hf_config import config_from_hf, config_to_hf
from bitune_jax.models.config import ModelConfig
from bitune_jax.models.transformer import NORMS_BY_LAYOUT, Params, param_shapes

_PROJ = {
    "q_proj": "self_attn.q_proj.weight", "k_proj": "self_attn.k_proj.weight",
    "v_proj": "self_attn.v_proj.weight", "o_proj": "self_attn.o_proj.weight",
    "q_norm": "self_attn.q_norm.weight", "k_norm": "self_attn.k_norm.weight",
    "gate_proj": "mlp.gate_proj.weight", "up_proj": "mlp.up_proj.weight", "down_proj": "mlp.down_proj.weight",
}
_NORMS = {
    "pre": {"attn_in_norm": "input_layernorm.weight", "mlp_in_norm": "post_attention_layernorm.weight"},
    "post": {"attn_out_norm": "post_attention_layernorm.weight", "mlp_out_norm": "post_feedforward_layernorm.weight"},
    "sandwich": {
        "attn_in_norm": "input_layernorm.weight", "attn_out_norm": "post_attention_layernorm.weight",
        "mlp_in_norm": "pre_feedforward_layernorm.weight", "mlp_out_norm": "post_feedforward_layernorm.weight",
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


class TensorSource:
    """Lazy reader over one or many `.safetensors` files; knows which file holds which tensor."""

    def __init__(self, directory: pathlib.Path):
        self.directory = directory
        index = directory / "model.safetensors.index.json"
        if index.exists():
            weight_map = json.loads(index.read_text())["weight_map"]
            self.files = {name: directory / f for name, f in weight_map.items()}
        else:
            files = sorted(directory.glob("*.safetensors"))
            if not files:
                raise FileNotFoundError(f"{directory}: no *.safetensors file and no model.safetensors.index.json")
            self.files = {}
            for f in files:
                with safetensors.safe_open(f, framework="numpy") as h:
                    self.files.update({name: f for name in h.keys()})
        self._handles: dict[pathlib.Path, object] = {}

    def __contains__(self, name: str) -> bool:
        return name in self.files

    def get(self, name: str) -> np.ndarray:
        f = self.files[name]
        if not f.exists():
            raise FileNotFoundError(f"{f}: listed in the index for tensor {name!r} but missing")
        if f not in self._handles:
            self._handles[f] = safetensors.safe_open(f, framework="numpy")
        return self._handles[f].get_tensor(name)


def _prefix(source: TensorSource) -> str:
    for p in ("model.", "model.language_model.", "language_model.model."):
        if p + "embed_tokens.weight" in source:
            return p
    raise KeyError(f"{source.directory}: no embed_tokens.weight under any known prefix; is this a decoder LM?")


def params_from_tensors(
    get: Callable[[str], np.ndarray], has: Callable[[str], bool], cfg: ModelConfig, prefix: str, where: str,
    dtype=np.float32,
) -> Params:
    """Assemble the parameter pytree, validating every shape against the config."""
    expected = param_shapes(cfg)

    def fetch(hf_name: str, path: str, transpose: bool) -> np.ndarray:
        if not has(hf_name):
            raise KeyError(f"{where}: missing tensor {hf_name!r} (needed for parameter {path!r})")
        t = get(hf_name)
        t = t.T if transpose else t
        want = expected[path][1:] if path.startswith("layers/") else expected[path]
        if tuple(t.shape) != tuple(want):
            raise ValueError(
                f"{where}: tensor {hf_name!r} has shape {tuple(t.shape)} after conversion, "
                f"but parameter {path!r} expects {tuple(want)} for this config"
            )
        return np.asarray(t, dtype=dtype)

    params: Params = {"embed": fetch(prefix + "embed_tokens.weight", "embed", False)}
    params["final_norm"] = fetch(prefix + "norm.weight", "final_norm", False)
    if not cfg.tie_embeddings:
        params["lm_head"] = fetch("lm_head.weight", "lm_head", True)
    layers = {}
    for name, suffix in layer_names(cfg).items():
        layers[name] = np.stack([
            fetch(f"{prefix}layers.{i}.{suffix}", f"layers/{name}", name in _TRANSPOSED)
            for i in range(cfg.num_layers)
        ])
    params["layers"] = layers
    return params


def load_hf(directory: str | pathlib.Path, dtype=np.float32) -> tuple[ModelConfig, Params]:
    directory = pathlib.Path(directory)
    config_file = directory / "config.json"
    if not config_file.exists():
        raise FileNotFoundError(f"{config_file}: not found; a Hugging Face model directory needs config.json")
    cfg = config_from_hf(json.loads(config_file.read_text()), source=str(config_file))
    source = TensorSource(directory)
    params = params_from_tensors(source.get, source.__contains__, cfg, _prefix(source), str(directory), dtype)
    return cfg, params


def params_to_tensors(params: Params, cfg: ModelConfig) -> dict[str, np.ndarray]:
    out = {"model.embed_tokens.weight": np.asarray(params["embed"]),
           "model.norm.weight": np.asarray(params["final_norm"])}
    if not cfg.tie_embeddings:
        out["lm_head.weight"] = np.ascontiguousarray(np.asarray(params["lm_head"]).T)
    for name, suffix in layer_names(cfg).items():
        stacked = np.asarray(params["layers"][name])
        for i in range(cfg.num_layers):
            t = stacked[i].T if name in _TRANSPOSED else stacked[i]
            out[f"model.layers.{i}.{suffix}"] = np.ascontiguousarray(t)
    return out


def save_hf(
    directory: str | pathlib.Path, cfg: ModelConfig, params: Params, extra_files: Mapping[str, str] | None = None,
) -> pathlib.Path:
    """Write `model.safetensors` + `config.json` (+ e.g. tokenizer files) that `transformers` loads."""
    directory = pathlib.Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    safetensors.numpy.save_file(params_to_tensors(params, cfg), directory / "model.safetensors",
                                metadata={"format": "pt"})
    (directory / "config.json").write_text(json.dumps(config_to_hf(cfg), indent=2))
    for name, text in (extra_files or {}).items():
        (directory / name).write_text(text)
    return directory
