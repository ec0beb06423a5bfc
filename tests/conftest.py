import os
import tempfile

os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

# Most of the suite's time is XLA compilation, and many tests (and the subprocesses and notebook kernels they start,
# which inherit the environment) compile the same programs. A persistent compilation cache private to this test
# run lets each program compile once: pytest-xdist workers share it through their common run id; a run without
# xdist gets its own directory. A fresh directory per run: nothing compiled by other code is ever reused.
# And each compiles faster with LLVM's optimizations off (the XLA graph passes still run): the unit tier took 237 s
# instead of 312 s on 2 cores. Only float32 rounding can change (no fused multiply-adds), which every comparison's
# tolerance allows; a user's own XLA_FLAGS are kept and win.
FAST_COMPILE_FLAGS = "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true"
os.environ["XLA_FLAGS"] = " ".join(f for f in (FAST_COMPILE_FLAGS, os.environ.get("XLA_FLAGS", "")) if f)
_run_id = os.environ.get("PYTEST_XDIST_TESTRUNUID")
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
    os.environ["JAX_COMPILATION_CACHE_DIR"] = (
        os.path.join(tempfile.gettempdir(), f"bitune_jax_tests_{_run_id}")
        if _run_id
        else tempfile.mkdtemp(prefix="bitune_jax_tests_")
    )
