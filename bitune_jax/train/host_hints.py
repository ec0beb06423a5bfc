"""Settings that speed a run up but must be made before Python starts, so the code cannot make them itself: the
run prints each one that would help on this host and is missing (docs/scaling.md, "CPU hosts: huge pages")."""

from __future__ import annotations

import os
import platform
from collections.abc import Mapping

HUGE_PAGES = "glibc.malloc.hugetlb=1"
MIN_GLIBC = (2, 35)  # the first glibc with the hugetlb tunable


def environment_hints(backend: str, system: str, libc: tuple[str, str], env: Mapping[str, str]) -> list[str]:
    """The lines to print for `backend` ("cpu", "gpu", "tpu") on `system` (`platform.system()`) with `libc`
    (`platform.libc_ver()`) and the environment `env`: today one, huge-page-backed buffers for XLA:CPU on glibc
    >= 2.35 (1.14-1.15x tokens/s on SmolLM2, `benchmarks.cpu_allocator`)."""
    name, version = libc
    if backend != "cpu" or system != "Linux" or name != "glibc":
        return []
    try:
        if tuple(int(p) for p in version.split(".")[:2]) < MIN_GLIBC:
            return []
    except ValueError:
        return []
    if "glibc.malloc.hugetlb" in env.get("GLIBC_TUNABLES", ""):
        return []
    value = ":".join(t for t in (env.get("GLIBC_TUNABLES", ""), HUGE_PAGES) if t)
    return [
        f"hint: this CPU run would be ~1.15x faster with huge-page-backed buffers; start it with "
        f"GLIBC_TUNABLES={value} (set before Python starts; docs/scaling.md, 'CPU hosts: huge pages')"
    ]


def hints_for_this_host(backend: str) -> list[str]:
    return environment_hints(backend, platform.system(), platform.libc_ver(), os.environ)
