# Small JSON files (configuration, secrets, board files): the size checked before the
# file is read, the nesting before it is parsed, every failure a ConfigError that names
# the file and never quotes its text (it may hold secrets).  Shared by bankgate.config
# (the validator) and bankgate.boards, which must not import each other.


MAX_CONFIG_BYTES = 16384    # a complete config with every key is about 5 KiB


class ConfigError(Exception):
    """Invalid configuration: args[0] is the field path, str() the whole message."""

    def __init__(self, path, expected, found):
        super().__init__("%s: expected %s, found %s" % (path, expected, found))
        self.path = path
        self.expected = expected
        self.found = found


def parse(text, name="config.json", limit=MAX_CONFIG_BYTES):
    """JSON text (str or bytes) -> object, or ConfigError naming the file.
    The text itself is never quoted (it may hold secrets)."""
    n = len(text)
    if n > limit:
        raise ConfigError(name, "at most %d bytes" % limit, "%d bytes" % n)
    if type(text) is not str:
        try:
            text = bytes(text).decode("utf-8")
        except Exception:
            raise ConfigError(name, "UTF-8 text", "bytes that are not UTF-8")
    if not text.strip():
        raise ConfigError(name, "a JSON object", "an empty file")
    d = _nesting(text)
    if d > MAX_JSON_DEPTH:
        raise ConfigError(name, "JSON nested at most %d levels deep" % MAX_JSON_DEPTH,
                          "more than %d levels" % MAX_JSON_DEPTH)
    import json
    try:
        return json.loads(text)
    except ValueError as e:
        raise ConfigError(name, "valid JSON (check quotes, commas and brackets)",
                          "a syntax error (%s)" % (e,))
    except MemoryError:
        # e.g. thousands of list items: the text is within `limit` but the objects are not
        raise ConfigError(name, "a document the heap can hold", "%d bytes too large to parse" % n)


# MicroPython's json.loads needs heap per nesting level: 3000 nested '[' (6 KB, under
# MAX_CONFIG_BYTES) exhausted a 256 KiB heap with MemoryError (tests/mp/test_fuzz_config.py).
# Configurations nest 3 levels, boards 3, secrets 2.
MAX_JSON_DEPTH = 16


def _nesting(text):
    """Deepest [ / { nesting of JSON text outside strings (stops counting past the limit)."""
    depth = 0
    deepest = 0
    in_str = False
    esc = False
    for ch in text:
        if in_str:
            if esc:
                esc = False
            elif ch == "\\":
                esc = True
            elif ch == '"':
                in_str = False
        elif ch == '"':
            in_str = True
        elif ch == "[" or ch == "{":
            depth += 1
            if depth > deepest:
                deepest = depth
                if deepest > MAX_JSON_DEPTH:
                    return deepest
        elif ch == "]" or ch == "}":
            depth -= 1
    return deepest


def read_file(path, limit):
    """The bytes of a small file; the size is checked before reading, so a huge
    file cannot exhaust the heap.  Missing file: ConfigError."""
    import os
    try:
        size = os.stat(path)[6]
    except OSError:
        raise ConfigError(path, "a file", "none (bankgate config push copies it)")
    if size > limit:
        raise ConfigError(path, "at most %d bytes" % limit, "%d bytes" % size)
    with open(path, "rb") as f:
        return f.read()
