"""Attention kernels behind one entry point: `kernels.attention(q, k, v, mask_spec=..., impl=...)`.

Installed, this folder is `bitune_jax.kernels` (setup.cfg's `package_dir`). From the repository root, which
`python -m` and `python -c` put first on sys.path, Python also finds it under the bare name `kernels`, which is
Hugging Face's distribution (transformers >= 5.25 imports it when it loads). Imported under that name, this module
loads the next `kernels` on sys.path in its own place (an import statement returns whatever sys.modules holds once
the module body ends). With no other `kernels` it stays this package: transformers then imports the bare name to
look for a version, so the import must succeed.
"""

import importlib.machinery
import importlib.util
import os
import sys


def _next_kernels() -> importlib.machinery.ModuleSpec | None:
    """The spec of the first `kernels` on sys.path outside this repository's root, if it is a module or package."""
    root = os.path.dirname(os.path.dirname(os.path.realpath(__file__)))
    path = [p for p in sys.path if os.path.realpath(p or os.curdir) != root]
    spec = importlib.machinery.PathFinder.find_spec("kernels", path)
    return spec if spec is not None and spec.origin is not None else None  # origin None: a folder, no __init__.py


_theirs = _next_kernels() if __name__ == "kernels" else None
if _theirs is not None:  # the bare name: hand it over (if that fails, the import machinery drops the entry again)
    sys.modules[__name__] = importlib.util.module_from_spec(_theirs)
    _theirs.loader.exec_module(sys.modules[__name__])
else:
    from .attention import IMPLS, attention, resolve_impl
    from .blockwise_attention import blockwise_attention
    from .flash_attention import BlockSizes, flash_attention
    from .mask import MaskSpec, dense_mask
    from .sequence_parallel import SequenceParallel, sequence_parallel_attention

    __all__ = [
        "IMPLS",
        "BlockSizes",
        "MaskSpec",
        "SequenceParallel",
        "attention",
        "blockwise_attention",
        "dense_mask",
        "flash_attention",
        "resolve_impl",
        "sequence_parallel_attention",
    ]
