//! The agent's container stats as containerd's cgroups v1 `Metrics` (what `ctr task
//! metrics` and CRI decode from a Stats reply).

use containerd_shim_protos::cgroups::metrics::{
    CPUStat, CPUUsage, MemoryEntry, MemoryStat, Metrics, PidsStat, Throttle,
};
use kata_agent_protocols::agent::StatsContainerResponse;
use protobuf::MessageField;

/// The type URL containerd's typeurl registry knows cgroups v1 metrics by: the bare
/// message name, as containerd's own shims send it (no `type.googleapis.com/` prefix,
/// which `ctr task metrics` rejects as "not found").
pub const METRICS_TYPE_URL: &str = "io.containerd.cgroups.v1.Metrics";

/// Wraps metrics in the `Any` a Stats reply carries.
pub fn to_any(metrics: &Metrics) -> protobuf::Result<protobuf::well_known_types::any::Any> {
    use protobuf::Message;
    Ok(protobuf::well_known_types::any::Any {
        type_url: METRICS_TYPE_URL.into(),
        value: metrics.write_to_bytes()?,
        ..Default::default()
    })
}

/// Converts an agent StatsContainer reply.
pub fn from_agent(stats: &StatsContainerResponse) -> Metrics {
    let mut metrics = Metrics::new();
    let Some(cgroup) = stats.cgroup_stats.as_ref() else {
        return metrics;
    };
    if let Some(cpu) = cgroup.cpu_stats.as_ref() {
        let usage = cpu.cpu_usage.as_ref();
        let throttling = cpu.throttling_data.as_ref();
        metrics.cpu = MessageField::some(CPUStat {
            usage: MessageField::some(CPUUsage {
                total: usage.map(|u| u.total_usage).unwrap_or(0),
                kernel: usage.map(|u| u.usage_in_kernelmode).unwrap_or(0),
                user: usage.map(|u| u.usage_in_usermode).unwrap_or(0),
                per_cpu: usage.map(|u| u.percpu_usage.clone()).unwrap_or_default(),
                ..Default::default()
            }),
            throttling: MessageField::some(Throttle {
                periods: throttling.map(|t| t.periods).unwrap_or(0),
                throttled_periods: throttling.map(|t| t.throttled_periods).unwrap_or(0),
                throttled_time: throttling.map(|t| t.throttled_time).unwrap_or(0),
                ..Default::default()
            }),
            ..Default::default()
        });
    }
    if let Some(memory) = cgroup.memory_stats.as_ref() {
        let usage = memory.usage.as_ref();
        metrics.memory = MessageField::some(MemoryStat {
            cache: memory.cache,
            usage: MessageField::some(MemoryEntry {
                limit: usage.map(|u| u.limit).unwrap_or(0),
                usage: usage.map(|u| u.usage).unwrap_or(0),
                max: usage.map(|u| u.max_usage).unwrap_or(0),
                failcnt: usage.map(|u| u.failcnt).unwrap_or(0),
                ..Default::default()
            }),
            rss: memory.stats.get("anon").copied().unwrap_or(0),
            ..Default::default()
        });
    }
    if let Some(pids) = cgroup.pids_stats.as_ref() {
        metrics.pids = MessageField::some(PidsStat {
            current: pids.current,
            limit: pids.limit,
            ..Default::default()
        });
    }
    metrics
}

#[cfg(test)]
mod tests {
    use super::*;
    use kata_agent_protocols::agent::{
        CgroupStats, CpuStats, CpuUsage, MemoryData, MemoryStats, PidsStats,
    };

    #[test]
    fn agent_stats_map_to_v1_metrics() {
        let stats = StatsContainerResponse {
            cgroup_stats: MessageField::some(CgroupStats {
                cpu_stats: MessageField::some(CpuStats {
                    cpu_usage: MessageField::some(CpuUsage {
                        total_usage: 5,
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                memory_stats: MessageField::some(MemoryStats {
                    usage: MessageField::some(MemoryData {
                        usage: 7,
                        limit: 9,
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                pids_stats: MessageField::some(PidsStats {
                    current: 2,
                    limit: 64,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        let metrics = from_agent(&stats);
        assert_eq!(metrics.cpu.usage.total, 5);
        assert_eq!(
            (metrics.memory.usage.usage, metrics.memory.usage.limit),
            (7, 9)
        );
        assert_eq!((metrics.pids.current, metrics.pids.limit), (2, 64));
        assert_eq!(from_agent(&StatsContainerResponse::new()), Metrics::new());
    }

    #[test]
    fn metrics_travel_under_containerds_type_url() {
        use protobuf::Message;
        let mut metrics = Metrics::new();
        metrics.pids = MessageField::some(PidsStat {
            current: 3,
            limit: 64,
            ..Default::default()
        });
        let any = to_any(&metrics).unwrap();
        assert_eq!(any.type_url, "io.containerd.cgroups.v1.Metrics");
        assert_eq!(Metrics::parse_from_bytes(&any.value).unwrap(), metrics);
    }
}
