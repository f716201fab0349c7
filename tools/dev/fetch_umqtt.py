"""Install umqtt.simple from its PyPI release into lib/umqtt/ (ignored by git).

The release is an sdist that pip refuses to install ("not a Python project"), so
pip only downloads it -- with the archive's sha256 enforced by --require-hashes --
and leaves the unpacked tree behind (--no-clean).  We copy umqtt/simple.py out of
that tree and check the file's own sha256 as well.  No third-party code is
committed to this repository.
"""
import glob
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile

NAME = "micropython-umqtt.simple"
VERSION = "1.3.4"
SDIST_SHA256 = "b6a2520239e3992c63a7de9370ee9b3d9d27819a90359c521f1c0f7ccab8d12f"
FILE_SHA256 = "8555d2f654deb8eb0d724f79b0811a78cc94029d070f3d96bbd74288653d63a5"


def main(dest):
    tmp = tempfile.mkdtemp(prefix="bankgate-umqtt-")
    try:
        req = os.path.join(tmp, "req.txt")
        with open(req, "w") as f:
            f.write("%s==%s --hash=sha256:%s\n" % (NAME, VERSION, SDIST_SHA256))
        env = dict(os.environ, TMPDIR=tmp)
        # pip exits non-zero after unpacking ("not a Python project"); that is expected.
        proc = subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-clean", "--no-deps",
             "--require-hashes", "-r", req, "-d", os.path.join(tmp, "dl")],
            env=env, capture_output=True, text=True)
        found = glob.glob(os.path.join(tmp, "**", "umqtt", "simple.py"), recursive=True)
        if not found:
            sys.stderr.write(proc.stdout + proc.stderr)
            sys.exit("fetch_umqtt: pip did not unpack %s %s (see above)" % (NAME, VERSION))
        data = open(found[0], "rb").read()
        digest = hashlib.sha256(data).hexdigest()
        if digest != FILE_SHA256:
            sys.exit("fetch_umqtt: umqtt/simple.py sha256 %s, expected %s" % (digest, FILE_SHA256))
        os.makedirs(os.path.join(dest, "umqtt"), exist_ok=True)
        with open(os.path.join(dest, "umqtt", "simple.py"), "wb") as f:
            f.write(data)
        print("fetch_umqtt: %s %s -> %s/umqtt/simple.py (sha256 ok)" % (NAME, VERSION, dest))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "lib")
