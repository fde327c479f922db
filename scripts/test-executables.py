#!/usr/bin/env python3
"""Reads `cargo test --no-run --message-format=json` on stdin and copies every test
executable into the directory given as argv[1], named <package>-<target> so a KVM test
host can run them."""
import json
import os
import shutil
import sys

dest = sys.argv[1]
shutil.rmtree(dest, ignore_errors=True)
os.makedirs(dest)
count = 0
for line in sys.stdin:
    try:
        msg = json.loads(line)
    except json.JSONDecodeError:
        continue
    if msg.get("reason") != "compiler-artifact" or not msg.get("profile", {}).get("test"):
        continue
    exe = msg.get("executable")
    if not exe:
        continue
    # "path+file:///…/dbs-arch#0.1.0" or "registry+…#name@1.2.3"
    path, _, frag = msg["package_id"].partition("#")
    pkg = frag.split("@")[0] if "@" in frag else path.rstrip("/").split("/")[-1]
    name = f"{pkg}-{msg['target']['name']}".replace("_", "-")
    shutil.copy2(exe, os.path.join(dest, name))
    count += 1
if count == 0:
    sys.exit("test-executables.py: cargo reported no test executables")
print(f"test-executables.py: {count} test executables in {dest}", file=sys.stderr)
