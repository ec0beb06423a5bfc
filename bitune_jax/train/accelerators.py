"""Datasheet peak FLOP/s of known accelerators, the denominator of an honest MFU.

A measured matmul peak flatters a slow step (it is what this device reaches, not what it is sold as), so MFU is
taken against the datasheet where the device is known and against a measured matmul only as the fallback; the log
says which. Dense (no sparsity) figures per chip, bf16 on the matrix units; float32 runs on GPUs count TF32 tensor
cores, as XLA uses them for float32 matmuls by default.
"""

from __future__ import annotations

# (substring of jax.Device.device_kind, lower-cased) -> (bf16 FLOP/s, float32 FLOP/s). First match wins: more
# specific names first ("tpu v5 lite" before "tpu v5").
PEAKS: tuple[tuple[str, float, float], ...] = (
    ("h200", 989e12, 495e12),
    ("h100", 989e12, 495e12),  # SXM; the PCIe part is lower and reports "H100 PCIe"
    ("a100", 312e12, 156e12),
    ("l4", 121e12, 60e12),
    ("tpu v6 lite", 918e12, 918e12),  # v6e: XLA runs float32 matmuls as bf16 passes by default on TPU
    ("tpu v6e", 918e12, 918e12),
    ("tpu v5 lite", 197e12, 197e12),  # v5e
    ("tpu v5e", 197e12, 197e12),
    ("tpu v5p", 459e12, 459e12),
    ("tpu v5", 459e12, 459e12),
    ("tpu v4", 275e12, 275e12),
)


def datasheet_peak(device_kind: str, dtype: str) -> float | None:
    """Peak FLOP/s of one chip named `device_kind` computing in `dtype` ("bfloat16" / "float32"), None if unknown."""
    kind = device_kind.lower()
    if "pcie" in kind:
        return None  # PCIe variants differ from the SXM figures; measure instead
    for name, bf16, f32 in PEAKS:
        if name in kind:
            return bf16 if dtype == "bfloat16" else f32
    return None


def peak_flops(device_kind: str, dtype: str, measure) -> tuple[float, str]:
    """`(FLOP/s of one device, where the figure comes from)`; `measure()` is called only for unknown devices."""
    known = datasheet_peak(device_kind, dtype)
    if known is not None:
        return known, f"datasheet {dtype} peak of {device_kind}"
    return float(measure()), f"measured {dtype} matmul peak of {device_kind} (not in the datasheet table)"
