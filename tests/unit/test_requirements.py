"""The delivery jobs install requirements-deploy.txt only (no TensorFlow): it must cover
every module the deploy path imports, and the deploy path must not import TensorFlow."""

from __future__ import annotations

import ast
import subprocess
import sys
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]
# The local model server and its command need TensorFlow: they are not the deploy path.
NOT_DEPLOY = ("scripts/serving/", "scripts/commands/serve.py")
HEAVY = ("tensorflow", "keras", "sklearn", "starlette", "uvicorn")
IN_LOCUST = ("locustfile_rest.py", "locustfile_grpc.py", "openloop.py")


def _deploy_modules() -> list[Path]:
    return [
        p
        for p in sorted((ROOT / "scripts").rglob("*.py"))
        if not str(p.relative_to(ROOT)).startswith(NOT_DEPLOY)
    ]


def _imported_top_levels() -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for path in _deploy_modules():
        for node in ast.walk(ast.parse(path.read_text())):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            for name in names:
                top = name.split(".")[0]
                if top != "scripts" and top not in sys.stdlib_module_names:
                    found.setdefault(top, set()).add(str(path.relative_to(ROOT)))
    return found


def _requirement_names(path: Path) -> set[str]:
    names = set()
    for raw in path.read_text().splitlines():
        line = raw.split("#", 1)[0].strip()
        if line and not line.startswith("-"):
            names.add(canonicalize_name(Requirement(line).name))
    return names


def _closure(names: set[str]) -> set[str]:
    seen: set[str] = set()
    pending = list(names)
    while pending:
        name = pending.pop()
        if name in seen:
            continue
        seen.add(name)
        for text in metadata.requires(name) or []:
            requirement = Requirement(text)
            if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
                pending.append(canonicalize_name(requirement.name))
    return seen


def test_requirements_deploy_installs_every_module_the_deploy_path_imports() -> None:
    direct = _requirement_names(ROOT / "requirements-deploy.txt")
    nodeps = _requirement_names(ROOT / "requirements-nodeps.txt")  # installed --no-deps
    installed = _closure(direct) | nodeps
    assert "tensorflow-cpu" not in installed and "tensorflow" not in installed
    providers = metadata.packages_distributions()
    missing = {}
    for module, where in _imported_top_levels().items():
        dists = {canonicalize_name(d) for d in providers.get(module, [])}
        if not dists & installed:
            missing[module] = (sorted(dists), sorted(where))
    assert not missing, (
        f"imported by the deploy path, not installed by requirements-deploy.txt: {missing}"
    )


def test_the_deploy_path_imports_without_tensorflow() -> None:
    # Import every deploy-path module with TensorFlow (and the model server's stack)
    # made unimportable, as in a job that installed requirements-deploy.txt only.
    modules = [
        ".".join(p.relative_to(ROOT).with_suffix("").parts)
        for p in _deploy_modules()
        # These run inside Locust's own process, where gevent patches first.
        if p.name not in ("__main__.py", *IN_LOCUST)
    ]
    code = (
        "import importlib, sys\n"
        f"HEAVY = {HEAVY!r}\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in HEAVY:\n"
        "            raise ImportError(f'{name} is not installed in a delivery job')\n"
        "sys.meta_path.insert(0, Block())\n"
        f"for module in {modules!r}:\n"
        "    importlib.import_module(module)\n"
        "from scripts.cli import build_parser\n"
        "build_parser()\n"
        "print(len(sys.modules))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
