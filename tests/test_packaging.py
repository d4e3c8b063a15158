"""pyproject.toml installs every package directory: a subpackage missing from the explicit list
would import in the editable checkout but vanish from `pip install .`."""

from __future__ import annotations

import tomllib

from conftest import REPO_ROOT


def test_every_package_directory_is_listed_in_pyproject() -> None:
    config = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(config["packages"])
    roots = {name: REPO_ROOT / path for name, path in config["package-dir"].items()}
    found = set()
    for name, root in roots.items():
        found.add(name)
        for init in root.rglob("__init__.py"):
            rel = init.parent.relative_to(root)
            if rel.parts:
                found.add(".".join((name, *rel.parts)))
    for mapped in roots:
        for other, root in roots.items():
            if other != mapped and roots[mapped].is_relative_to(root):
                found.discard(".".join((other, *roots[mapped].relative_to(root).parts)))
    assert found == listed
