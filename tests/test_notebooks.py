"""The notebooks run end to end (on CPU, with a small setting), so they cannot rot.

Each notebook is executed with nbclient in a Jupyter kernel started from this interpreter (not whatever `python3`
kernel happens to be registered on the machine), with the size knob set small through the kernel's environment.
"""

import json
import math
import pathlib
import re
import shutil
import sys

import nbformat
import pytest
from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import KernelManager
from nbclient import NotebookClient

pytestmark = pytest.mark.integration  # the integration tier: python -m pytest -m integration

NOTEBOOKS = pathlib.Path(__file__).resolve().parent.parent / "notebooks"
CELL_TIMEOUT_S = 600


def run_notebook(path: pathlib.Path, tmp_path: pathlib.Path, env: dict[str, str]) -> nbformat.NotebookNode:
    """Execute `path` in a kernel of this interpreter; the executed copy is left in `tmp_path` for debugging."""
    spec_dir = tmp_path / "kernels" / "bitune-test"
    spec_dir.mkdir(parents=True)
    (spec_dir / "kernel.json").write_text(
        json.dumps(
            {
                "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
                "display_name": "bitune_jax test",
                "language": "python",
                "env": env,
            }
        )
    )
    km = KernelManager(
        kernel_name="bitune-test",
        kernel_spec_manager=KernelSpecManager(kernel_dirs=[str(spec_dir.parent)], ensure_native_kernel=False),
    )
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(nb, km=km, timeout=CELL_TIMEOUT_S, resources={"metadata": {"path": str(path.parent)}})
    try:
        client.execute(cleanup_kc=True)  # a client given its own kernel manager leaves the kernel up otherwise
    finally:
        nbformat.write(nb, tmp_path / path.name)
    return nb


def cell_text(nb: nbformat.NotebookNode, tag: str) -> str:
    """Everything the cell tagged `tag` printed (stdout, stderr, results)."""
    cells = [c for c in nb.cells if tag in c.get("metadata", {}).get("tags", [])]
    assert len(cells) == 1, f"expected one cell tagged {tag!r}, found {len(cells)}"
    parts = []
    for out in cells[0].get("outputs", []):
        if out["output_type"] == "stream":
            parts.append(out["text"])
        elif out["output_type"] in ("execute_result", "display_data"):
            parts.append(out.get("data", {}).get("text/plain", ""))
        elif out["output_type"] == "error":
            parts.append("\n".join(out["traceback"]))
    return "".join(parts)


def test_committed_notebooks_have_no_outputs():
    for path in sorted(NOTEBOOKS.glob("*.ipynb")):
        nb = nbformat.read(path, as_version=4)
        nbformat.validate(nb)
        for i, cell in enumerate(nb.cells):
            if cell.cell_type == "code":
                assert not cell.outputs and cell.execution_count is None, f"{path.name} cell {i} has outputs"


def test_quickstart_runs(tmp_path):
    steps = 3
    nb = run_notebook(NOTEBOOKS / "quickstart.ipynb", tmp_path, {"BITUNE_NOTEBOOK_STEPS": str(steps)})
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []) if o.output_type == "error"]
    assert not errors, errors

    # The install cell must not touch pip when the package is importable (as here).
    assert "bitune_jax already importable: skipping pip" in cell_text(nb, "install")
    assert re.search(r"accelerator: (CPU|GPU|TPU)", cell_text(nb, "accelerator"))
    chat = cell_text(nb, "chat")
    assert "Paris" in chat, chat

    losses = [float(x) for x in re.findall(r"^step +\d+/\d+ +loss (\S+)", cell_text(nb, "train"), re.M)]
    assert len(losses) == steps, cell_text(nb, "train")
    assert all(math.isfinite(x) for x in losses), losses
    alphas = cell_text(nb, "alphas")
    means = [float(x) for x in re.findall(r"alpha_[KV]: mean (\S+),", alphas)]
    assert len(means) == 2 and all(0.0 <= m <= 1.0 for m in means), alphas
    assert cell_text(nb, "generate").count(f"Bitune, {steps} updates |") == 2


def test_repetition_study_runs(tmp_path):
    budget = 4  # grid 4 x 1 and 1 x 4 (16 epochs would leave no sample)
    env = {
        "BITUNE_NOTEBOOK_BUDGET": str(budget),
        "BITUNE_NOTEBOOK_EVAL_ITEMS": "2",
        "BITUNE_NOTEBOOK_MAX_NEW_TOKENS": "16",
        "BITUNE_NOTEBOOK_WORKDIR": str(tmp_path / "runs"),
    }
    try:
        nb = run_notebook(NOTEBOOKS / "repetition_study.ipynb", tmp_path, env)
    finally:
        for checkpoints in (tmp_path / "runs").glob("*/checkpoints"):
            shutil.rmtree(checkpoints)  # each point's final state (model and AdamW moments): ~1.5 GB
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []) if o.output_type == "error"]
    assert not errors, errors

    assert "bitune_jax already importable: skipping pip" in cell_text(nb, "install")
    assert re.search(r"accelerator: (CPU|GPU|TPU)", cell_text(nb, "accelerator"))
    results = cell_text(nb, "results")
    points = re.findall(
        r"^point (\d+)x(\d+): updates (\d+), final token accuracy (\S+), held-out accuracy (\S+)$", results, re.M
    )
    assert [(int(n), int(e)) for n, e, *_ in points] == [(4, 1), (1, 4)], results
    for _, _, updates, token_acc, held_out in points:
        assert int(updates) == budget, results
        assert 0.0 <= float(token_acc) <= 1.0 and 0.0 <= float(held_out) <= 1.0, results
    shown = {
        tag: [o.get("data", {}) for c in nb.cells if tag in c.metadata.get("tags", []) for o in c.outputs]
        for tag in ("table", "plot")
    }
    assert any("| 1 x 4 | 4 |" in d.get("text/markdown", "") for d in shown["table"]), shown["table"]
    assert any("image/png" in d for d in shown["plot"])
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == ["1x4", "4x1", "figure.png"]


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-v"]))
