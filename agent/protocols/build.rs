//! Generates the Rust messages and ttrpc stubs from `protos/` into OUT_DIR with the
//! pure-Rust protobuf parser (no protoc needed).

use std::fs;
use std::path::{Path, PathBuf};

use ttrpc_codegen::{Codegen, Customize, ProtobufCustomize};

const PROTOS: [&str; 4] = ["agent", "health", "oci", "types"];

fn main() {
    let out_dir = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let inputs: Vec<PathBuf> = PROTOS
        .iter()
        .map(|name| Path::new("protos").join(format!("{name}.proto")))
        .collect();
    for input in &inputs {
        println!("cargo:rerun-if-changed={}", input.display());
    }
    Codegen::new()
        .out_dir(&out_dir)
        .include("protos")
        .inputs(&inputs)
        .rust_protobuf()
        .customize(Customize {
            async_all: true,
            ..Default::default()
        })
        .rust_protobuf_customize(ProtobufCustomize::default().gen_mod_rs(false))
        .run()
        .expect("generating the agent protocol");
    // `include!` cannot take inner attributes or inner doc comments: drop them; lib.rs
    // states the lints for the generated modules instead.
    for entry in fs::read_dir(&out_dir).expect("reading OUT_DIR") {
        let path = entry.expect("reading OUT_DIR").path();
        if path.extension().is_some_and(|ext| ext == "rs") {
            let text = fs::read_to_string(&path).expect("reading generated code");
            let kept: Vec<&str> = text
                .lines()
                .filter(|line| !line.starts_with("#![") && !line.starts_with("//!"))
                .collect();
            fs::write(&path, kept.join("\n")).expect("writing generated code");
        }
    }
}
