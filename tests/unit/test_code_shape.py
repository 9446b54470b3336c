"""The shape issue 13 asks of the code, checked from its source and the builder's output:

- no import cycle in pyinit/ or mkinitramfs/, counting the imports inside functions (the
  graph is read with ast from every import statement; `if TYPE_CHECKING:` blocks never run
  and are left out);
- no function in pyinit/ over 60 lines (from its `def` line to its last line);
- a default image carries no pyinit/testing (the fault injection the VM tests use is
  appended to an image by devtools/testimage.py, never built in).

The first tests run the checkers on small made-up packages: each must find what it is
there to find, so that a pass on the real code means something.
"""
from __future__ import annotations

import os
import textwrap

import pytest

from tests.support import codeshape
from tests.support.builder import REPO

pytestmark = pytest.mark.unit

PACKAGES = ("pyinit", "mkinitramfs")
# written by pyinit/_libc_build.py (cffi), not in git
GENERATED = frozenset({"pyinit/_libc.py"})
MAX_FUNCTION_LINES = 60


def _write(root, files: dict[str, str]) -> None:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))


def test_the_import_graph_follows_every_kind_of_import(tmp_path):
    _write(tmp_path, {
        "pkg/__init__.py": "",
        "pkg/a.py": """
            from pkg import b            # from PACKAGE import MODULE: pkg.b

            def later():
                from . import c          # inside a function, relative
                import pkg.d.e           # dotted
            """,
        "pkg/b.py": "from pkg import helper_in_init\n",  # a name of the package: pkg itself
        "pkg/c.py": """
            from typing import TYPE_CHECKING
            if TYPE_CHECKING:
                from pkg import a        # never runs: no edge
            else:
                from .b import x         # runs
            """,
        "pkg/d/__init__.py": "from .. import c\n",  # relative, two levels up from pkg.d's own package
        "pkg/d/e.py": "import os\nfrom ..a import later\n",
    })
    modules = codeshape.module_files(tmp_path, ("pkg",))
    graph = codeshape.import_graph(modules)
    edges = {name: sorted({e.imported for e in imports}) for name, imports in graph.items()}
    assert edges == {"pkg": [], "pkg.a": ["pkg.b", "pkg.c", "pkg.d.e"], "pkg.b": ["pkg"], "pkg.c": ["pkg.b"],
                     "pkg.d": ["pkg.c"], "pkg.d.e": ["pkg.a"]}
    # a -> d.e -> a: through an import inside a function, as the boot <-> hooks cycle was
    (cycle,) = codeshape.cycles(graph)
    assert [(e.importer, e.imported) for e in cycle] == [("pkg.a", "pkg.d.e"), ("pkg.d.e", "pkg.a")]
    assert codeshape.describe(cycle).startswith("pkg.a -> pkg.d.e -> pkg.a (pkg.a imports pkg.d.e at a.py:6;")


def test_every_cycle_is_reported_once_with_its_imports(tmp_path):
    _write(tmp_path, {"p/__init__.py": "", "p/x.py": "from p import y\n", "p/y.py": "def f():\n    import p.z\n",
                      "p/z.py": "from . import x\n", "p/u.py": "from p import v\n", "p/v.py": "import p.u\n",
                      "p/w.py": "from p import x\n"})
    found = codeshape.cycles(codeshape.import_graph(codeshape.module_files(tmp_path, ("p",))))
    assert [codeshape.describe(c).split(" (")[0] for c in found] == ["p.u -> p.v -> p.u", "p.x -> p.y -> p.z -> p.x"]


def test_function_lengths_count_from_def_to_the_last_line(tmp_path):
    def body(indent: str) -> str:
        return "".join(f"{indent}x{i} = {i}\n" for i in range(59))
    source = (f"def sixty():\n{body('    ')}\n\nclass K:\n    @staticmethod\n    def sixty_one():\n"
              f"{body('        ')}        def inner():\n            pass\n")
    (tmp_path / "m.py").write_text(source)
    # sixty: its def line and 59 more; K.sixty_one (from its def line 65, not the decorator):
    # 1 + 59 + a nested function of 2
    assert codeshape.long_functions(tmp_path / "m.py", 60) == [("K.sixty_one", 65, 62)]
    assert codeshape.long_functions(tmp_path / "m.py", 59) == [("sixty", 1, 60), ("K.sixty_one", 65, 62)]


def test_the_real_graph_is_read():
    """Not an empty graph passing the cycle test for nothing: both packages' modules are
    found and their imports of each other too."""
    modules = codeshape.module_files(REPO, PACKAGES, GENERATED)
    graph = codeshape.import_graph(modules)
    assert {"pyinit.__main__", "mkinitramfs.__main__"} <= set(modules)
    assert len(modules) >= 40 and sum(len(v) for v in graph.values()) >= len(modules), graph
    assert any(e.imported.startswith("pyinit") for e in graph["mkinitramfs.build"])


def test_no_import_cycle_in_pyinit_or_mkinitramfs():
    graph = codeshape.import_graph(codeshape.module_files(REPO, PACKAGES, GENERATED))
    found = [codeshape.describe(c) for c in codeshape.cycles(graph)]
    assert found == [], "import cycles:\n" + "\n".join(found)


def test_no_function_over_60_lines_in_pyinit():
    too_long = [f"{path.relative_to(REPO)}:{line} {name}: {length} lines"
                for path in sorted((REPO / "pyinit").rglob("*.py"))
                if path.relative_to(REPO).as_posix() not in GENERATED
                for name, line, length in codeshape.long_functions(path, MAX_FUNCTION_LINES)]
    assert too_long == [], "\n".join(too_long)


def test_a_default_image_carries_no_pyinit_testing():
    """What the builder packs (mkinitramfs.build.assemble, the API under the command line),
    without modules: the Python part, where pyinit/testing would be, is the same in every
    mode, and no kernel tree is needed to see it."""
    from mkinitramfs import build
    assembled = build.assemble(build.BuildOptions(output=os.devnull, kver=os.uname().release))
    pyinit_files = [e.path for e in assembled.image if "/pyinit/" in e.path]
    assert any(p.endswith("/pyinit/__main__.pyc") for p in pyinit_files), pyinit_files  # pyinit is there
    testing = [p for p in pyinit_files if p.rpartition("/pyinit/")[2].split("/")[0].startswith("testing")]
    assert testing == []
