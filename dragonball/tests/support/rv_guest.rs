//! Tiny hand-assembled riscv64 guests for VMM tests: a valid `Image` (header + code) that
//! makes chosen SBI calls, reports each return code on the legacy console, and shuts down
//! or spins. No toolchain needed.

#![allow(dead_code)]

pub const ZERO: u32 = 0;
pub const A0: u32 = 10;
pub const A1: u32 = 11;
pub const A2: u32 = 12;
pub const A6: u32 = 16;
pub const A7: u32 = 17;
pub const T0: u32 = 5;
pub const T1: u32 = 6;
pub const T2: u32 = 7;
pub const T3: u32 = 28;
pub const T4: u32 = 29;

/// Image header size; code starts right after it.
const HEADER: usize = 64;
/// Where data (strings) go in the image.
pub const DATA_OFFSET: usize = 0x800;

fn addi(rd: u32, rs1: u32, imm: i32) -> u32 {
    (((imm as u32) & 0xfff) << 20) | (rs1 << 15) | (rd << 7) | 0x13
}

fn lui(rd: u32, imm20: u32) -> u32 {
    ((imm20 & 0xf_ffff) << 12) | (rd << 7) | 0x37
}

fn auipc(rd: u32, imm20: u32) -> u32 {
    ((imm20 & 0xf_ffff) << 12) | (rd << 7) | 0x17
}

fn store(width: u32, rs2: u32, rs1: u32, imm: i32) -> u32 {
    let imm = imm as u32;
    ((imm >> 5 & 0x7f) << 25)
        | (rs2 << 20)
        | (rs1 << 15)
        | (width << 12)
        | ((imm & 0x1f) << 7)
        | 0x23
}

fn load(width: u32, rd: u32, rs1: u32, imm: i32) -> u32 {
    (((imm as u32) & 0xfff) << 20) | (rs1 << 15) | (width << 12) | (rd << 7) | 0x03
}

fn branch(funct3: u32, rs1: u32, rs2: u32, offset: i32) -> u32 {
    let i = offset as u32;
    ((i >> 12 & 1) << 31)
        | ((i >> 5 & 0x3f) << 25)
        | (rs2 << 20)
        | (rs1 << 15)
        | (funct3 << 12)
        | ((i >> 1 & 0xf) << 8)
        | ((i >> 11 & 1) << 7)
        | 0x63
}

fn jal(rd: u32, offset: i32) -> u32 {
    let i = offset as u32;
    ((i >> 20 & 1) << 31)
        | ((i >> 1 & 0x3ff) << 21)
        | ((i >> 11 & 1) << 20)
        | ((i >> 12 & 0xff) << 12)
        | (rd << 7)
        | 0x6f
}

const ECALL: u32 = 0x0000_0073;
const SPIN: u32 = 0x0000_006f; // j .

/// Splits `value` into (hi20, lo12) so that (hi20 << 12) + sext(lo12) == value.
fn hi_lo(value: i64) -> (u32, i32) {
    let lo = ((value & 0xfff) as i32) << 20 >> 20;
    let hi = ((value - i64::from(lo)) >> 12) as u32;
    (hi, lo)
}

/// A guest program being assembled; `pc` offsets are relative to the image start.
pub struct Program {
    code: Vec<u32>,
    data: Vec<u8>,
}

impl Default for Program {
    fn default() -> Self {
        Self::new()
    }
}

impl Program {
    pub fn new() -> Self {
        Program {
            code: Vec::new(),
            data: Vec::new(),
        }
    }

    fn offset(&self) -> usize {
        HEADER + 4 * self.code.len()
    }

    /// rd = a 32-bit positive constant.
    pub fn li(&mut self, rd: u32, value: u32) -> &mut Self {
        let (hi, lo) = hi_lo(i64::from(value));
        if hi != 0 {
            self.code.push(lui(rd, hi));
            self.code.push(addi(rd, rd, lo));
        } else {
            self.code.push(addi(rd, ZERO, lo));
        }
        self
    }

    /// rd = image load address + `image_offset` (PC-relative).
    pub fn la_image(&mut self, rd: u32, image_offset: usize) -> &mut Self {
        let delta = image_offset as i64 - self.offset() as i64;
        let (hi, lo) = hi_lo(delta);
        self.code.push(auipc(rd, hi));
        self.code.push(addi(rd, rd, lo));
        self
    }

    /// rd = image load address + `delta` (for addresses far from the image).
    pub fn la_relative(&mut self, rd: u32, delta_from_image: i64) -> &mut Self {
        let delta = delta_from_image - self.offset() as i64;
        let (hi, lo) = hi_lo(delta);
        self.code.push(auipc(rd, hi));
        self.code.push(addi(rd, rd, lo));
        self
    }

    /// SBI call with a7 = ext, a6 = fid (a0..a2 set by the caller beforehand).
    pub fn ecall(&mut self, ext: u32, fid: u32) -> &mut Self {
        self.li(A7, ext);
        self.li(A6, fid);
        self.code.push(ECALL);
        self
    }

    /// Prints the SBI error code in a0 as one character: 'F' + error ('F' = success,
    /// 'E' = -1, 'D' = -2 NOT_SUPPORTED, 'C' = -3 INVALID_PARAM).
    pub fn report_a0(&mut self) -> &mut Self {
        self.code.push(addi(A0, A0, i32::from(b'F')));
        self.li(A7, 1);
        self.code.push(ECALL);
        self
    }

    /// Legacy putchar of a constant byte.
    pub fn putchar(&mut self, c: u8) -> &mut Self {
        self.li(A0, u32::from(c));
        self.li(A7, 1);
        self.code.push(ECALL);
        self
    }

    /// SBI SRST system_reset(shutdown, no reason).
    pub fn shutdown(&mut self) -> &mut Self {
        self.li(A0, 0);
        self.li(A1, 0);
        self.ecall(0x5352_5354, 0)
    }

    /// sw rs2, imm(rs1).
    pub fn sw(&mut self, rs2: u32, rs1: u32, imm: i32) -> &mut Self {
        self.code.push(store(2, rs2, rs1, imm));
        self
    }

    /// sh rs2, imm(rs1).
    pub fn sh(&mut self, rs2: u32, rs1: u32, imm: i32) -> &mut Self {
        self.code.push(store(1, rs2, rs1, imm));
        self
    }

    /// sb rs2, imm(rs1).
    pub fn sb(&mut self, rs2: u32, rs1: u32, imm: i32) -> &mut Self {
        self.code.push(store(0, rs2, rs1, imm));
        self
    }

    /// lw rd, imm(rs1).
    pub fn lw(&mut self, rd: u32, rs1: u32, imm: i32) -> &mut Self {
        self.code.push(load(2, rd, rs1, imm));
        self
    }

    /// lhu rd, imm(rs1).
    pub fn lhu(&mut self, rd: u32, rs1: u32, imm: i32) -> &mut Self {
        self.code.push(load(5, rd, rs1, imm));
        self
    }

    /// rd = rs1 + imm.
    pub fn addi(&mut self, rd: u32, rs1: u32, imm: i32) -> &mut Self {
        self.code.push(addi(rd, rs1, imm));
        self
    }

    /// rd = (rs1 >> shamt) & mask (mask < 2048).
    pub fn extract(&mut self, rd: u32, rs1: u32, shamt: u32, mask: i32) -> &mut Self {
        self.code
            .push((shamt << 20) | (rs1 << 15) | (5 << 12) | (rd << 7) | 0x13); // srli
        self.code
            .push((((mask as u32) & 0xfff) << 20) | (rd << 15) | (7 << 12) | (rd << 7) | 0x13); // andi
        self
    }

    /// Waits until the u16 at `addr_reg + offset` equals `expected` or a spin budget runs
    /// out; leaves the last value read in `T1`.
    pub fn wait_u16(&mut self, addr_reg: u32, offset: i32, expected: i32) -> &mut Self {
        self.li(T2, 200_000_000);
        self.code.push(load(5, T1, addr_reg, offset)); // loop: lhu t1
        self.code.push(addi(T4, T1, -expected));
        self.code.push(branch(0, T4, ZERO, 12)); // beq t4, zero, done
        self.code.push(addi(T2, T2, -1));
        self.code.push(branch(1, T2, ZERO, -16)); // bne t2, zero, loop
        self
    }

    /// Prints 'A' + the value in `reg` as one character.
    pub fn report_reg(&mut self, reg: u32) -> &mut Self {
        self.code.push(addi(A0, reg, i32::from(b'A')));
        self.li(A7, 1);
        self.code.push(ECALL);
        self
    }

    /// The position of the next instruction, for a later [`Program::jump_to`].
    pub fn label(&self) -> usize {
        self.code.len()
    }

    /// Jumps to `label` (j).
    pub fn jump_to(&mut self, label: usize) -> &mut Self {
        let offset = 4 * (label as i64 - self.code.len() as i64);
        self.code.push(jal(ZERO, offset as i32));
        self
    }

    /// Loops forever.
    pub fn spin(&mut self) -> &mut Self {
        self.code.push(SPIN);
        self
    }

    /// Address where the image is loaded (DRAM base + 2 MiB).
    pub const LOAD_ADDR: u64 = 0x8020_0000;

    /// Bytes placed at [`DATA_OFFSET`].
    pub fn data(&mut self, bytes: &[u8]) -> &mut Self {
        self.data = bytes.to_vec();
        self
    }

    /// The finished `Image`.
    pub fn image(&self) -> Vec<u8> {
        let mut img = vec![0u8; HEADER];
        img[0..4].copy_from_slice(&0x0400_006fu32.to_le_bytes()); // j +64: skip the header
        img[8..16].copy_from_slice(&0x20_0000u64.to_le_bytes()); // text_offset
        img[32..36].copy_from_slice(&2u32.to_le_bytes()); // version 0.2
        img[0x30..0x38].copy_from_slice(b"RISCV\0\0\0");
        img[0x38..0x3c].copy_from_slice(&0x0543_5352u32.to_le_bytes());
        for i in &self.code {
            img.extend_from_slice(&i.to_le_bytes());
        }
        assert!(img.len() <= DATA_OFFSET, "guest code overlaps its data");
        img.resize(DATA_OFFSET, 0);
        img.extend_from_slice(&self.data);
        let size = img.len().next_multiple_of(4096) as u64;
        img[16..24].copy_from_slice(&size.to_le_bytes()); // image_size
        img
    }
}
