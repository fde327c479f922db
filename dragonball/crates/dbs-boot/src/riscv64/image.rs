//! The RISC-V Linux `Image` header (Documentation/arch/riscv/boot-image-header.rst).

/// Offset of the header's `magic2` ("RSC\x05").
const MAGIC2_OFFSET: usize = 0x38;
/// `magic2` value.
const MAGIC2: u32 = 0x0543_5352;

/// Errors from reading an `Image` header.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ImageError {
    /// The file is shorter than the 64-byte header.
    #[error("kernel image is too short ({0} bytes) to be a RISC-V Image")]
    TooShort(usize),
    /// The magic is missing.
    #[error(
        "kernel image has no RISC-V Image magic (is it a compressed Image.gz or an ELF vmlinux? use arch/riscv/boot/Image)"
    )]
    BadMagic,
    /// The header says big-endian.
    #[error("big-endian RISC-V kernels are not supported")]
    BigEndian,
}

/// What the loader needs from the header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImageHeader {
    /// Where the image wants to sit above a 2 MiB-aligned base.
    pub text_offset: u64,
    /// Size of the image in memory, bss included.
    pub image_size: u64,
}

fn u64_at(b: &[u8], off: usize) -> u64 {
    let mut v = [0u8; 8];
    v.copy_from_slice(&b[off..off + 8]);
    u64::from_le_bytes(v)
}

/// Parses the first 64 bytes of an `Image`.
pub fn parse_header(bytes: &[u8]) -> Result<ImageHeader, ImageError> {
    if bytes.len() < 64 {
        return Err(ImageError::TooShort(bytes.len()));
    }
    let magic2 = u32::from_le_bytes([bytes[0x38], bytes[0x39], bytes[0x3a], bytes[0x3b]]);
    if magic2 != MAGIC2 {
        return Err(ImageError::BadMagic);
    }
    debug_assert_eq!(MAGIC2_OFFSET, 0x38);
    if u64_at(bytes, 24) & 1 != 0 {
        return Err(ImageError::BigEndian);
    }
    Ok(ImageHeader {
        text_offset: u64_at(bytes, 8),
        image_size: u64_at(bytes, 16),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(text_offset: u64, size: u64, flags: u64, magic2: u32) -> Vec<u8> {
        let mut h = vec![0u8; 64];
        h[8..16].copy_from_slice(&text_offset.to_le_bytes());
        h[16..24].copy_from_slice(&size.to_le_bytes());
        h[24..32].copy_from_slice(&flags.to_le_bytes());
        h[0x38..0x3c].copy_from_slice(&magic2.to_le_bytes());
        h
    }

    #[test]
    fn parses_a_valid_header() {
        let h = parse_header(&header(0x20_0000, 0x150_0000, 0, MAGIC2)).unwrap();
        assert_eq!(h.text_offset, 0x20_0000);
        assert_eq!(h.image_size, 0x150_0000);
    }

    #[test]
    fn rejects_garbage() {
        assert_eq!(parse_header(&[0; 10]), Err(ImageError::TooShort(10)));
        assert_eq!(
            parse_header(&header(0, 0, 0, 0x1234)),
            Err(ImageError::BadMagic)
        );
        assert_eq!(
            parse_header(&header(0, 0, 1, MAGIC2)),
            Err(ImageError::BigEndian)
        );
    }
}
