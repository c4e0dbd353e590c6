"""The package's import graph: no cycles (imports inside functions included), and the layout rules.

Read from the source with ``ast``, so nothing is imported and every import statement counts,
wherever it stands.  Kinds of model are found by name through ``models.base.KINDS`` (strings), so
the registry adds no edge.
"""
import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "birdcore"


def module_name(path: Path, root: Path = ROOT) -> str:
    parts = path.relative_to(root).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def project_modules(root: Path = ROOT) -> dict[str, Path]:
    return {module_name(p, root): p for p in (root / "birdcore").rglob("*.py")}


def imports_of(path: Path, modules: dict[str, Path], root: Path = ROOT) -> set[str]:
    """The project modules a file imports anywhere in it (``from a import b`` counts ``a.b`` when
    ``b`` is a module, else ``a``)."""
    name = module_name(path, root)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                found.add(sub if sub in modules else base)
    return {m for m in found if m in modules and modules[m].name != "__init__.py" and m != name}


def import_graph(root: Path = ROOT) -> dict[str, set[str]]:
    modules = project_modules(root)
    return {name: imports_of(path, modules, root) for name, path in modules.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle as a list of modules (first == last), or None."""
    state: dict[str, int] = {}  # 1: on the stack, 2: done
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state:
                cycle = visit(nxt)
                if cycle:
                    return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            cycle = visit(node)
            if cycle:
                return cycle
    return None


def test_the_package_has_no_import_cycle():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_the_cycle_finder_finds_a_cycle_through_an_import_inside_a_function(tmp_path):
    # the check must be able to fail: a cycle closed by a function-level import
    pkg = tmp_path / "birdcore"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from birdcore import b\n")
    (pkg / "b.py").write_text("def f():\n    from birdcore.a import g\n")
    graph = import_graph(tmp_path)
    assert find_cycle(graph) == ["birdcore.a", "birdcore.b", "birdcore.a"]


def test_the_kind_interface_imports_nothing_of_the_project():
    assert import_graph()["birdcore.models.base"] == set()


def test_only_the_model_kinds_name_a_kind():
    """Callers ask a run's kind; they never compare kind names (the registry and the kinds'
    own modules are where the names live)."""
    names = ("keras_audio", "birdnet_head", "birdnet_zero_shot")
    allowed = ("birdcore/models/", "birdcore/config.py", "birdcore/runs/loading.py")
    offenders = []
    for path in [*PACKAGE.rglob("*.py"), *(ROOT / "pages").glob("*.py"), ROOT / "ui.py", ROOT / "train_job.py"]:
        rel = path.relative_to(ROOT).as_posix()
        if rel.startswith(allowed):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Compare):
                consts = [c.value for c in ast.walk(node) if isinstance(c, ast.Constant)]
                if any(c in names for c in consts):
                    offenders.append(f"{rel}:{node.lineno}")
    assert not offenders, "kind names compared outside the kinds: " + ", ".join(offenders)
