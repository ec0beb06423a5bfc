import os
import tempfile

os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

# Most of the suite's time is XLA compilation, and many tests (and the subprocesses and notebook kernels they start,
# which inherit the environment) compile the same programs. A persistent compilation cache private to this test
# run lets each program compile once: pytest-xdist workers share it through their common run id; a run without
# xdist gets its own directory. A fresh directory per run: nothing compiled by other code is ever reused.
_run_id = os.environ.get("PYTEST_XDIST_TESTRUNUID")
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
    os.environ["JAX_COMPILATION_CACHE_DIR"] = (
        os.path.join(tempfile.gettempdir(), f"bitune_jax_tests_{_run_id}")
        if _run_id
        else tempfile.mkdtemp(prefix="bitune_jax_tests_")
    )

# The unit tier compiles with LLVM's optimizations off (XLA's graph passes still run): most of its time is
# compilation, and every program it compiles is run once or twice on tiny shapes. Only float32 rounding can change
# (no fused multiply-adds), which every comparison's tolerance allows. The integration tier compiles as users do.
# A user's own XLA_FLAGS are kept and win.
FAST_COMPILE_FLAGS = "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true"


def pytest_configure(config):
    if "not integration" not in config.getoption("markexpr"):  # the unit tier's mark expression (pyproject.toml)
        return
    os.environ["XLA_FLAGS"] = " ".join(f for f in (FAST_COMPILE_FLAGS, os.environ.get("XLA_FLAGS", "")) if f)
