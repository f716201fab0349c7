"""List (or make private) the public `NAME = const(...)` names of lib/bankgate that no other
file uses.

MicroPython inlines a const() at compile time, but a PUBLIC const name (no leading
underscore) also stays in the module's globals dict, in RAM, so that other modules can
import it; a private one (`_NAME`) does not.  Issue 17 counted 346 public const names.

    python3 tools/dev/private_consts.py            list the candidates per file (exit 0)
    python3 tools/dev/private_consts.py --apply    rename them to _NAME in their own file

A name counts as used elsewhere if the identifier appears in any other .py file under
lib/, firmware/, tools/ or tests/ (word match, strings and comments included: a
conservative test).  Renaming touches only NAME tokens (Python's tokenizer), never the
text of strings, so name tables such as ("ALM_CELL_OV", ...) are unchanged.
"""
import io
import os
import re
import sys
import tokenize

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
_CONST = re.compile(r"^([A-Z][A-Z0-9_]*)\s*=\s*const\(", re.M)


def _sources():
    out = {}
    for base in ("lib", "firmware", "tools", "tests"):
        for root, dirs, files in os.walk(os.path.join(REPO, base)):
            dirs[:] = [d for d in dirs if d != "__pycache__"]
            for f in files:
                if f.endswith(".py"):
                    p = os.path.join(root, f)
                    with open(p) as fh:
                        out[p] = fh.read()
    return out


def candidates(skip=()):
    """{path: [NAME, ...]}: public const names of lib/bankgate used by no other file."""
    src = _sources()
    found = {}
    lib = os.path.join(REPO, "lib", "bankgate")
    for p, text in sorted(src.items()):
        if not p.startswith(lib + os.sep) or os.path.relpath(p, REPO) in skip:
            continue
        names = []
        for name in _CONST.findall(text):
            pat = re.compile(r"\b%s\b" % name)
            if not any(pat.search(t) for q, t in src.items() if q != p):
                names.append(name)
        if names:
            found[p] = names
    return found


def rename(text, names):
    names = set(names)
    toks = list(tokenize.generate_tokens(io.StringIO(text).readline))
    lines = text.splitlines(keepends=True)
    # edit from the end so earlier columns stay valid
    for t in reversed(toks):
        if t.type == tokenize.NAME and t.string in names:
            (r, c), (r2, c2) = t.start, t.end
            ln = lines[r - 1]
            lines[r - 1] = ln[:c] + "_" + t.string + ln[c2:]
    return "".join(lines)


def main(argv):
    apply = "--apply" in argv
    skip = [a.split("=", 1)[1] for a in argv if a.startswith("--skip=")]
    found = candidates(skip)
    total = 0
    for p, names in found.items():
        total += len(names)
        print("%-40s %3d  %s" % (os.path.relpath(p, REPO), len(names), " ".join(names)))
        if apply:
            with open(p) as f:
                text = f.read()
            with open(p, "w") as f:
                f.write(rename(text, names))
    print("%d public const names used only in their own module%s" % (total, " (renamed)" if apply else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
