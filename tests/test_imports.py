"""The layering of core/ read from its source: only the entry points import the CLI, and no import cycles.

Every `import` statement counts, module level or inside a function: a function-local import is still a
dependency, it only hides it until the function runs. An edge goes to the module named: `from ..backends import
make_backend` is an edge to core.backends (its __init__), `from . import server` one to the submodule. Not edges: the
parent packages Python runs on the way to a submodule, and importlib's lookups by string (the backend registry's)."""
import ast
from pathlib import Path

CORE = Path(__file__).resolve().parent.parent / "core"
ENTRY_POINTS = {"core.cli", "core.__main__"}  # the only modules that may import core.cli


def _module_name(path: Path, root: Path) -> str:
    parts = path.relative_to(root.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _graph(root: Path = CORE) -> dict[str, set[str]]:
    """module -> the modules of the package at `root` it imports."""
    files = {_module_name(p, root): p for p in sorted(root.rglob("*.py"))}
    graph = {}
    for name, path in files.items():
        # the package a relative import starts from: a package's __init__ is its own package
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        edges = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            if isinstance(node, ast.Import):
                edges |= {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")
                    base = base[:len(base) - (node.level - 1)]
                    target = ".".join(base + ([node.module] if node.module else []))
                else:
                    target = node.module
                # `from . import server` imports the submodule core.triton.server; other names come from target
                subs = {f"{target}.{a.name}" for a in node.names} & files.keys()
                edges |= subs | ({target} if len(subs) < len(node.names) else set())
        graph[name] = {e for e in edges if e in files and e != name}
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle as [a, b, ..., a], or None (depth-first search, three colours)."""
    state, stack = {}, []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = "done"
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_graph_sees_every_kind_of_import(tmp_path):
    pkg = tmp_path / "core"
    sources = {"__init__.py": "",
               "a.py": "from . import sub\n",                            # a subpackage, by name
               "b.py": "import os\n\ndef f():\n    import core.a\n",   # absolute, in a function
               "sub/__init__.py": "from .x import y\n\nhelper = None\n",  # relative, from a package's __init__
               "sub/x.py": "from .. import b\n",
               "sub/y.py": "def g():\n    from ..a import thing\n    from ..sub import helper, x\n"}  # name + module
    for name, text in sources.items():
        (pkg / name).parent.mkdir(parents=True, exist_ok=True)
        (pkg / name).write_text(text)
    graph = _graph(pkg)
    assert graph == {"core": set(), "core.a": {"core.sub"}, "core.b": {"core.a"}, "core.sub": {"core.sub.x"},
                     "core.sub.x": {"core.b"}, "core.sub.y": {"core.a", "core.sub", "core.sub.x"}}
    assert _cycle(graph) == ["core.a", "core.sub", "core.sub.x", "core.b", "core.a"]


def test_only_entry_points_import_the_cli():
    offenders = sorted(m for m, deps in _graph().items() if "core.cli" in deps and m not in ENTRY_POINTS)
    assert not offenders, f"these modules import core.cli (the CLI imports them, not the other way): {offenders}"


def test_no_import_cycles():
    cycle = _cycle(_graph())
    assert cycle is None, "import cycle in core/: " + " -> ".join(cycle)
