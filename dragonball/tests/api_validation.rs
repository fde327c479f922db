//! API validation that needs no KVM: bad configuration and boot sources are clear errors
//! naming the culprit, and nothing is left behind.

use dragonball::{
    BootSourceConfig, ConsoleConfig, InstanceState, VmConfigInfo, VmmAction, VmmActionError,
    VmmData, start_vmm_thread,
};

fn config(vcpus: u8, mem: usize) -> VmConfigInfo {
    VmConfigInfo {
        vcpu_count: vcpus,
        mem_size_mib: mem,
        console: ConsoleConfig::None,
        seccomp: true,
        transparent_huge_pages: false,
    }
}

#[test]
fn zero_memory_and_zero_vcpus_are_rejected() {
    let (client, vmm) = start_vmm_thread().unwrap();
    let e = client
        .request(VmmAction::SetVmConfiguration(config(1, 0)))
        .unwrap_err();
    assert!(matches!(e, VmmActionError::InvalidVmConfig(_)));
    assert!(
        e.to_string()
            .contains("mem_size_mib 0 is below the minimum"),
        "{e}"
    );
    let e = client
        .request(VmmAction::SetVmConfiguration(config(0, 128)))
        .unwrap_err();
    assert!(e.to_string().contains("vcpu_count 0"), "{e}");
    // A valid config is kept and read back.
    client
        .request(VmmAction::SetVmConfiguration(config(2, 256)))
        .unwrap();
    assert_eq!(
        client.request(VmmAction::GetVmConfiguration).unwrap(),
        VmmData::VmConfiguration(config(2, 256))
    );
    client.request(VmmAction::ShutdownMicroVm).unwrap();
    assert_eq!(vmm.join().unwrap(), 0);
}

#[test]
fn missing_kernel_and_initrd_are_named() {
    let (client, vmm) = start_vmm_thread().unwrap();
    let e = client
        .request(VmmAction::ConfigureBootSource(BootSourceConfig {
            kernel_path: "/nonexistent/Image".into(),
            initrd_path: None,
            boot_args: None,
        }))
        .unwrap_err();
    assert!(e.to_string().contains("kernel '/nonexistent/Image'"), "{e}");
    let e = client
        .request(VmmAction::ConfigureBootSource(BootSourceConfig {
            kernel_path: "/proc/self/exe".into(),
            initrd_path: Some("/tmp".into()),
            boot_args: None,
        }))
        .unwrap_err();
    assert!(
        e.to_string()
            .contains("initrd '/tmp' is not a regular file"),
        "{e}"
    );
    drop(client);
    // Dropping the client ends the VMM thread.
    assert_eq!(vmm.join().unwrap(), 0);
}

#[test]
fn start_without_boot_source_is_an_error_and_state_stays_uninitialized() {
    let (client, vmm) = start_vmm_thread().unwrap();
    let e = client.request(VmmAction::StartMicroVm).unwrap_err();
    assert!(e.to_string().contains("no boot source"), "{e}");
    assert_eq!(
        client.request(VmmAction::GetInstanceState).unwrap(),
        VmmData::InstanceState(InstanceState::Uninitialized)
    );
    let e = client.request(VmmAction::PauseMicroVm).unwrap_err();
    assert!(matches!(e, VmmActionError::NotRunning { .. }), "{e}");
    client.request(VmmAction::ShutdownMicroVm).unwrap();
    vmm.join().unwrap();
    // The thread is gone: further requests say so.
    assert!(matches!(
        client.request(VmmAction::GetInstanceState),
        Err(VmmActionError::VmmGone)
    ));
}
