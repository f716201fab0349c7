"""List (or make private) the public `NAME = const(...)` names of lib/bankgate that no other
file uses.

MicroPython inlines a const() at compile time, but a PUBLIC const name (no leading
underscore) also stays in the module's globals dict, in RAM, so that other modules can
import it; a private one (`_NAME`) does not.  Issue 17 counted 346 public const names.

    python3 tools/dev/private_consts.py            list the candidates per file (exit 0)
    python3 tools/dev/private_consts.py --apply    rename them to _NAME in their own file
    (--with-comments: a name in another file's comment counts as a use; --skip=lib/...py)

A name counts as used elsewhere if the identifier appears in any other .py file under
lib/, firmware/, tools/ or tests/ (word match, strings included: getattr(fam, "NAME") and
MicroPython code that host tests send as text are uses).  Comments are not uses (a comment
naming `poller.REPROBE_MS` needs no RAM); --with-comments counts them too (the first,
more conservative pass).  Renaming touches only NAME tokens (Python's tokenizer), never the
text of strings, so name tables such as ("ALM_CELL_OV", ...) are unchanged.
"""
import io
import os
import re
import sys
import tokenize

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
_CONST = re.compile(r"^([A-Z][A-Z0-9_]*)\s*=\s*const\(", re.M)


def _strip_comments(text):
    """text without its comments (Python tokens; a file that does not tokenize is kept whole)."""
    try:
        toks = list(tokenize.generate_tokens(io.StringIO(text).readline))
    except (tokenize.TokenError, IndentationError, SyntaxError):
        return text
    return " ".join(t.string for t in toks if t.type != tokenize.COMMENT)


def _sources(comments=False):
    out = {}
    for base in ("lib", "firmware", "tools", "tests"):
        for root, dirs, files in os.walk(os.path.join(REPO, base)):
            dirs[:] = [d for d in dirs if d != "__pycache__"]
            for f in files:
                if f.endswith(".py"):
                    p = os.path.join(root, f)
                    with open(p) as fh:
                        out[p] = fh.read()
                    if not comments:
                        out[p] = (out[p], _strip_comments(out[p]))
                    else:
                        out[p] = (out[p], out[p])
    return out


def candidates(skip=(), comments=False):
    """{path: [NAME, ...]}: public const names of lib/bankgate used by no other file."""
    src = _sources(comments)
    found = {}
    lib = os.path.join(REPO, "lib", "bankgate")
    for p, (text, _) in sorted(src.items()):
        if not p.startswith(lib + os.sep) or os.path.relpath(p, REPO) in skip:
            continue
        names = []
        for name in _CONST.findall(text):
            pat = re.compile(r"\b%s\b" % name)
            if not any(pat.search(t) for q, (_, t) in src.items() if q != p):
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
    found = candidates(skip, "--with-comments" in argv)
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
