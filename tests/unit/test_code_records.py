"""worker/code.py: which module files a worker's code reaches, and the hashes of its own imports."""

from __future__ import annotations

import importlib
import importlib.metadata
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from supervisor_tree.worker import code


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A small project: app/ (a package), a helper module, and a module nothing refers to."""
    (tmp_path / "proj_app").mkdir()
    (tmp_path / "proj_app" / "__init__.py").write_text("")
    (tmp_path / "proj_app" / "workers.py").write_text(
        "from proj_helper import helper\nimport proj_consts\n\nclass Thing:\n    def run(self):\n        return helper()\n"
    )
    (tmp_path / "proj_helper.py").write_text("def helper():\n    return 1\n")
    (tmp_path / "proj_consts.py").write_text("X = 1\n")
    (tmp_path / "proj_unrelated.py").write_text("Y = 2\n")
    site = tmp_path / ".venv" / "lib" / "site-packages"
    site.mkdir(parents=True)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(sys, "meta_path", list(sys.meta_path))
    monkeypatch.setattr(code, "_recorder", None)
    yield tmp_path
    for name in [n for n in sys.modules if n.startswith("proj_")]:
        del sys.modules[name]


def test_the_closure_follows_imports_names_and_parent_packages_but_not_unrelated_modules(project: Path) -> None:
    roots = code.code_roots([str(project)])
    importlib.import_module("proj_app.workers")
    importlib.import_module("proj_unrelated")
    files = code.closure(["proj_app.workers"], roots)
    names = sorted(Path(f).relative_to(project).as_posix() for f in files if f.startswith(str(project)))
    assert names == ["proj_app/__init__.py", "proj_app/workers.py", "proj_consts.py", "proj_helper.py"]


def test_installed_packages_inside_a_root_do_not_count(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    site = str(project / ".venv" / "lib" / "site-packages") + "/"
    monkeypatch.setattr(code, "_EXCLUDED", (site,))
    roots = code.code_roots([str(project)])
    assert code.counts(str(project / "proj_helper.py"), roots)
    assert not code.counts(site + "somepkg/mod.py", roots)
    assert not code.counts("/elsewhere/mod.py", roots)


def test_own_imports_are_hashed_as_they_are_imported(project: Path) -> None:
    code.record_imports(code.code_roots([str(project)]))
    importlib.import_module("proj_helper")
    path = str(project / "proj_helper.py")
    loaded = code.own_files()
    assert list(loaded) == [path]
    (project / "proj_helper.py").write_text("def helper():\n    return 2\n")  # changed after the import
    assert code.own_files() == loaded  # what was loaded, not what is on disk now
    assert loaded[path] != code.file_hash(path)
    assert importlib.metadata.version("pyzmq")  # the wrapped finder still finds distributions
