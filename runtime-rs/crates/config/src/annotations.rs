//! Kata's configuration annotations: `io.katacontainers.config.hypervisor.<key>` on the
//! sandbox's spec overrides `[hypervisor.dragonball] <key>` where `enable_annotations`
//! allows it.
//!
//! The rules are Kata's (src/runtime/pkg/oci/utils.go `addAnnotations`,
//! kata-types `SecurityInfo::is_annotation_enabled`):
//! - `enable_annotations` is a list of regular expressions matched, unanchored, against
//!   the key after the prefix (`"default_vcpus"`, `"default_.*"`, `".*"`);
//! - an annotation with the hypervisor prefix that no expression matches is refused;
//! - annotations outside that prefix are not this module's business (ignored here).
//!
//! kata-rv applies `default_vcpus` and `default_memory`; an enabled hypervisor
//! annotation it does not implement is returned to the caller (to log) and not applied.

use std::collections::HashMap;
use std::path::PathBuf;

use regex::RegexSet;

use crate::{Config, MAX_VCPUS};

/// The prefix of the hypervisor annotations that `enable_annotations` governs.
pub const HYPERVISOR_PREFIX: &str = "io.katacontainers.config.hypervisor.";
/// Overrides `default_vcpus`: a number of vCPUs, may be fractional (rounded up at boot).
pub const DEFAULT_VCPUS: &str = "io.katacontainers.config.hypervisor.default_vcpus";
/// Overrides `default_memory`: MiB.
pub const DEFAULT_MEMORY: &str = "io.katacontainers.config.hypervisor.default_memory";
/// The least guest memory, in MiB, the configuration and the annotation accept.
pub const MIN_MEMORY_MIB: u32 = 64;

/// An annotation that cannot be applied.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AnnotationError {
    /// Its key is not matched by `enable_annotations`.
    #[error(
        "annotation {key}={value:?} is not enabled: add a pattern matching \"{suffix}\" to [hypervisor.dragonball] enable_annotations in {}",
        file.display()
    )]
    NotEnabled {
        /// The annotation.
        key: String,
        /// Its value.
        value: String,
        /// The key after [`HYPERVISOR_PREFIX`].
        suffix: String,
        /// The configuration file.
        file: PathBuf,
    },
    /// Its value is malformed or out of range.
    #[error("annotation {key}={value:?}: {reason}")]
    BadValue {
        /// The annotation.
        key: String,
        /// Its value.
        value: String,
        /// Why.
        reason: String,
    },
}

/// Compiles `enable_annotations`; the error names the first bad expression.
pub(crate) fn compile(patterns: &[String]) -> Result<RegexSet, String> {
    if let Some((pattern, e)) = patterns
        .iter()
        .find_map(|p| regex::Regex::new(p).err().map(|e| (p, e)))
    {
        return Err(format!("'{pattern}' is not a regular expression: {e}"));
    }
    RegexSet::new(patterns).map_err(|e| e.to_string())
}

fn enabled(set: Option<&RegexSet>, key: &str) -> bool {
    key.strip_prefix(HYPERVISOR_PREFIX)
        .is_some_and(|suffix| set.is_some_and(|set| set.is_match(suffix)))
}

fn bad(key: &str, value: &str, reason: impl Into<String>) -> AnnotationError {
    AnnotationError::BadValue {
        key: key.into(),
        value: value.into(),
        reason: reason.into(),
    }
}

fn parse_vcpus(value: &str) -> Result<f32, AnnotationError> {
    let vcpus: f32 = value
        .trim()
        .parse()
        .map_err(|_| bad(DEFAULT_VCPUS, value, "not a number of vCPUs"))?;
    if !(vcpus.is_finite() && (0.0..=f32::from(MAX_VCPUS)).contains(&vcpus)) {
        return Err(bad(
            DEFAULT_VCPUS,
            value,
            format!("not in 0..={MAX_VCPUS} (Dragonball's vCPU limit)"),
        ));
    }
    Ok(vcpus)
}

fn parse_memory(value: &str) -> Result<u32, AnnotationError> {
    let mib: u32 = value
        .trim()
        .parse()
        .map_err(|_| bad(DEFAULT_MEMORY, value, "not a whole number of MiB"))?;
    if mib < MIN_MEMORY_MIB {
        return Err(bad(
            DEFAULT_MEMORY,
            value,
            format!("below the minimum of {MIN_MEMORY_MIB} MiB"),
        ));
    }
    Ok(mib)
}

impl Config {
    /// Whether `enable_annotations` allows annotation `key` (a full key with
    /// [`HYPERVISOR_PREFIX`]; any other key is not allowed).
    pub fn annotation_enabled(&self, key: &str) -> bool {
        enabled(self.enabled_set().as_ref(), key)
    }

    /// `enable_annotations`, compiled (validated at load; if it did not compile, nothing
    /// is enabled).
    fn enabled_set(&self) -> Option<RegexSet> {
        compile(&self.hypervisor.dragonball.enable_annotations).ok()
    }

    /// Applies the sandbox spec's hypervisor annotations to this configuration: every
    /// one must be enabled; `default_vcpus` and `default_memory` replace the configured
    /// values. Returns the enabled ones kata-rv does not implement (left unapplied).
    /// On error nothing is changed.
    pub fn apply_annotations(
        &mut self,
        annotations: &HashMap<String, String>,
    ) -> Result<Vec<String>, AnnotationError> {
        let mut keys: Vec<&String> = annotations
            .keys()
            .filter(|k| k.starts_with(HYPERVISOR_PREFIX))
            .collect();
        keys.sort();
        let set = self.enabled_set();
        let (mut vcpus, mut memory, mut ignored) = (None, None, Vec::new());
        for key in keys {
            let value = &annotations[key];
            if !enabled(set.as_ref(), key) {
                return Err(AnnotationError::NotEnabled {
                    key: key.clone(),
                    value: value.clone(),
                    suffix: key[HYPERVISOR_PREFIX.len()..].to_string(),
                    file: self.file.clone(),
                });
            }
            match key.as_str() {
                DEFAULT_VCPUS => vcpus = Some(parse_vcpus(value)?),
                DEFAULT_MEMORY => memory = Some(parse_memory(value)?),
                _ => ignored.push(key.clone()),
            }
        }
        let db = &mut self.hypervisor.dragonball;
        db.default_vcpus = vcpus.unwrap_or(db.default_vcpus);
        db.default_memory = memory.unwrap_or(db.default_memory);
        Ok(ignored)
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn config(enable: &str) -> Config {
        Config::parse(
            &format!(
                "[hypervisor.dragonball]\nkernel = \"/k\"\ninitrd = \"/i\"\nenable_annotations = {enable}\n\
                 [agent.kata]\n[runtime]\n"
            ),
            Path::new("/etc/c.toml"),
        )
        .unwrap()
    }

    fn annotations(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn patterns_match_the_key_after_the_prefix_unanchored() {
        let c = config(r#"["default_vcpus", "^default_mem"]"#);
        assert!(c.annotation_enabled(DEFAULT_VCPUS));
        assert!(c.annotation_enabled(DEFAULT_MEMORY));
        assert!(!c.annotation_enabled("io.katacontainers.config.hypervisor.kernel_params"));
        // Unanchored, as in Kata: "default_vcpus" also matches a longer key.
        assert!(c.annotation_enabled("io.katacontainers.config.hypervisor.default_vcpus_x"));
        // The prefix itself is never matched by the expressions.
        assert!(!c.annotation_enabled("default_vcpus"));
        assert!(!c.annotation_enabled("io.katacontainers.config.runtime.default_vcpus"));
        let all = config(r#"[".*"]"#);
        assert!(all.annotation_enabled("io.katacontainers.config.hypervisor.anything"));
        let none = config("[]");
        assert!(!none.annotation_enabled(DEFAULT_VCPUS));
    }

    #[test]
    fn enabled_sizing_annotations_replace_the_defaults() {
        let mut c = config(r#"["default_vcpus", "default_memory", "kernel_params"]"#);
        let ignored = c
            .apply_annotations(&annotations(&[
                (DEFAULT_VCPUS, "2.5"),
                (DEFAULT_MEMORY, "1024"),
                ("io.katacontainers.config.hypervisor.kernel_params", "quiet"),
                ("io.katacontainers.config.agent.enable_tracing", "true"),
                ("io.kubernetes.cri.sandbox-memory", "1"),
            ]))
            .unwrap();
        assert_eq!(c.hypervisor.dragonball.default_vcpus, 2.5);
        assert_eq!(c.vcpus(), 3);
        assert_eq!(c.hypervisor.dragonball.default_memory, 1024);
        assert_eq!(
            ignored,
            ["io.katacontainers.config.hypervisor.kernel_params"]
        );
    }

    #[test]
    fn a_hypervisor_annotation_not_enabled_is_refused_by_name() {
        let mut c = config(r#"["default_memory"]"#);
        let before = c.clone();
        let err = c
            .apply_annotations(&annotations(&[
                (DEFAULT_MEMORY, "512"),
                (DEFAULT_VCPUS, "4"),
            ]))
            .unwrap_err();
        let text = err.to_string();
        assert!(matches!(err, AnnotationError::NotEnabled { .. }), "{text}");
        assert!(
            text.contains(DEFAULT_VCPUS) && text.contains("\"4\"") && text.contains("/etc/c.toml"),
            "{text}"
        );
        assert_eq!(c, before, "nothing applied");
        // Unknown hypervisor keys are refused too when not enabled (Kata's rule).
        let err = config("[]")
            .apply_annotations(&annotations(&[(
                "io.katacontainers.config.hypervisor.foo",
                "x",
            )]))
            .unwrap_err();
        assert!(err.to_string().contains("\"foo\""), "{err}");
    }

    #[test]
    fn bad_values_name_the_annotation_and_the_value() {
        for (key, value) in [
            (DEFAULT_VCPUS, "65"),
            (DEFAULT_VCPUS, "-1"),
            (DEFAULT_VCPUS, "NaN"),
            (DEFAULT_VCPUS, "two"),
            (DEFAULT_MEMORY, "32"),
            (DEFAULT_MEMORY, "1.5"),
            (DEFAULT_MEMORY, "99999999999"),
            (DEFAULT_MEMORY, "2Gi"),
        ] {
            let err = config(r#"[".*"]"#)
                .apply_annotations(&annotations(&[(key, value)]))
                .unwrap_err();
            let text = err.to_string();
            assert!(matches!(err, AnnotationError::BadValue { .. }), "{text}");
            assert!(
                text.contains(key) && text.contains(&format!("{value:?}")),
                "{text}"
            );
        }
        // Kata accepts fractional and zero default_vcpus here (the VM gets at least one).
        let mut c = config(r#"[".*"]"#);
        c.apply_annotations(&annotations(&[(DEFAULT_VCPUS, "0")]))
            .unwrap();
        assert_eq!(c.vcpus(), 1);
    }
}
