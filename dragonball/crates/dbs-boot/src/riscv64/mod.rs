//! riscv64 boot: layout, the `Image` header and the flattened device tree.

pub mod fdt;
pub mod image;
pub mod layout;
