//! Agent settings: `agent.*` keys of the kernel command line, then environment overrides,
//! then command-line flags (host mode).

use std::fmt;

/// Default ttrpc listen address inside the VM: any CID, port 1024.
pub const DEFAULT_SERVER_ADDR: &str = "vsock://-1:1024";

/// Log verbosity, ordered from most to least severe.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum LogLevel {
    /// Failures only.
    Error,
    /// Failures and suspicious input.
    Warn,
    /// Lifecycle events (the default).
    Info,
    /// Every RPC.
    Debug,
}

impl LogLevel {
    /// Parses Kata's level names (`critical`/`error`/`warn`/`info`/`debug`/`trace`).
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "critical" | "error" | "fatal" | "panic" => Some(Self::Error),
            "warn" | "warning" => Some(Self::Warn),
            "info" => Some(Self::Info),
            "debug" | "trace" => Some(Self::Debug),
            _ => None,
        }
    }
}

/// What the agent was told to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AgentConfig {
    /// ttrpc listen address: `vsock://CID:PORT` or `unix:///path`.
    pub server_addr: String,
    /// vsock port for the JSON log stream; 0 logs to stderr only.
    pub log_vport: u32,
    /// Host vsock port to dial once the ttrpc server serves (the runtime's readiness
    /// listener); 0 announces nothing.
    pub ready_vport: u32,
    /// Log verbosity.
    pub log_level: LogLevel,
    /// Whether a debug console was requested (not provided by this agent).
    pub debug_console: bool,
}

impl Default for AgentConfig {
    fn default() -> Self {
        Self {
            server_addr: DEFAULT_SERVER_ADDR.to_string(),
            log_vport: kata_agent_protocols::AGENT_LOG_VSOCK_PORT,
            ready_vport: 0,
            log_level: LogLevel::Info,
            debug_console: false,
        }
    }
}

/// A setting the agent could not accept.
#[derive(Debug, PartialEq, Eq)]
pub struct ConfigError {
    /// Where the setting came from: `kernel cmdline`, `environment`, `flag`.
    pub source: &'static str,
    /// The key, e.g. `agent.log_vport`.
    pub key: String,
    /// Why it was refused.
    pub reason: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} key {}: {}", self.source, self.key, self.reason)
    }
}

impl std::error::Error for ConfigError {}

impl AgentConfig {
    /// Applies the `agent.*` words of a kernel command line. Unknown `agent.*` keys are
    /// returned so the caller can warn about them (Kata has many this agent ignores).
    pub fn apply_cmdline(&mut self, cmdline: &str) -> Result<Vec<String>, ConfigError> {
        let mut ignored = Vec::new();
        for word in cmdline.split_whitespace() {
            let (key, value) = word.split_once('=').unwrap_or((word, ""));
            if !key.starts_with("agent.") {
                continue;
            }
            if !self.apply(key, value, "kernel cmdline")? {
                ignored.push(key.to_string());
            }
        }
        Ok(ignored)
    }

    /// Applies `KATA_AGENT_SERVER_ADDR` and `KATA_AGENT_LOG_LEVEL` when set.
    pub fn apply_env(&mut self, get: impl Fn(&str) -> Option<String>) -> Result<(), ConfigError> {
        if let Some(addr) = get("KATA_AGENT_SERVER_ADDR") {
            self.apply("agent.server_addr", &addr, "environment")?;
        }
        if let Some(level) = get("KATA_AGENT_LOG_LEVEL") {
            self.apply("agent.log", &level, "environment")?;
        }
        Ok(())
    }

    /// Applies one key; `Ok(false)` when the key is not one this agent knows.
    pub fn apply(
        &mut self,
        key: &str,
        value: &str,
        source: &'static str,
    ) -> Result<bool, ConfigError> {
        let error = |reason: String| ConfigError {
            source,
            key: key.to_string(),
            reason,
        };
        match key {
            "agent.log" => {
                self.log_level = LogLevel::parse(value)
                    .ok_or_else(|| error(format!("unknown log level '{value}'")))?;
            }
            "agent.server_addr" => {
                if !(value.starts_with("vsock://") || value.starts_with("unix://")) {
                    return Err(error(format!(
                        "'{value}' is neither vsock://CID:PORT nor unix:///PATH"
                    )));
                }
                self.server_addr = value.to_string();
            }
            "agent.log_vport" => {
                self.log_vport = value
                    .parse()
                    .map_err(|_| error(format!("'{value}' is not a port number")))?;
            }
            "agent.ready_vport" => {
                self.ready_vport = value
                    .parse()
                    .map_err(|_| error(format!("'{value}' is not a port number")))?;
            }
            "agent.debug_console" => self.debug_console = true,
            _ => return Ok(false),
        }
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_listen_on_vsock_1024_and_log_on_1025() {
        let config = AgentConfig::default();
        assert_eq!(config.server_addr, "vsock://-1:1024");
        assert_eq!(config.log_vport, 1025);
        assert_eq!(config.log_level, LogLevel::Info);
        assert!(!config.debug_console);
    }

    #[test]
    fn cmdline_keys_apply_and_unknown_ones_are_reported() {
        let mut config = AgentConfig::default();
        let ignored = config
            .apply_cmdline(
                "console=ttyS0 agent.log=debug agent.log_vport=2000 agent.ready_vport=1026 agent.hotplug_timeout=3 quiet",
            )
            .unwrap();
        assert_eq!(config.log_level, LogLevel::Debug);
        assert_eq!(config.log_vport, 2000);
        assert_eq!(config.ready_vport, 1026);
        assert_eq!(ignored, vec!["agent.hotplug_timeout".to_string()]);
    }

    #[test]
    fn bad_values_name_the_key() {
        let mut config = AgentConfig::default();
        let err = config.apply_cmdline("agent.log=loud").unwrap_err();
        assert_eq!(err.key, "agent.log");
        assert!(err.to_string().contains("kernel cmdline key agent.log"));
        let err = config.apply_cmdline("agent.log_vport=x").unwrap_err();
        assert_eq!(err.key, "agent.log_vport");
        let err = config
            .apply_env(|k| (k == "KATA_AGENT_SERVER_ADDR").then(|| "tcp://1".to_string()))
            .unwrap_err();
        assert_eq!(err.source, "environment");
    }
}
