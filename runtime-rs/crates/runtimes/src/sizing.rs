//! The sandbox VM's size, fixed at boot (kata-rv has no CPU or memory hotplug), and the
//! check that a container's limits fit in it.
//!
//! The size follows Kata's static sandbox sizing (`static_sandbox_resource_mgmt`;
//! src/runtime/pkg/oci/utils.go `SandboxConfig`/`CalculateSandboxSizing`, runtime-rs
//! resource/src/cpu_mem/initial_size.rs):
//! - base: `default_vcpus` / `default_memory`, replaced by the enabled
//!   `io.katacontainers.config.hypervisor.*` annotations ([`kata_config::annotations`]);
//! - workload: for a pod sandbox, containerd's `io.kubernetes.cri.sandbox-*` annotations
//!   (the sum of the pod's limits); for a single container (`ctr run`), its own
//!   `linux.resources`, any part it lacks taken from those annotations;
//! - vCPUs = ceil(base + quota / period), at least 1 (f32, as Kata computes it); with an
//!   unconstrained quota (< 0), ceil(shares / 1024) (Kata's cpuManagerPolicy=static rule);
//! - memory = base + the workload's bytes rounded up to 2 MiB (Kata runtime-rs aligns
//!   to 2 MiB).
//!
//! Kata logs and ignores a sizing annotation it cannot parse; kata-rv refuses it.

use std::collections::HashMap;

use kata_config::annotations::{DEFAULT_MEMORY, DEFAULT_VCPUS};
use kata_config::{Config, MAX_VCPUS};
use oci_spec::runtime::LinuxResources;

use crate::cri::{self, Role, SandboxResources};
use crate::error::{Code, RuntimeError, RuntimeResult};
use crate::sandbox::PodSetup;

/// The CPU period the kernel uses when a quota comes without one (`cpu.cfs_period_us`).
pub const DEFAULT_CPU_PERIOD: u64 = 100_000;

const MIB: u64 = 1 << 20;

/// vCPUs and memory of a sandbox VM.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VmSize {
    /// vCPUs.
    pub vcpus: u8,
    /// Guest memory in MiB.
    pub memory_mib: u32,
}

/// What the pod's workload adds to the base size, and where each part came from.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Workload {
    /// vCPUs (fractional).
    pub vcpus: f32,
    /// What `vcpus` came from (an annotation or a spec field), if anything.
    pub vcpus_from: Option<&'static str>,
    /// MiB.
    pub memory_mib: u64,
    /// What `memory_mib` came from, if anything.
    pub memory_from: Option<&'static str>,
}

/// Bytes of a memory limit as MiB, rounded up to a multiple of 2; unconstrained (<= 0): 0.
fn limit_mib(bytes: i64) -> u64 {
    u64::try_from(bytes).map_or(0, |b| b.div_ceil(2 * MIB) * 2)
}

fn invalid(message: String) -> RuntimeError {
    RuntimeError::new(Code::InvalidArgument, message)
}

/// The workload containerd's CRI announces for the pod.
fn from_cri(resources: &SandboxResources) -> RuntimeResult<Workload> {
    let mut workload = Workload::default();
    if resources.cpu_quota > 0 {
        if resources.cpu_period == 0 {
            return Err(invalid(format!(
                "annotation {}=\"0\" (or absent) with {}=\"{}\": the quota needs a period",
                cri::SANDBOX_CPU_PERIOD,
                cri::SANDBOX_CPU_QUOTA,
                resources.cpu_quota
            )));
        }
        workload.vcpus = resources.cpu_quota as f32 / resources.cpu_period as f32;
        workload.vcpus_from = Some(cri::SANDBOX_CPU_QUOTA);
    } else if resources.cpu_quota < 0 && resources.cpu_shares > 0 {
        workload.vcpus = resources.cpu_shares.div_ceil(1024) as f32;
        workload.vcpus_from = Some(cri::SANDBOX_CPU_SHARES);
    }
    workload.memory_mib = limit_mib(resources.memory);
    if workload.memory_mib > 0 {
        workload.memory_from = Some(cri::SANDBOX_MEMORY);
    }
    Ok(workload)
}

/// The CPU limit of `resources` as (quota, period), if it has a positive quota.
fn cpu_limit(resources: &LinuxResources) -> Option<(i64, u64)> {
    let cpu = resources.cpu().as_ref()?;
    let quota = cpu.quota().filter(|q| *q > 0)?;
    let period = cpu
        .period()
        .filter(|p| *p > 0)
        .unwrap_or(DEFAULT_CPU_PERIOD);
    Some((quota, period))
}

/// The memory limit of `resources` in bytes, if it has a positive one.
fn memory_limit(resources: &LinuxResources) -> Option<i64> {
    resources.memory().as_ref()?.limit().filter(|l| *l > 0)
}

/// The workload of a single container: its own limits.
fn from_spec(resources: &LinuxResources) -> Workload {
    let mut workload = Workload::default();
    if let Some((quota, period)) = cpu_limit(resources) {
        workload.vcpus = quota as f32 / period as f32;
        workload.vcpus_from = Some("linux.resources.cpu.quota");
    }
    if let Some(limit) = memory_limit(resources) {
        workload.memory_mib = limit_mib(limit);
        workload.memory_from = Some("linux.resources.memory.limit");
    }
    workload
}

/// What the pod adds to the base size (Kata: a pod sandbox from the CRI annotations; any
/// other spec from its resources, supplemented from the annotations).
pub fn workload(pod: &PodSetup) -> RuntimeResult<Workload> {
    let cri = cri::sandbox_resources(&pod.annotations)
        .map_err(|e| RuntimeError::caused(Code::InvalidArgument, "the pod's size", e))?;
    let cri = from_cri(&cri)?;
    if cri::role_of(&pod.annotations) == Role::Sandbox {
        return Ok(cri);
    }
    let mut own = pod.resources.as_ref().map(from_spec).unwrap_or_default();
    if own.vcpus_from.is_none() {
        (own.vcpus, own.vcpus_from) = (cri.vcpus, cri.vcpus_from);
    }
    if own.memory_from.is_none() {
        (own.memory_mib, own.memory_from) = (cri.memory_mib, cri.memory_from);
    }
    Ok(own)
}

/// Where the base value came from (the annotation or the configuration key), for messages.
fn base_source(
    annotations: &HashMap<String, String>,
    annotation: &str,
    key: &str,
    value: impl std::fmt::Display,
) -> String {
    match annotations.get(annotation) {
        Some(given) => format!("annotation {annotation}={given:?}"),
        None => format!("hypervisor.dragonball.{key} = {value}"),
    }
}

/// The host's physical memory in MiB (`MemTotal` of /proc/meminfo), if readable.
pub fn host_memory_mib() -> Option<u64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    let kib: u64 = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))?
        .trim()
        .strip_suffix("kB")?
        .trim()
        .parse()
        .ok()?;
    Some(kib / 1024)
}

/// A sized pod: its VM's size and the enabled annotations that were not applied.
#[derive(Clone, Debug, PartialEq)]
pub struct PodSize {
    /// The VM's size.
    pub size: VmSize,
    /// Enabled `io.katacontainers.config.hypervisor.*` annotations kata-rv ignores.
    pub ignored: Vec<String>,
}

/// The size of `pod`'s VM under `config`, refusing a size that is malformed, not
/// enabled, beyond Dragonball's vCPU limit or beyond `host_memory_mib` (when known).
pub fn vm_size(
    config: &Config,
    pod: &PodSetup,
    host_memory_mib: Option<u64>,
) -> RuntimeResult<PodSize> {
    let mut config = config.clone();
    let ignored = config
        .apply_annotations(&pod.annotations)
        .map_err(|e| RuntimeError::caused(Code::InvalidArgument, "the pod's size", e))?;
    let workload = workload(pod)?;
    let db = &config.hypervisor.dragonball;
    let added = |amount: String, from: Option<&str>| {
        from.map(|f| format!(" + {amount} from {f}"))
            .unwrap_or_default()
    };
    let vcpus = (db.default_vcpus + workload.vcpus).ceil().max(1.0);
    if vcpus > f32::from(MAX_VCPUS) {
        return Err(invalid(format!(
            "the pod's size: its VM would need {vcpus} vCPUs ({}{}), more than Dragonball's {MAX_VCPUS}",
            base_source(
                &pod.annotations,
                DEFAULT_VCPUS,
                "default_vcpus",
                db.default_vcpus
            ),
            added(workload.vcpus.to_string(), workload.vcpus_from),
        )));
    }
    let memory = u64::from(db.default_memory) + workload.memory_mib;
    let limit = host_memory_mib.unwrap_or(u64::MAX).min(u64::from(u32::MAX));
    if memory > limit {
        let whose = if host_memory_mib.is_some_and(|h| h <= u64::from(u32::MAX)) {
            "this host's memory"
        } else {
            "the largest VM"
        };
        return Err(invalid(format!(
            "the pod's size: its VM would need {memory} MiB ({}{}), more than {whose} ({limit} MiB)",
            base_source(
                &pod.annotations,
                DEFAULT_MEMORY,
                "default_memory",
                db.default_memory
            ),
            added(format!("{} MiB", workload.memory_mib), workload.memory_from),
        )));
    }
    Ok(PodSize {
        size: VmSize {
            // Both checked above: 1..=MAX_VCPUS and <= u32::MAX.
            vcpus: vcpus as u8,
            memory_mib: memory as u32,
        },
        ignored,
    })
}

/// Refuses container `id` if its limits exceed the VM: the VM cannot grow (no hotplug).
pub fn check_container(
    id: &str,
    resources: Option<&LinuxResources>,
    size: VmSize,
) -> RuntimeResult<()> {
    let Some(resources) = resources else {
        return Ok(());
    };
    if let Some(limit) = memory_limit(resources)
        && limit.unsigned_abs() > u64::from(size.memory_mib) * MIB
    {
        return Err(invalid(format!(
            "container {id}: its memory limit of {limit} bytes ({} MiB) is more than the sandbox VM's {} MiB; \
             the VM's size is fixed when the pod starts (no memory hotplug): size the pod for it \
             (its sandbox's limits or the default_memory annotation)",
            limit.unsigned_abs().div_ceil(MIB),
            size.memory_mib
        )));
    }
    if let Some((quota, period)) = cpu_limit(resources)
        && quota.unsigned_abs() as f64 > f64::from(size.vcpus) * period as f64
    {
        return Err(invalid(format!(
            "container {id}: its CPU limit of {} vCPUs (quota {quota} / period {period}) is more than the sandbox VM's {} vCPUs; \
             the VM's size is fixed when the pod starts (no CPU hotplug): size the pod for it \
             (its sandbox's limits or the default_vcpus annotation)",
            quota as f64 / period as f64,
            size.vcpus
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn config(extra: &str) -> Config {
        Config::parse(
            &format!(
                "[hypervisor.dragonball]\nkernel = \"/k\"\ninitrd = \"/i\"\n{extra}\n[agent.kata]\n[runtime]\n"
            ),
            Path::new("/c.toml"),
        )
        .unwrap()
    }

    fn pod(pairs: &[(&str, &str)]) -> PodSetup {
        PodSetup {
            annotations: pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ..Default::default()
        }
    }

    fn resources(json: &str) -> LinuxResources {
        serde_json::from_str(json).unwrap()
    }

    const SANDBOX: (&str, &str) = (cri::CONTAINER_TYPE, "sandbox");

    fn size(config: &Config, pod: &PodSetup) -> RuntimeResult<VmSize> {
        vm_size(config, pod, Some(16 * 1024)).map(|s| s.size)
    }

    #[test]
    fn without_anything_the_defaults_size_the_vm() {
        let size = size(&config(""), &pod(&[])).unwrap();
        assert_eq!(
            size,
            VmSize {
                vcpus: 1,
                memory_mib: 256
            }
        );
    }

    #[test]
    fn cri_sandbox_resources_are_added_to_the_defaults() {
        let c = config("default_vcpus = 1\ndefault_memory = 256");
        let p = pod(&[
            SANDBOX,
            (cri::SANDBOX_CPU_QUOTA, "220000"),
            (cri::SANDBOX_CPU_PERIOD, "100000"),
            (cri::SANDBOX_MEMORY, &(513 * MIB).to_string()),
        ]);
        // ceil(1 + 2.2) = 4; 256 + 514 (513 MiB rounded up to 2 MiB).
        assert_eq!(
            size(&c, &p).unwrap(),
            VmSize {
                vcpus: 4,
                memory_mib: 770
            }
        );
        // Kata's k8s-sandbox-vcpus-allocation: default_vcpus 0.75 + 1.2 → 2, 0 → 1.
        let c = config("enable_annotations = [\"default_vcpus\"]");
        let p = |vcpus: &str, quota: &str| {
            pod(&[
                SANDBOX,
                (DEFAULT_VCPUS, vcpus),
                (cri::SANDBOX_CPU_QUOTA, quota),
                (cri::SANDBOX_CPU_PERIOD, "100000"),
            ])
        };
        assert_eq!(size(&c, &p("0.75", "120000")).unwrap().vcpus, 2);
        assert_eq!(size(&c, &p("0.75", "25000")).unwrap().vcpus, 1);
        assert_eq!(size(&c, &p("0", "0")).unwrap().vcpus, 1);
    }

    #[test]
    fn unconstrained_quota_falls_back_to_shares_and_negative_memory_adds_nothing() {
        let p = pod(&[
            SANDBOX,
            (cri::SANDBOX_CPU_QUOTA, "-1"),
            (cri::SANDBOX_CPU_SHARES, "2048"),
            (cri::SANDBOX_MEMORY, "-1"),
        ]);
        assert_eq!(
            size(&config(""), &p).unwrap(),
            VmSize {
                vcpus: 3,
                memory_mib: 256
            }
        );
        // BestEffort: quota 0 with the cgroup floor of 2 shares adds nothing.
        let p = pod(&[
            SANDBOX,
            (cri::SANDBOX_CPU_QUOTA, "0"),
            (cri::SANDBOX_CPU_SHARES, "2"),
        ]);
        assert_eq!(size(&config(""), &p).unwrap().vcpus, 1);
    }

    #[test]
    fn a_single_container_is_sized_from_its_own_limits() {
        let p = PodSetup {
            resources: Some(resources(
                r#"{"cpu": {"quota": 150000, "period": 100000}, "memory": {"limit": 1073741824}}"#,
            )),
            ..pod(&[(cri::SANDBOX_MEMORY, "999999999999")])
        };
        assert_eq!(
            size(&config(""), &p).unwrap(),
            VmSize {
                vcpus: 3,
                memory_mib: 1280
            }
        );
        // A quota without a period counts in the kernel's default period.
        let p = PodSetup {
            resources: Some(resources(r#"{"cpu": {"quota": 200000}}"#)),
            ..pod(&[(cri::SANDBOX_MEMORY, &(64 * MIB).to_string())])
        };
        assert_eq!(
            size(&config(""), &p).unwrap(),
            VmSize {
                vcpus: 3,
                memory_mib: 320
            },
            "the memory the spec lacks comes from the annotation"
        );
    }

    #[test]
    fn bad_or_oversized_pods_are_refused_by_name() {
        let c = config("");
        for (pairs, names) in [
            (
                vec![SANDBOX, (cri::SANDBOX_MEMORY, "lots")],
                vec![cri::SANDBOX_MEMORY, "\"lots\""],
            ),
            (
                vec![SANDBOX, (cri::SANDBOX_CPU_QUOTA, "100000")],
                vec![cri::SANDBOX_CPU_PERIOD],
            ),
            (
                vec![
                    SANDBOX,
                    (cri::SANDBOX_CPU_QUOTA, "6400000"),
                    (cri::SANDBOX_CPU_PERIOD, "100000"),
                ],
                vec![cri::SANDBOX_CPU_QUOTA, "65 vCPUs", "64"],
            ),
            (
                vec![SANDBOX, (cri::SANDBOX_MEMORY, &(17u64 << 30).to_string())],
                vec![cri::SANDBOX_MEMORY, "17664 MiB", "16384 MiB"],
            ),
            (
                vec![(DEFAULT_VCPUS, "2")],
                vec![DEFAULT_VCPUS, "not enabled"],
            ),
        ] {
            let err = size(&c, &pod(&pairs)).unwrap_err();
            assert_eq!(err.code, Code::InvalidArgument, "{err}");
            for name in names {
                assert!(err.to_string().contains(name), "{name}: {err}");
            }
        }
        let c = config("enable_annotations = [\".*\"]");
        let err = size(&c, &pod(&[(DEFAULT_MEMORY, "20000")])).unwrap_err();
        assert!(
            err.to_string().contains(DEFAULT_MEMORY) && err.to_string().contains("\"20000\""),
            "{err}"
        );
        // Without a known host size, the bound is what a u32 of MiB holds.
        let p = pod(&[SANDBOX, (cri::SANDBOX_MEMORY, &i64::MAX.to_string())]);
        let err = vm_size(&c, &p, None).unwrap_err();
        assert!(err.to_string().contains("the largest VM"), "{err}");
    }

    #[test]
    fn container_limits_beyond_the_vm_are_refused() {
        let vm = VmSize {
            vcpus: 2,
            memory_mib: 512,
        };
        assert!(check_container("c", None, vm).is_ok());
        let fits = resources(
            r#"{"cpu": {"quota": 200000, "period": 100000}, "memory": {"limit": 536870912}}"#,
        );
        assert!(check_container("c", Some(&fits), vm).is_ok());
        let unlimited = resources(r#"{"cpu": {"quota": -1}, "memory": {"limit": -1}}"#);
        assert!(check_container("c", Some(&unlimited), vm).is_ok());
        let memory = resources(r#"{"memory": {"limit": 536870913}}"#);
        let err = check_container("app", Some(&memory), vm).unwrap_err();
        assert_eq!(err.code, Code::InvalidArgument);
        for part in ["container app", "536870913 bytes", "512 MiB"] {
            assert!(err.to_string().contains(part), "{part}: {err}");
        }
        let cpu = resources(r#"{"cpu": {"quota": 250000, "period": 100000}}"#);
        let err = check_container("app", Some(&cpu), vm).unwrap_err();
        for part in ["container app", "2.5 vCPUs", "quota 250000", "2 vCPUs"] {
            assert!(err.to_string().contains(part), "{part}: {err}");
        }
    }

    #[test]
    fn the_host_memory_is_read() {
        assert!(host_memory_mib().is_some_and(|m| m > 0));
    }
}
