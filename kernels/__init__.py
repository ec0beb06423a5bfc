"""Attention kernels behind one entry point: `kernels.attention(q, k, v, mask_spec=..., impl=...)`.

Installed, this folder is `bitune_jax.kernels`. From the repository root (`python -m ...` puts the root first on
sys.path) it is also found under the bare name `kernels`, which belongs to Hugging Face's distribution that
transformers >= 5.25 imports when it loads. Under that name it hands itself over to the installed distribution when
there is one, so transformers, lm-eval and peft work from the root.
"""

import sys


def _hand_over_the_bare_name() -> bool:
    """Load the next `kernels` on sys.path (not this repository's) in this module's place; False if there is none."""
    import importlib.machinery
    import importlib.util
    import os

    root = os.path.dirname(os.path.dirname(os.path.realpath(__file__)))
    path = [p for p in sys.path if os.path.realpath(p or os.curdir) != root]
    spec = importlib.machinery.PathFinder.find_spec("kernels", path)
    if spec is None or spec.loader is None or spec.origin is None:  # none, or a folder without __init__.py
        return False
    module = importlib.util.module_from_spec(spec)
    sys.modules["kernels"] = module  # the import statement returns what sys.modules holds once this body ends
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules["kernels"]
        raise
    return True


if __name__ != "kernels" or not _hand_over_the_bare_name():
    from .attention import IMPLS, MaskSpec, attention, dense_mask, resolve_impl
    from .blockwise_attention import blockwise_attention
    from .flash_attention import BlockSizes, flash_attention
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
