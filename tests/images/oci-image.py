#!/usr/bin/env python3
"""Builds a single-layer OCI image tarball (OCI image layout) that `ctr images import`
accepts, without any registry. Same inputs give the same bytes.

  oci-image.py --arch riscv64 --name docker.io/library/busybox:latest -o busybox.tar \
      --file SRC:DEST[:MODE] ... --links FILE:TARGET --dir DEST[:MODE] ... \
      --cmd '["sh"]' [--entrypoint '["/pause"]'] [--env K=V ...]
"""
import argparse
import gzip
import hashlib
import io
import json
import os
import sys
import tarfile

OCI_ARCH = {"riscv64": "riscv64", "x86_64": "amd64"}


def fail(msg):
    print(f"oci-image.py: {msg}", file=sys.stderr)
    sys.exit(1)


def add_entry(entries, path, info):
    path = path.strip("/")
    if not path or ".." in path.split("/"):
        fail(f"invalid image path '{path}'")
    parts = path.split("/")
    for i in range(1, len(parts)):
        parent = "/".join(parts[:i])
        if parent not in entries:
            entries[parent] = ("dir", 0o755, None)
    if path in entries and entries[path][0] != "dir":
        fail(f"image path '{path}' given twice")
    entries[path] = info


def layer_tar(entries):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        # A hard link must follow the file it names.
        for path in sorted(entries, key=lambda p: (entries[p][0] == "hardlink", p)):
            kind, mode, payload = entries[path]
            ti = tarfile.TarInfo(path)
            ti.mtime = 0
            ti.uid = ti.gid = 0
            ti.uname = ti.gname = "root"
            ti.mode = mode
            if kind == "dir":
                ti.type = tarfile.DIRTYPE
                tar.addfile(ti)
            elif kind == "hardlink":
                ti.type = tarfile.LNKTYPE
                ti.linkname = payload
                tar.addfile(ti)
            else:
                ti.size = len(payload)
                tar.addfile(ti, io.BytesIO(payload))
    return buf.getvalue()


def gz(data):
    out = io.BytesIO()
    with gzip.GzipFile(fileobj=out, mode="wb", mtime=0, filename="") as f:
        f.write(data)
    return out.getvalue()


def sha(data):
    return "sha256:" + hashlib.sha256(data).hexdigest()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--arch", required=True, choices=sorted(OCI_ARCH))
    ap.add_argument("--name", required=True, help="image reference, e.g. docker.io/library/busybox:latest")
    ap.add_argument("-o", "--output", required=True)
    ap.add_argument("--file", action="append", default=[], help="SRC:DEST[:MODE]")
    ap.add_argument("--dir", action="append", default=[], help="DEST[:MODE]")
    ap.add_argument("--links", action="append", default=[], help="FILE:TARGET: hard-link each path listed in FILE to TARGET (as the official busybox image does)")
    ap.add_argument("--text", action="append", default=[], help="DEST=CONTENT (a small text file)")
    ap.add_argument("--cmd", default="[]")
    ap.add_argument("--entrypoint", default="[]")
    ap.add_argument("--env", action="append", default=[])
    a = ap.parse_args()
    if ":" not in a.name.rsplit("/", 1)[-1]:
        fail(f"--name '{a.name}' needs a tag (name:tag)")

    entries = {}
    for d in a.dir:
        dest, _, mode = d.partition(":")
        add_entry(entries, dest, ("dir", int(mode or "755", 8), None))
    for f in a.file:
        parts = f.split(":")
        if len(parts) not in (2, 3):
            fail(f"--file '{f}': expected SRC:DEST[:MODE]")
        try:
            with open(parts[0], "rb") as fh:
                data = fh.read()
        except OSError as e:
            fail(f"--file '{f}': {e}")
        mode = int(parts[2], 8) if len(parts) == 3 else os.stat(parts[0]).st_mode & 0o7777
        add_entry(entries, parts[1], ("file", mode, data))
    for t in a.text:
        dest, sep, content = t.partition("=")
        if not sep:
            fail(f"--text '{t}': expected DEST=CONTENT")
        add_entry(entries, dest, ("file", 0o644, content.encode()))
    for spec in a.links:
        listing, sep, target = spec.rpartition(":")
        if not sep:
            fail(f"--links '{spec}': expected FILE:TARGET")
        try:
            with open(listing) as fh:
                paths = [line.strip() for line in fh if line.strip()]
        except OSError as e:
            fail(f"--links '{spec}': {e}")
        if target.strip("/") not in entries:
            fail(f"--links '{spec}': '{target}' is not in the image (give it with --file first)")
        for p in paths:
            if p.strip("/") not in entries:
                add_entry(entries, p, ("hardlink", entries[target.strip("/")][1], target.strip("/")))

    try:
        cmd, entrypoint = json.loads(a.cmd), json.loads(a.entrypoint)
    except json.JSONDecodeError as e:
        fail(f"--cmd/--entrypoint must be JSON arrays: {e}")
    env = a.env or ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]

    layer = layer_tar(entries)
    layer_gz = gz(layer)
    config = {
        "architecture": OCI_ARCH[a.arch],
        "os": "linux",
        "config": {"Env": env, "Cmd": cmd or None, "Entrypoint": entrypoint or None, "WorkingDir": "/"},
        "rootfs": {"type": "layers", "diff_ids": [sha(layer)]},
        "history": [{"created_by": "kata-rv tests/images/oci-image.py"}],
    }
    config = {k: v for k, v in config.items()}
    config["config"] = {k: v for k, v in config["config"].items() if v is not None}
    config_bytes = json.dumps(config, sort_keys=True, separators=(",", ":")).encode()
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": sha(config_bytes), "size": len(config_bytes)},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": sha(layer_gz), "size": len(layer_gz)}],
    }
    manifest_bytes = json.dumps(manifest, sort_keys=True, separators=(",", ":")).encode()
    tag = a.name.rsplit(":", 1)[1]
    index = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": sha(manifest_bytes),
            "size": len(manifest_bytes),
            "annotations": {"io.containerd.image.name": a.name, "org.opencontainers.image.ref.name": tag},
            "platform": {"architecture": OCI_ARCH[a.arch], "os": "linux"},
        }],
    }
    files = {
        "oci-layout": json.dumps({"imageLayoutVersion": "1.0.0"}).encode(),
        "index.json": json.dumps(index, sort_keys=True, separators=(",", ":")).encode(),
    }
    for blob in (layer_gz, config_bytes, manifest_bytes):
        files["blobs/sha256/" + sha(blob).split(":", 1)[1]] = blob

    tmp = a.output + ".partial"
    with tarfile.open(tmp, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for d in ("blobs", "blobs/sha256"):
            ti = tarfile.TarInfo(d)
            ti.type, ti.mode, ti.mtime = tarfile.DIRTYPE, 0o755, 0
            tar.addfile(ti)
        for name in sorted(files):
            ti = tarfile.TarInfo(name)
            ti.size, ti.mode, ti.mtime = len(files[name]), 0o644, 0
            tar.addfile(ti, io.BytesIO(files[name]))
    os.replace(tmp, a.output)
    print(f"oci-image.py: {a.name} ({a.arch}) -> {a.output}", file=sys.stderr)


if __name__ == "__main__":
    main()
