"""The layering rules of docs/architecture.md, enforced: packages import only the layers below them, and no two
modules import each other (directly or round a loop), counting function-local imports too."""

import ast
import collections
import pathlib

ROOT = pathlib.Path(__file__).resolve().parents[1]

# Bottom to top; a unit may import the units before it (and itself). A unit is a subpackage of bitune_jax or one of
# its top-level modules; `bitune_jax` itself (its __init__) is the public face, right above `api`.
LAYERS = (
    "kernels",
    "tree_paths",
    "losses",
    "sampling",
    "tokenizer",
    "chat",
    "peft",
    "models",
    "generation",
    "data",
    "bitune",
    "checkpoints",
    "engine",
    "api",
    "bitune_jax",
    "eval",
    "tasks",
    "train",
    "generate",
    "export",
)
# Command lines over trained runs: thin shells at the top, which may import any layer.
SHELLS = ("bitune_jax.eval.harness", "bitune_jax.eval.gsm8k")


def module_name(path: pathlib.Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[0] == "kernels":  # installed as bitune_jax.kernels
        parts = ["bitune_jax", *parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def unit(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "bitune_jax"


def imports() -> dict[str, set[str]]:
    """Every bitune_jax module -> the bitune_jax modules it imports anywhere in its body."""
    files = [*ROOT.glob("bitune_jax/**/*.py"), *ROOT.glob("kernels/**/*.py")]
    known = {module_name(p) for p in files}
    out: dict[str, set[str]] = {}
    for path in files:
        name = module_name(path)
        package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
        found: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = ".".join(package[: len(package) - node.level + 1]) if node.level else ""
                module = ".".join(x for x in (base, node.module or "") if x)
                # `from pkg import sub` depends on pkg.sub; `from mod import name` on mod
                subs = [f"{module}.{a.name}" for a in node.names if f"{module}.{a.name}" in known]
                targets = subs if len(subs) == len(node.names) else [module, *subs]
            else:
                continue
            found |= {t for t in targets if t in known and t != name}
        out[name] = found
    return out


def test_every_import_goes_down_the_layers():
    rank = {u: i for i, u in enumerate(LAYERS)}
    upward = []
    for module, targets in imports().items():
        assert unit(module) in rank, f"{module}: add its unit to LAYERS (and to docs/architecture.md)"
        if module in SHELLS:
            continue
        for target in targets:
            if rank[unit(target)] > rank[unit(module)]:
                upward.append(f"{module} -> {target}")
    assert not upward, "imports against the layering (docs/architecture.md):\n" + "\n".join(sorted(upward))


def test_no_module_imports_itself_round_a_loop():
    graph = imports()
    parents = {m: m.rsplit(".", 1)[0] for m in graph}
    # importing a.b.c runs a.b's __init__ first: a module's imports are its own, not its package's
    graph = {m: {t for t in ts if t != parents.get(m)} for m, ts in graph.items()}
    state: dict[str, int] = collections.defaultdict(int)  # 0 new, 1 on the path, 2 done
    cycles = []

    def visit(m: str, path: list[str]) -> None:
        state[m] = 1
        for t in sorted(graph.get(m, ())):
            if state[t] == 1:
                cycles.append(" -> ".join([*path[path.index(t) :], t]))
            elif state[t] == 0:
                visit(t, [*path, t])
        state[m] = 2

    for m in sorted(graph):
        if state[m] == 0:
            visit(m, [m])
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


def test_architecture_page_names_every_unit():
    page = (ROOT / "docs" / "architecture.md").read_text()
    missing = [u for u in LAYERS if f"`{u}`" not in page]
    assert not missing, f"docs/architecture.md does not describe {missing}"


TORCH = ("torch", "transformers", "peft")  # transformers and peft import torch


def module_level_imports(path: pathlib.Path) -> set[str]:
    """The modules importing `path` imports (and their parent packages): its top-level statements, inside `if` and
    `try` too, but not function bodies nor `if TYPE_CHECKING:` blocks."""
    found: set[str] = set()

    def walk(stmts) -> None:
        for node in stmts:
            if isinstance(node, ast.Import):
                found.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
                found.update([node.module, *(f"{node.module}.{a.name}" for a in node.names)])
            elif isinstance(node, ast.If) and not (isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING"):
                walk(node.body + node.orelse)
            elif isinstance(node, ast.Try):
                walk(node.body + node.orelse + node.finalbody + [s for h in node.handlers for s in h.body])

    walk(ast.parse(path.read_text()).body)
    return {".".join(m.split(".")[: i + 1]) for m in found for i in range(m.count(".") + 1)}


def test_collecting_the_tests_imports_no_torch():
    """Collecting either tier imports every test module, and the unit tier needs no torch (seconds of import):
    torch, transformers and peft are imported in the bodies of the integration tests that use them, never when a
    test module, conftest, or anything they import at module level (tests/hf_tiny.py) is imported."""
    files = [*ROOT.glob("bitune_jax/**/*.py"), *ROOT.glob("kernels/**/*.py"), *ROOT.glob("experiments/**/*.py")]
    files += ROOT.glob("tests/**/*.py")
    graph = {module_name(p): module_level_imports(p) for p in files}
    heavy = set(TORCH)
    while grown := {m for m, targets in graph.items() if m not in heavy and targets & heavy}:
        heavy |= grown
    collected = [
        module_name(p) for p in ROOT.glob("tests/**/*.py") if p.name.startswith("test_") or p.name == "conftest.py"
    ]
    offenders = sorted(m for m in collected if m in heavy)
    assert "tests.hf_tiny" in heavy  # the check sees through a helper
    assert not offenders, f"these import torch when collected (import it inside the tests that use it): {offenders}"


LONG_MODULE = 420  # lines; docs/architecture.md: "no module over ~400 lines without a stated reason"


def test_every_long_module_says_why_it_is_long():
    """A module over ~400 lines (outside tests/) states in its docstring why it is not split ("Why this module is
    longer than ..."), so size is a decision someone wrote down, not drift."""
    files = [p for d in ("bitune_jax", "kernels", "experiments", "benchmarks") for p in ROOT.glob(f"{d}/**/*.py")]
    long = {p: len(p.read_text().splitlines()) for p in files if len(p.read_text().splitlines()) > LONG_MODULE}
    unexplained = [
        f"{p.relative_to(ROOT)} ({n} lines)"
        for p, n in long.items()
        if "Why this module is longer" not in (ast.get_docstring(ast.parse(p.read_text())) or "")
    ]
    assert not unexplained, f"split these, or say in their docstring why not: {unexplained}"
