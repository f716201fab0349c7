"""Telemetry untangled (issue 20), the import side: the telemetry submodules name their
siblings by full module name and never import the package `bankgate.telemetry` itself (its
__init__ is the Telemetry class, which imports the client: client -> package -> client was the
cycle); and no telemetry module writes another module's globals (the client used to swap
umqtt.simple's `socket` to use umqtt as an encoder).  The runtime side (CONNECT encoded by the
client, the injected clock) is tests/mp/test_telemetry_tangles.py."""
import ast
import os

from bankgate_host import REPO

LIB = os.path.join(REPO, "lib", "bankgate")


def _sources(sub=""):
    root = os.path.join(LIB, sub)
    for d, _, files in os.walk(root):
        for f in sorted(files):
            if f.endswith(".py"):
                p = os.path.join(d, f)
                yield p, ast.parse(open(p).read(), p)


def package_imports(tree):
    """`from bankgate.telemetry import X` anywhere in a module (also inside functions)."""
    return [n.lineno for n in ast.walk(tree)
            if isinstance(n, ast.ImportFrom) and n.module == "bankgate.telemetry" and not n.level]


def foreign_global_writes(tree):
    """Assignments `m.attr = ...` (or del / augmented) where `m` is bound by an import."""
    mods = set()
    for n in ast.walk(tree):
        if isinstance(n, ast.Import):
            for a in n.names:
                mods.add(a.asname or a.name.split(".")[0])
        elif isinstance(n, ast.ImportFrom):
            for a in n.names:
                mods.add(a.asname or a.name)
    out = []
    for n in ast.walk(tree):
        targets = []
        if isinstance(n, ast.Assign):
            targets = n.targets
        elif isinstance(n, (ast.AugAssign, ast.AnnAssign)):
            targets = [n.target]
        elif isinstance(n, ast.Delete):
            targets = n.targets
        for t in targets:
            for x in ast.walk(t):
                if isinstance(x, ast.Attribute) and isinstance(x.ctx, (ast.Store, ast.Del)) \
                        and isinstance(x.value, ast.Name) and x.value.id in mods:
                    out.append((n.lineno, x.value.id, x.attr))
    return out


def test_telemetry_submodules_never_import_their_own_package():
    found = []
    n = 0
    for p, tree in _sources("telemetry"):
        n += 1
        if os.path.basename(p) != "__init__.py":
            found += [(os.path.relpath(p, REPO), ln) for ln in package_imports(tree)]
    assert n >= 7 and not found, found


def test_no_telemetry_module_writes_another_modules_globals():
    # (lib/bankgate/config_check.py, a host-side tool, still sets config._sink / config._bad:
    # the config owner's to untangle; not part of the telemetry package checked here)
    found = []
    for p, tree in _sources("telemetry"):
        found += [(os.path.relpath(p, REPO),) + w for w in foreign_global_writes(tree)]
    assert not found, found


def test_the_checks_find_what_they_look_for():
    t = ast.parse("from bankgate.telemetry import transport as tr\n"
                  "def f():\n    from bankgate.telemetry import ring\n")
    assert package_imports(t) == [1, 3]
    assert package_imports(ast.parse("from bankgate.telemetry.transport import R_NONE\n")) == []
    t = ast.parse("import umqtt.simple as _umqtt\nclass C:\n    def f(self):\n"
                  "        saved = _umqtt.socket\n        _umqtt.socket = self\n        self.x = 1\n")
    assert foreign_global_writes(t) == [(5, "_umqtt", "socket")]
