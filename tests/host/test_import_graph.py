# The import graph of lib/bankgate has no cycle (issue #20).
#
# Every import counts, also those inside functions (the firmware imports lazily to spare
# RAM, and a lazy import still makes one module depend on another).  A submodule's
# implicit dependency on its package's __init__ is not an edge: a package that imports
# its own submodules is how Python packages are built.  Relative imports are resolved.
import ast
import os

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
LIB = os.path.join(REPO, "lib")


def _modules(root):
    """module name -> source path, for every .py file of the bankgate package under root."""
    out = {}
    for d, _, files in os.walk(os.path.join(root, "bankgate")):
        for f in files:
            if f.endswith(".py"):
                p = os.path.join(d, f)
                name = os.path.relpath(p, root)[:-3].replace(os.sep, ".")
                if name.endswith(".__init__"):
                    name = name[:-len(".__init__")]
                out[name] = p
    return out


def _imports(name, path, mods):
    """The bankgate modules `name` imports anywhere in its source."""
    tree = ast.parse(open(path).read(), path)
    pkg = name if path.endswith("__init__.py") else name.rpartition(".")[0]
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                # "import bankgate.x.y" depends on bankgate.x.y (and its parents' __init__)
                parts = a.name.split(".")
                for i in range(len(parts), 0, -1):
                    if ".".join(parts[:i]) in mods:
                        out.add(".".join(parts[:i]))
                        break
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                b = pkg
                for _ in range(node.level - 1):
                    b = b.rpartition(".")[0]
                base = b + ("." + base if base else "")
            for a in node.names:
                full = base + "." + a.name
                if full in mods:
                    out.add(full)           # from bankgate import config -> bankgate.config
                elif base in mods:
                    out.add(base)           # from bankgate.config import X -> bankgate.config
    out.discard(name)
    return out


def graph(root=LIB):
    mods = _modules(root)
    return {m: _imports(m, p, mods) for m, p in mods.items()}


def cycles(g):
    """The strongly connected components with more than one module (Tarjan), sorted."""
    index, low, stack, on, found = {}, {}, [], set(), []
    counter = [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(g[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in sorted(g):
        if v not in index:
            visit(v)
    return sorted(found)


def _path(g, comp):
    """One concrete cycle through a component, for the failure message."""
    start = comp[0]
    seen = [start]
    v = start
    while True:
        nxt = sorted(w for w in g[v] if w in comp)
        w = next((x for x in nxt if x == start), None) or next((x for x in nxt if x not in seen), nxt[0])
        seen.append(w)
        if w == start or seen.count(w) > 1:
            return " -> ".join(seen)
        v = w


def test_lib_bankgate_has_no_import_cycle():
    g = graph()
    assert len(g) > 40, sorted(g)                 # the walk found the package
    assert "bankgate.config" in g["bankgate.boards"] or "bankgate.jsonfile" in g["bankgate.boards"]
    found = cycles(g)
    assert not found, "import cycles in lib/bankgate:\n" + "\n".join(_path(g, c) for c in found)


def test_the_detector_finds_a_lazy_cycle(tmp_path):
    """A cycle made only by an import inside a function is still a cycle."""
    pkg = tmp_path / "bankgate"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from bankgate.sub import b\n")
    (pkg / "sub" / "__init__.py").write_text("from . import b\n")
    (pkg / "sub" / "b.py").write_text("def f():\n    from ..a import X\n")
    (pkg / "c.py").write_text("import bankgate.a\n")
    g = graph(str(tmp_path))
    assert g["bankgate.sub.b"] == {"bankgate.a"}
    assert cycles(g) == [["bankgate.a", "bankgate.sub.b"]]
    # and without the lazy import there is none
    (pkg / "sub" / "b.py").write_text("X = 1\n")
    assert cycles(graph(str(tmp_path))) == []
