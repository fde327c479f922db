//! Inline virtio-fs over MMIO: raw register and ring ops mixed with well-framed FUSE
//! requests (any opcode, node id and body) on the request queue, against a shared
//! directory with a file, a directory and a symlink pointing out of it. Nothing outside
//! the shared directory may change.
#![no_main]

use std::path::Path;

use arbitrary::Arbitrary;
use dbs_virtio_devices::fs::{FsConfig, FsDevice};
use kata_rv_fuzz::virtio::{DATA_BASE, Desc, NoBackend, Op, Rig, scratch_dir};
use libfuzzer_sys::fuzz_target;

const FUSE_IN_HEADER: usize = 40;
/// FUSE_INIT: the request every session starts with.
const FUSE_INIT: u32 = 26;
const REQUEST_QUEUE: usize = 1;
const WRITE: u8 = 2;

#[derive(Arbitrary, Debug)]
enum FsOp {
    Raw(Op),
    Request {
        opcode: u8,
        nodeid: u8,
        body: Vec<u8>,
        reply_len: u16,
    },
}

fn fuse_request(rig: &mut Rig, unique: u64, opcode: u32, nodeid: u64, body: &[u8], reply: u32) {
    let body = &body[..body.len().min(0x4000)];
    let len = (FUSE_IN_HEADER + body.len()) as u32;
    let mut req = Vec::with_capacity(len as usize);
    req.extend_from_slice(&len.to_le_bytes());
    req.extend_from_slice(&opcode.to_le_bytes());
    req.extend_from_slice(&unique.to_le_bytes());
    req.extend_from_slice(&nodeid.to_le_bytes());
    req.extend_from_slice(&[0u8; 16]); // uid, gid, pid, padding
    req.extend_from_slice(body);
    rig.poke(DATA_BASE, &req);
    let descs = [
        Desc {
            addr: 0,
            len,
            flags: 1,
            next: None,
        },
        Desc {
            addr: 0x8000,
            len: reply,
            flags: WRITE,
            next: None,
        },
    ];
    rig.chain(REQUEST_QUEUE, &descs);
    rig.kick(REQUEST_QUEUE as u32, &mut NoBackend);
}

fn snapshot(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (
                e.file_name().to_string_lossy().into_owned(),
                std::fs::read(e.path()).unwrap_or_default(),
            )
        })
        .collect();
    out.sort();
    out
}

fuzz_target!(|ops: Vec<FsOp>| {
    let dir = scratch_dir("fs");
    let (shared, outside) = (dir.join("shared"), dir.join("outside"));
    std::fs::create_dir_all(shared.join("d")).unwrap();
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::write(shared.join("f"), b"inside").unwrap();
    std::fs::write(outside.join("secret"), b"host data").unwrap();
    std::os::unix::fs::symlink(&outside, shared.join("out")).unwrap();
    let before = snapshot(&outside);
    let (device, handler) = FsDevice::new(&FsConfig {
        tag: "fuzz".into(),
        shared_dir: shared,
    })
    .unwrap();
    let mut rig = Rig::new(Box::new(device), handler);
    rig.bringup(7);
    // A session starts with FUSE_INIT (version 7.31, no flags).
    let mut init = Vec::new();
    for v in [7u32, 31, 0x2_0000, 0] {
        init.extend_from_slice(&v.to_le_bytes());
    }
    fuse_request(&mut rig, 1, FUSE_INIT, 0, &init, 256);
    for (n, op) in ops.iter().enumerate() {
        match op {
            FsOp::Raw(op) => rig.apply(op, &mut NoBackend),
            FsOp::Request {
                opcode,
                nodeid,
                body,
                reply_len,
            } => fuse_request(
                &mut rig,
                n as u64 + 2,
                u32::from(*opcode % 52),
                u64::from(*nodeid % 8),
                body,
                u32::from(*reply_len),
            ),
        }
    }
    drop(rig);
    assert_eq!(
        snapshot(&outside),
        before,
        "the guest changed a host directory it was not given"
    );
    assert_eq!(
        snapshot(&dir).len(),
        2,
        "the guest created something beside its shared directory"
    );
});
