//! Tiny hand-assembled x86_64 guests for VMM tests: an ELF with a PVH note whose 32-bit
//! code pokes devices, reports values on COM1 as single characters, and resets the
//! machine through the i8042. The same builder API as `rv_guest`, so a test can target
//! both. No toolchain needed.

#![allow(dead_code)]

/// 32-bit register numbers as the ModRM byte encodes them.
pub const EAX: u32 = 0;
pub const ECX: u32 = 1;
pub const EDX: u32 = 2;
pub const EBX: u32 = 3;
pub const ESI: u32 = 6;
pub const EDI: u32 = 7;
/// Names shared with `rv_guest`: a base register, a value register, an address register.
pub const T0: u32 = EBX;
pub const T1: u32 = ECX;
pub const T3: u32 = ESI;

/// Where data go, relative to the load address.
pub const DATA_OFFSET: usize = 0x800;
const COM1: u32 = 0x3f8;
const I8042_COMMAND: u8 = 0x64;
/// File offset of the loaded segment in the ELF.
const SEGMENT_OFFSET: usize = 0x1000;

fn modrm(mode: u32, reg: u32, rm: u32) -> u8 {
    ((mode << 6) | (reg << 3) | rm) as u8
}

/// A guest program being assembled.
#[derive(Default)]
pub struct Program {
    code: Vec<u8>,
    data: Vec<u8>,
}

impl Program {
    /// Address where the code is loaded (and entered).
    pub const LOAD_ADDR: u64 = 0x10_0000;

    pub fn new() -> Self {
        Self::default()
    }

    fn emit(&mut self, bytes: &[u8]) -> &mut Self {
        self.code.extend_from_slice(bytes);
        self
    }

    /// `op reg, [base + disp32]` style memory operand.
    fn mem(&mut self, opcode: &[u8], reg: u32, base: u32, disp: i32) -> &mut Self {
        assert_ne!(base, 4, "esp as a base needs a SIB byte");
        self.emit(opcode);
        self.emit(&[modrm(2, reg, base)]);
        self.emit(&disp.to_le_bytes())
    }

    /// `op r/m32, imm32` on a register (group-1 arithmetic: /0 add, /4 and, /7 cmp).
    fn group1(&mut self, ext: u32, reg: u32, imm: u32) -> &mut Self {
        self.emit(&[0x81, modrm(3, ext, reg)]);
        self.emit(&imm.to_le_bytes())
    }

    /// reg = a 32-bit constant.
    pub fn li(&mut self, reg: u32, value: u32) -> &mut Self {
        self.emit(&[0xb8 + reg as u8]);
        self.emit(&value.to_le_bytes())
    }

    /// reg = load address + `image_offset`.
    pub fn la_image(&mut self, reg: u32, image_offset: usize) -> &mut Self {
        self.li(reg, (Self::LOAD_ADDR + image_offset as u64) as u32)
    }

    /// [base + disp] = src (32 bits).
    pub fn sw(&mut self, src: u32, base: u32, disp: i32) -> &mut Self {
        self.mem(&[0x89], src, base, disp)
    }

    /// [base + disp] = low 16 bits of src.
    pub fn sh(&mut self, src: u32, base: u32, disp: i32) -> &mut Self {
        self.mem(&[0x66, 0x89], src, base, disp)
    }

    /// dst = src + imm.
    pub fn addi(&mut self, dst: u32, src: u32, imm: i32) -> &mut Self {
        if dst != src {
            self.emit(&[0x89, modrm(3, src, dst)]);
        }
        self.group1(0, dst, imm as u32)
    }

    /// [base + disp] = low byte of src (eax, ecx, edx or ebx).
    pub fn sb(&mut self, src: u32, base: u32, disp: i32) -> &mut Self {
        assert!(src < 4, "only al/cl/dl/bl have a byte form");
        self.mem(&[0x88], src, base, disp)
    }

    /// dst = [base + disp] (32 bits).
    pub fn lw(&mut self, dst: u32, base: u32, disp: i32) -> &mut Self {
        self.mem(&[0x8b], dst, base, disp)
    }

    /// dst = [base + disp] (16 bits, zero-extended).
    pub fn lhu(&mut self, dst: u32, base: u32, disp: i32) -> &mut Self {
        self.mem(&[0x0f, 0xb7], dst, base, disp)
    }

    /// dst = (src >> shift) & mask.
    pub fn extract(&mut self, dst: u32, src: u32, shift: u32, mask: u32) -> &mut Self {
        if dst != src {
            self.emit(&[0x89, modrm(3, src, dst)]);
        }
        self.emit(&[0xc1, modrm(3, 5, dst), shift as u8]);
        self.group1(4, dst, mask)
    }

    /// Waits until the u16 at `addr_reg + offset` equals `expected` or a spin budget runs
    /// out; leaves the last value read in `T1` (edi is the counter).
    pub fn wait_u16(&mut self, addr_reg: u32, offset: i32, expected: u32) -> &mut Self {
        self.li(EDI, 200_000_000);
        let top = self.code.len();
        self.lhu(T1, addr_reg, offset);
        self.group1(7, T1, expected); // cmp
        self.emit(&[0x74, 8]); // je done (over dec + jne)
        self.emit(&[0xff, modrm(3, 1, EDI)]); // dec edi
        let back = top as i64 - (self.code.len() as i64 + 6);
        self.emit(&[0x0f, 0x85]); // jne top
        self.emit(&(back as i32).to_le_bytes())
    }

    /// Prints 'A' + the value in `reg` as one character.
    pub fn report_reg(&mut self, reg: u32) -> &mut Self {
        if reg != EAX {
            self.emit(&[0x89, modrm(3, reg, EAX)]);
        }
        self.group1(0, EAX, u32::from(b'A'));
        self.li(EDX, COM1);
        self.emit(&[0xee]) // out dx, al
    }

    /// Prints a constant byte.
    pub fn putchar(&mut self, c: u8) -> &mut Self {
        self.emit(&[0xb0, c]); // mov al, c
        self.li(EDX, COM1);
        self.emit(&[0xee])
    }

    /// Pulses the reset line through the i8042 controller.
    pub fn shutdown(&mut self) -> &mut Self {
        self.emit(&[0xb0, 0xfe, 0xe6, I8042_COMMAND]) // mov al, 0xfe; out 0x64, al
    }

    /// The position of the next instruction, for a later [`Program::jump_to`].
    pub fn label(&self) -> usize {
        self.code.len()
    }

    /// Jumps to `label` (jmp rel32).
    pub fn jump_to(&mut self, label: usize) -> &mut Self {
        let rel = label as i64 - (self.code.len() as i64 + 5);
        self.emit(&[0xe9]);
        self.emit(&(rel as i32).to_le_bytes())
    }

    /// Halts forever.
    pub fn spin(&mut self) -> &mut Self {
        self.emit(&[0xf4, 0xeb, 0xfd]) // hlt; jmp hlt
    }

    /// Bytes placed at [`DATA_OFFSET`].
    pub fn data(&mut self, bytes: &[u8]) -> &mut Self {
        self.data = bytes.to_vec();
        self
    }

    /// The finished ELF: one loaded segment and the PVH entry note.
    pub fn image(&self) -> Vec<u8> {
        assert!(
            self.code.len() <= DATA_OFFSET,
            "guest code overlaps its data"
        );
        let mut segment = self.code.clone();
        segment.resize(DATA_OFFSET, 0);
        segment.extend_from_slice(&self.data);

        const EHDR: usize = 64;
        const PHDR: usize = 56;
        let note_offset = EHDR + 2 * PHDR;
        let mut note = Vec::new();
        note.extend_from_slice(&4u32.to_le_bytes()); // namesz
        note.extend_from_slice(&4u32.to_le_bytes()); // descsz
        note.extend_from_slice(&18u32.to_le_bytes()); // XEN_ELFNOTE_PHYS32_ENTRY
        note.extend_from_slice(b"Xen\0");
        note.extend_from_slice(&(Self::LOAD_ADDR as u32).to_le_bytes());

        let mut elf = Vec::new();
        elf.extend_from_slice(b"\x7fELF");
        elf.extend_from_slice(&[2, 1, 1, 0]); // 64-bit, little endian, version 1, SysV
        elf.resize(16, 0);
        elf.extend_from_slice(&2u16.to_le_bytes()); // ET_EXEC
        elf.extend_from_slice(&62u16.to_le_bytes()); // EM_X86_64
        elf.extend_from_slice(&1u32.to_le_bytes());
        elf.extend_from_slice(&Self::LOAD_ADDR.to_le_bytes()); // e_entry
        elf.extend_from_slice(&(EHDR as u64).to_le_bytes()); // e_phoff
        elf.extend_from_slice(&0u64.to_le_bytes()); // e_shoff
        elf.extend_from_slice(&0u32.to_le_bytes()); // e_flags
        for half in [EHDR as u16, PHDR as u16, 2, 0, 0, 0] {
            elf.extend_from_slice(&half.to_le_bytes());
        }
        let phdr = |elf: &mut Vec<u8>,
                    kind: u32,
                    flags: u32,
                    offset: usize,
                    addr: u64,
                    size: usize,
                    align: u64| {
            elf.extend_from_slice(&kind.to_le_bytes());
            elf.extend_from_slice(&flags.to_le_bytes());
            elf.extend_from_slice(&(offset as u64).to_le_bytes());
            elf.extend_from_slice(&addr.to_le_bytes()); // p_vaddr
            elf.extend_from_slice(&addr.to_le_bytes()); // p_paddr
            elf.extend_from_slice(&(size as u64).to_le_bytes()); // p_filesz
            elf.extend_from_slice(&(size as u64).to_le_bytes()); // p_memsz
            elf.extend_from_slice(&align.to_le_bytes());
        };
        phdr(
            &mut elf,
            1,
            7,
            SEGMENT_OFFSET,
            Self::LOAD_ADDR,
            segment.len(),
            0x1000,
        ); // PT_LOAD
        phdr(&mut elf, 4, 4, note_offset, 0, note.len(), 4); // PT_NOTE
        elf.extend_from_slice(&note);
        elf.resize(SEGMENT_OFFSET, 0);
        elf.extend_from_slice(&segment);
        elf
    }
}
