//! virtio-blk over MMIO: any register sequence, any descriptor chains, against a 64 KiB
//! image (read-write or read-only).
#![no_main]

use arbitrary::Arbitrary;
use dbs_virtio_devices::block::{BlockConfig, BlockDevice};
use kata_rv_fuzz::virtio::{NoBackend, Op, Rig, scratch_dir};
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
struct Input {
    read_only: bool,
    ops: Vec<Op>,
}

fuzz_target!(|input: Input| {
    let dir = scratch_dir("blk");
    let image = dir.join("disk.img");
    std::fs::write(&image, vec![0x5a; 64 * 1024]).unwrap();
    let config = BlockConfig {
        path: image.clone(),
        read_only: input.read_only,
        serial: "fuzz".into(),
    };
    let (device, handler) = BlockDevice::new(&config).unwrap();
    let mut rig = Rig::new(Box::new(device), handler);
    rig.run(&input.ops, &mut NoBackend);
    drop(rig);
    let size = std::fs::metadata(&image).unwrap().len();
    assert_eq!(
        size,
        64 * 1024,
        "a guest changed the size of its disk image"
    );
});
