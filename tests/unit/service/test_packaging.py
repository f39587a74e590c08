"""The installed package must run with its runtime dependencies alone: CI installs the
dev extras too, so a third-party import missing from [project.dependencies] would
pass CI and still crash `pip install . && poet-grpc serve`."""

import ast
import re
import sys
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def test_every_third_party_import_is_a_runtime_dependency():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = {_normalise(re.split(r"[<>=!~ \[;]", d, maxsplit=1)[0]) for d in project["dependencies"]}
    owners = packages_distributions()
    missing = {}
    for path in (ROOT / "poet_grpc").rglob("*.py"):
        if "_gen" in path.parts:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                roots = [alias.name.split(".")[0] for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                roots = [node.module.split(".")[0]]
            else:
                continue
            for root in roots:
                if root in sys.stdlib_module_names or root == "poet_grpc":
                    continue
                distributions = {_normalise(d) for d in owners.get(root, [])}
                if not distributions & declared:
                    missing.setdefault(root, set()).add(str(path.relative_to(ROOT)))
    assert not missing, f"imported but not in [project.dependencies]: {missing}"
