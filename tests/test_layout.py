"""The package's shape: no import cycle anywhere (imports inside functions included), data imports
flow one way (table -> sources -> order -> loaders -> pipeline), and the data order stays exactly
what checkpoints of earlier runs were written with."""
import ast
import os

import numpy as np

from effssl_jax.data.order import Sampler, batch_indices

PACKAGE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "effssl_jax")
DATA = "effssl_jax.data"


def _modules() -> dict[str, str]:
    """{dotted name: path} of every module of effssl_jax."""
    found = {}
    for dirpath, _, filenames in os.walk(PACKAGE):
        for f in filenames:
            if f.endswith(".py"):
                rel = os.path.relpath(os.path.join(dirpath, f), os.path.dirname(PACKAGE))
                name = rel[:-3].replace(os.sep, ".").removesuffix(".__init__")
                found[name] = os.path.join(dirpath, f)
    return found


def _imports(path: str, modules) -> list[tuple[str, bool]]:
    with open(path) as f:
        return _imports_of(f.read(), modules)


def _imports_of(source: str, modules) -> list[tuple[str, bool]]:
    """(package module imported, whether inside a function) of every import in a source."""
    out = []

    def visit(node, in_function):
        for child in ast.iter_child_nodes(node):
            inner = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef))
            if isinstance(child, ast.Import):
                out.extend((a.name, in_function) for a in child.names if a.name in modules)
            elif isinstance(child, ast.ImportFrom) and child.module in modules:
                subs = [f"{child.module}.{a.name}" for a in child.names]
                hits = [s for s in subs if s in modules] or [child.module]
                out.extend((m, in_function) for m in hits)
            visit(child, inner)

    visit(ast.parse(source), False)
    return out


def _graph():
    modules = _modules()
    return {name: _imports(path, modules) for name, path in modules.items()}


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """One import cycle [a, b, ..., a] of a module graph, or None (depth-first search)."""
    state, path = {}, []

    def visit(m):
        state[m] = "open"
        path.append(m)
        for t in sorted(edges.get(m, ())):
            if state.get(t) == "open":
                return path[path.index(t):] + [t]
            if t not in state and (cycle := visit(t)):
                return cycle
        state[m] = "done"
        path.pop()
        return None

    for m in sorted(edges):
        if m not in state and (cycle := visit(m)):
            return cycle
    return None


def test_cycle_finder_finds_a_cycle_through_a_function_level_import():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    modules = {"pkg": "", "pkg.x": "", "pkg.y": ""}
    src = "import pkg.y\n\ndef f():\n    from pkg import x\n"
    assert _imports_of(src, modules) == [("pkg.y", False), ("pkg.x", True)]


def test_no_import_cycle_in_the_package():
    edges = {m: {t for t, _ in targets} for m, targets in _graph().items()}
    assert len(edges) > 40 and edges["effssl_jax.train"]
    assert find_cycle(edges) is None, " -> ".join(find_cycle(edges))


def test_data_imports_flow_one_way():
    graph = _graph()
    for m in (m for m in graph if m.startswith(DATA + ".")):
        for target, in_function in graph[m]:
            assert not in_function, f"{m} imports {target} inside a function"
            assert target != f"{DATA}.pipeline", f"{m} imports the top of the package"


def test_data_order_is_pinned():
    """Resumed runs and existing checkpoints depend on these exact batches."""
    s = Sampler(50, 16, seed=7, process_index=1, process_count=2)
    assert s.indices(0).tolist() == [28, 6, 22, 4, 36, 47, 48, 27]
    assert s.indices(3).tolist() == [24, 10, 15, 26, 17, 29, 27, 5]  # epoch 1 reshuffled
    assert s.fingerprint() == {"num_examples": 50, "batch_size": 16, "seed": 7}
    whole = batch_indices(0, 50, 16, 7)
    np.testing.assert_array_equal(s.host_slice(whole), s.indices(0))
    np.testing.assert_array_equal(Sampler(50, 16, 7).indices(0), whole)
