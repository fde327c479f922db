//! SBI calls that KVM forwards to the VMM (KVM_EXIT_RISCV_SBI), decoded.
//!
//! KVM handles BASE, TIME, IPI, RFENCE, HSM, SRST… itself; what reaches userspace is the
//! legacy console, the debug console (DBCN, once enabled) and the experimental/vendor
//! ranges. Everything here is guest-controlled input and is decoded without panicking.

/// SBI_SUCCESS.
pub const SUCCESS: i64 = 0;
/// SBI_ERR_FAILURE.
pub const ERR_FAILURE: i64 = -1;
/// SBI_ERR_NOT_SUPPORTED.
pub const ERR_NOT_SUPPORTED: i64 = -2;
/// SBI_ERR_INVALID_PARAM.
pub const ERR_INVALID_PARAM: i64 = -3;

/// Legacy console putchar extension (v0.1).
pub const EXT_LEGACY_PUTCHAR: u64 = 0x01;
/// Legacy console getchar extension (v0.1).
pub const EXT_LEGACY_GETCHAR: u64 = 0x02;
/// Debug console extension "DBCN".
pub const EXT_DBCN: u64 = 0x4442_434e;

/// Most bytes one DBCN write/read moves; the guest retries with the rest.
pub const DBCN_MAX_CHUNK: u64 = 4096;

/// A decoded SBI call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SbiCall {
    /// Legacy putchar of one byte.
    LegacyPutchar(u8),
    /// Legacy getchar.
    LegacyGetchar,
    /// DBCN console_write of `len` bytes at guest-physical `addr`.
    DbcnWrite {
        /// Bytes requested (already capped at [`DBCN_MAX_CHUNK`]).
        len: u64,
        /// Guest-physical address.
        addr: u64,
    },
    /// DBCN console_read into `len` bytes at `addr`.
    DbcnRead {
        /// Buffer size (capped).
        len: u64,
        /// Guest-physical address.
        addr: u64,
    },
    /// DBCN console_write_byte.
    DbcnWriteByte(u8),
    /// A DBCN call with an address that does not fit in 64 bits.
    DbcnBadAddress,
    /// Anything else: answered NOT_SUPPORTED.
    Unsupported {
        /// Extension id (a7).
        ext: u64,
        /// Function id (a6).
        func: u64,
    },
}

/// The value returned to the guest in a0 (error) and a1 (value).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SbiRet {
    /// a0.
    pub error: i64,
    /// a1.
    pub value: u64,
}

impl SbiRet {
    /// Success with a value.
    pub fn ok(value: u64) -> Self {
        SbiRet {
            error: SUCCESS,
            value,
        }
    }

    /// An error code with value 0.
    pub fn err(error: i64) -> Self {
        SbiRet { error, value: 0 }
    }
}

/// Decodes an SBI exit: extension (a7), function (a6) and arguments a0..a5.
pub fn decode(ext: u64, func: u64, args: &[u64; 6]) -> SbiCall {
    match (ext, func) {
        (EXT_LEGACY_PUTCHAR, _) => SbiCall::LegacyPutchar(args[0] as u8),
        (EXT_LEGACY_GETCHAR, _) => SbiCall::LegacyGetchar,
        (EXT_DBCN, 0 | 1) => {
            // On rv64 the whole address is in base_lo; base_hi must be zero.
            if args[2] != 0 {
                return SbiCall::DbcnBadAddress;
            }
            let (len, addr) = (args[0].min(DBCN_MAX_CHUNK), args[1]);
            if func == 0 {
                SbiCall::DbcnWrite { len, addr }
            } else {
                SbiCall::DbcnRead { len, addr }
            }
        }
        (EXT_DBCN, 2) => SbiCall::DbcnWriteByte(args[0] as u8),
        (ext, func) => SbiCall::Unsupported { ext, func },
    }
}

/// Serves a decoded call: console output goes to `console`, DBCN writes read their bytes
/// from guest `memory` (a range outside it is INVALID_PARAM); reads have nothing to
/// return, and anything else is NOT_SUPPORTED.
pub fn serve<M>(call: SbiCall, memory: &M, console: &mut impl std::io::Write) -> SbiRet
where
    M: vm_memory::Bytes<vm_memory::GuestAddress> + ?Sized,
{
    match call {
        SbiCall::LegacyPutchar(c) | SbiCall::DbcnWriteByte(c) => {
            let _ = console.write_all(&[c]);
            SbiRet::ok(0)
        }
        SbiCall::LegacyGetchar => SbiRet::err(ERR_FAILURE),
        SbiCall::DbcnWrite { len, addr } => {
            let mut buf = vec![0u8; len as usize];
            match memory.read_slice(&mut buf, vm_memory::GuestAddress(addr)) {
                Ok(()) => {
                    let _ = console.write_all(&buf);
                    SbiRet::ok(len)
                }
                Err(_) => SbiRet::err(ERR_INVALID_PARAM),
            }
        }
        SbiCall::DbcnRead { .. } => SbiRet::ok(0),
        SbiCall::DbcnBadAddress => SbiRet::err(ERR_INVALID_PARAM),
        SbiCall::Unsupported { .. } => SbiRet::err(ERR_NOT_SUPPORTED),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_console_calls() {
        assert_eq!(
            decode(1, 0, &[b'x' as u64, 0, 0, 0, 0, 0]),
            SbiCall::LegacyPutchar(b'x')
        );
        assert_eq!(
            decode(EXT_DBCN, 0, &[10, 0x8000_1000, 0, 0, 0, 0]),
            SbiCall::DbcnWrite {
                len: 10,
                addr: 0x8000_1000
            }
        );
        assert_eq!(
            decode(EXT_DBCN, 2, &[0x141, 0, 0, 0, 0, 0]),
            SbiCall::DbcnWriteByte(0x41)
        );
    }

    #[test]
    fn dbcn_writes_come_from_guest_memory_or_fail() {
        use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};
        let memory: GuestMemoryMmap =
            GuestMemoryMmap::from_ranges(&[(GuestAddress(0x1000), 0x1000)]).unwrap();
        memory.write_slice(b"hello", GuestAddress(0x1ffb)).unwrap();
        let mut out = Vec::new();
        let at = |len, addr| decode(EXT_DBCN, 0, &[len, addr, 0, 0, 0, 0]);
        assert_eq!(serve(at(5, 0x1ffb), &memory, &mut out), SbiRet::ok(5));
        assert_eq!(out, b"hello");
        assert_eq!(
            serve(at(6, 0x1ffb), &memory, &mut out),
            SbiRet::err(ERR_INVALID_PARAM)
        );
        assert_eq!(
            serve(at(1, 0x10), &memory, &mut out),
            SbiRet::err(ERR_INVALID_PARAM)
        );
        assert_eq!(out, b"hello", "a failed write prints nothing");
    }

    #[test]
    fn hostile_calls_are_contained() {
        assert_eq!(
            decode(EXT_DBCN, 0, &[u64::MAX, u64::MAX, 0, 0, 0, 0]),
            SbiCall::DbcnWrite {
                len: DBCN_MAX_CHUNK,
                addr: u64::MAX
            }
        );
        assert_eq!(
            decode(EXT_DBCN, 1, &[1, 0, 7, 0, 0, 0]),
            SbiCall::DbcnBadAddress
        );
        assert_eq!(
            decode(EXT_DBCN, 99, &[0; 6]),
            SbiCall::Unsupported {
                ext: EXT_DBCN,
                func: 99
            }
        );
        assert_eq!(
            decode(0x0900_0000, 3, &[0; 6]),
            SbiCall::Unsupported {
                ext: 0x0900_0000,
                func: 3
            }
        );
    }
}
