"""Package layering: importing dyntex or its numpy-only evaluation modules does not pull in
torch, and the dyntex library never imports its evaluation package (no cycle)."""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# Modules that work on numpy arrays only (torch is imported where CoopNets or the PS statistics
# are actually used, inside functions).
TORCH_FREE = ["dyntex", "dyntex.errors", "dyntex.config", "dyntex.video", "dyntex.inputs",
              "dyntex.sample_data", "dyntex.eval.baselines", "dyntex.eval.baselines.lds",
              "dyntex.eval.baselines.hosvd", "dyntex.eval.baselines.fftlds",
              "dyntex.eval.calibration", "dyntex.eval.loading", "dyntex.eval.metrics",
              "dyntex.eval.settings", "dyntex.eval.runs", "dyntex.eval.tables",
              "dyntex.eval.benchmark"]


@pytest.mark.parametrize("module", TORCH_FREE)
def test_numpy_only_modules_do_not_import_torch(module):
    code = f"import sys, {module}; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module if node.level == 0 else "." * node.level + node.module)
    return names


def test_the_library_does_not_import_the_evaluation_package():
    offenders = {}
    for path in sorted((REPO / "dyntex").rglob("*.py")):
        bad = {n for n in _imports(path) if n == "eval" or n.startswith(("eval.", "dyntex.eval", ".eval"))}
        if bad:
            offenders[str(path.relative_to(REPO))] = sorted(bad)
    assert offenders == {}
