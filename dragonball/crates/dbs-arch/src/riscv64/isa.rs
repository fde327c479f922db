//! The guest ISA as KVM reports it, turned into device-tree strings.

/// Names of KVM_RISCV_ISA_EXT_* ids for multi-letter extensions (index = id); single
/// letters (ids 0..=6 and 15) come from `config.isa` and are `None` here.
const EXT_NAMES: [Option<&str>; 26] = [
    None,                // A
    None,                // C
    None,                // D
    None,                // F
    None,                // H
    None,                // I
    None,                // M
    Some("svpbmt"),      // 7
    Some("sstc"),        // 8
    Some("svinval"),     // 9
    Some("zihintpause"), // 10
    Some("zicbom"),      // 11
    Some("zicboz"),      // 12
    Some("zbb"),         // 13
    Some("ssaia"),       // 14
    None,                // V
    Some("svnapot"),     // 16
    Some("zba"),         // 17
    Some("zbs"),         // 18
    Some("zicntr"),      // 19
    Some("zicsr"),       // 20
    Some("zifencei"),    // 21
    Some("zihpm"),       // 22
    Some("smstateen"),   // 23
    Some("zicond"),      // 24
    Some("zbc"),         // 25
];

/// KVM_RISCV_ISA_EXT_SSAIA.
pub const EXT_SSAIA: u64 = 14;

/// Every multi-letter extension id we know a name for.
pub fn known_extension_ids() -> impl Iterator<Item = (u64, &'static str)> {
    EXT_NAMES
        .iter()
        .enumerate()
        .filter_map(|(i, n)| n.map(|n| (i as u64, n)))
}

/// Single-letter extensions from the `config.isa` bitmap, in canonical order, without
/// `h` (the guest does not get the hypervisor extension).
pub fn letters_from_bitmap(bitmap: u64) -> String {
    const ORDER: &str = "iemafdqclbjtpvnsukorwxyzg";
    ORDER
        .chars()
        .filter(|c| bitmap & (1 << (*c as u8 - b'a')) != 0)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn letters_are_canonical_and_drop_h() {
        let bits = |s: &str| s.bytes().fold(0u64, |b, c| b | 1 << (c - b'a'));
        assert_eq!(letters_from_bitmap(bits("acdfhim")), "imafdc");
        assert_eq!(letters_from_bitmap(bits("imafdcv")), "imafdcv");
    }

    #[test]
    fn names_match_kvm_ids() {
        let names: Vec<_> = known_extension_ids().collect();
        assert!(names.contains(&(EXT_SSAIA, "ssaia")));
        assert!(names.contains(&(8, "sstc")));
        assert!(names.contains(&(20, "zicsr")));
    }
}
