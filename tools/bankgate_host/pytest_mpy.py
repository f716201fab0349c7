"""pytest plugin: MicroPython-side tests as ordinary pytest items.

Any `test_*.py` inside a directory named `mp` (tests/mp/...) is a MicroPython
test module: it is never imported by CPython.  Its top-level `def test_*()`
functions become pytest items named after them; on first use the selected
functions of a file run in one unix-port process (mptest_run.py), each reported
separately, and a failure shows the MicroPython traceback and what the test
printed.

File directives (comment lines):
    # mpy-heapsize: 256k     heap for this file's process on the 64-bit port (default:
                             mpy.default_heapsize()); halved on a 32-bit lane
    # mpy-heapsize32: 96k    heap on a 32-bit lane instead of half the 64-bit figure
    # mpy-timeout: 900       seconds before the process is killed (default 600)
    # mpy-mark: slow         apply a pytest marker to every test of the file
    # mpy-emit: native       compile lib/ and tools/ to machine code for this file (mpy.EMITS;
                             default bytecode, as on the device): simulator speed and soak runs
"""
import ast
import json
import os
import re
import subprocess

import pytest

from . import mpy

_MARK = "\x1eMPT "
_BEGIN = "\x1eMPT-BEGIN "


def parse_size(text):
    text = text.strip().lower()
    mult = {"k": 1024, "m": 1024 * 1024}.get(text[-1:], 1)
    return int(text.rstrip("km")) * mult


def _directives(source):
    found = {}
    for m in re.finditer(r"^#\s*mpy-(heapsize32|heapsize|timeout|mark|emit):\s*(\S+)", source, re.M):
        found.setdefault(m.group(1), []).append(m.group(2))
    return found


class MpyFailure(Exception):
    def __init__(self, tb, output):
        super().__init__(tb)
        self.tb = tb
        self.output = output


class MpyFile(pytest.File):
    def collect(self):
        source = self.path.read_text()
        self.directives = _directives(source)
        if "heapsize" in self.directives or "heapsize32" in self.directives:
            self.heapsize = mpy.heapsize_for_lane(self.directives.get("heapsize", [mpy.DEFAULT_HEAPSIZE])[0],
                                                  self.directives.get("heapsize32", [None])[0])
        else:
            self.heapsize = mpy.default_heapsize()
        self.timeout = int(self.directives.get("timeout", ["600"])[0])
        self.emit = self.directives.get("emit", ["bytecode"])[0]
        self._results = None
        tree = ast.parse(source, str(self.path))
        for node in tree.body:
            if isinstance(node, ast.FunctionDef) and node.name.startswith("test_"):
                item = MpyItem.from_parent(self, name=node.name, lineno=node.lineno)
                for mark in self.directives.get("mark", []):
                    item.add_marker(mark)
                yield item

    def results(self):
        """Run this file's selected tests once; map name -> (status, tb, output)."""
        if self._results is None:
            names = [it.name for it in self.session.items
                     if isinstance(it, MpyItem) and it.parent is self]
            self._results = self._run(names)
        return self._results

    def _run(self, names):
        script = os.path.join(mpy.HARNESS, "mptest_run.py")
        try:
            # the whole test directory, so a test module importing a sibling never
            # runs a stale compiled copy of it
            src_dir = os.path.dirname(str(self.path))
            out_dir = os.path.join(mpy.build_dir(), "files", os.path.relpath(src_dir, mpy.REPO))
            mpy.ensure_compiled(src_dir, out_dir)
            compiled = os.path.join(out_dir, self.path.name[:-3] + ".mpy")
        except SyntaxError as e:
            return {name: ("fail", str(e), "") for name in names}
        args = [script, str(parse_size(self.heapsize)), compiled] + names
        try:
            proc = mpy.run(args, heapsize=self.heapsize, timeout=self.timeout, emit=self.emit)
            out, err, rc = proc.stdout, proc.stderr, proc.returncode
        except subprocess.TimeoutExpired as e:
            out = e.stdout.decode() if isinstance(e.stdout, bytes) else (e.stdout or "")
            err, rc = "timed out after %d s" % self.timeout, "timeout"
        results = {}
        current, chunk = None, []
        for line in out.split("\n"):
            if line.startswith(_BEGIN):
                current, chunk = line[len(_BEGIN):], []
            elif line.startswith(_MARK):
                rec = json.loads(line[len(_MARK):])
                results[rec["name"]] = (rec["status"], rec["tb"], "\n".join(chunk).strip())
                current, chunk = None, []
            elif current is not None:
                chunk.append(line)
        for name in names:
            if name not in results:
                tail = "\n".join(chunk[-40:])
                results[name] = ("fail", "MicroPython process ended (rc=%s) before reporting %s\n"
                                 "stderr:\n%s" % (rc, name, err.strip()), tail)
        return results


class MpyItem(pytest.Item):
    def __init__(self, *, lineno=0, **kw):
        super().__init__(**kw)
        self.lineno = lineno

    def runtest(self):
        status, tb, output = self.parent.results()[self.name]
        if status == "skip":
            pytest.skip(tb or "skipped under MicroPython")
        if status != "pass":
            raise MpyFailure(tb, output)

    def repr_failure(self, excinfo):
        if isinstance(excinfo.value, MpyFailure):
            text = "MicroPython traceback (unix port, heapsize=%s):\n%s" % (
                self.parent.heapsize, excinfo.value.tb.rstrip())
            if excinfo.value.output:
                text += "\n---- MicroPython output ----\n" + excinfo.value.output
            return text
        return super().repr_failure(excinfo)

    def reportinfo(self):
        return self.path, self.lineno - 1, "mpy::%s" % self.name


def pytest_pycollect_makemodule(module_path, parent):
    if module_path.parent.name == "mp" and module_path.name.startswith("test_"):
        return MpyFile.from_parent(parent, path=module_path)
    return None


@pytest.fixture(scope="session")
def mp():
    """A shared MpWorker: call device functions under the unix port from CPython.  One process
    serves every host test file of an xdist worker, so it accumulates the modules all of them
    import (config, metrics, diagnose, proto, ...): it gets twice the lane's device-sized heap.
    Device footprints are measured by `bankgate bench` and the heap tests, not here."""
    size = mpy.default_heapsize()
    with mpy.MpWorker(heapsize="%dk" % (2 * int(size[:-1]))) as worker:
        yield worker
