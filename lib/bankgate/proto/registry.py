# Protocol family name -> module.  Every RS485 family module exposes the same API
# (NAME, CMD_*, POLL_CMDS, IDENT_CMDS, SUPPORTS_GROUP, MAX_FRAME, encode_request,
# decode, decode_group; see docs/protocols.md); the CAN family exposes decode and
# the encode_35x functions.  Adding a family = one new module + one line here.
# Modules are imported on first use, so a build pays RAM only for its family.

FAMILIES = {
    "pylontech": "bankgate.proto.pylontech",
    "pace": "bankgate.proto.pace",
    "pylontech-can": "bankgate.proto.pylon_can",
}


def names():
    return sorted(FAMILIES)


def get(name):
    """The family module for `name`; ValueError (listing the known names) otherwise."""
    path = FAMILIES.get(name)
    if path is None:
        raise ValueError("unknown protocol family %r (known: %s)" % (name, ", ".join(names())))
    return __import__(path, None, None, ["_"])
