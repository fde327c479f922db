//! `virtio_fs_extra_args`: what a configuration may add to virtiofsd's command line.
//!
//! The shim sets where virtiofsd serves from and listens (`--shared-dir`, `--fd`: the
//! shim binds the socket itself; `--socket-path` would name another) and its cache mode
//! (`virtio_fs_cache`); an extra argument cannot change them. Turning off virtiofsd's own confinement (`--sandbox none`, `--seccomp
//! none` or `log`, capabilities added with `--modcaps`) needs
//! `virtio_fs_allow_unconfined = true`.

/// Options only the shim sets, and the key that sets each where there is one.
const SHIM_OWNED: [(&str, &str); 5] = [
    ("--shared-dir", "the sandbox's share"),
    ("--socket-path", "the sandbox's socket"),
    ("--fd", "the sandbox's socket"),
    ("--socket-group", "the sandbox's socket"),
    ("--cache", "virtio_fs_cache"),
];

/// Why an extra argument was refused.
#[derive(Debug, PartialEq, Eq)]
pub enum ArgRefusal {
    /// It would override what the shim sets.
    ShimOwned(String),
    /// It weakens virtiofsd's confinement and the configuration does not allow that.
    Unconfined(String),
}

impl std::fmt::Display for ArgRefusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ArgRefusal::ShimOwned(why) | ArgRefusal::Unconfined(why) => f.write_str(why),
        }
    }
}

/// `(option, value)` pairs of `args`, in either `--opt=value` or `--opt value` form
/// (`-o a=b,c` gives one pair per comma-separated item, as legacy virtiofsd reads it).
fn options(args: &[String]) -> Vec<(String, Option<String>)> {
    let mut out = Vec::new();
    let mut iter = args.iter().peekable();
    while let Some(arg) = iter.next() {
        if arg == "-o" {
            for item in iter.next().map(String::as_str).unwrap_or("").split(',') {
                let (name, value) = item.split_once('=').unwrap_or((item, ""));
                out.push((format!("-o {name}"), Some(value.to_string())));
            }
        } else if let Some((name, value)) = arg.split_once('=') {
            out.push((name.to_string(), Some(value.to_string())));
        } else if arg.starts_with("--") {
            let value = iter
                .next_if(|next| !next.starts_with('-'))
                .map(String::to_string);
            out.push((arg.to_string(), value));
        } else {
            out.push((arg.to_string(), None));
        }
    }
    out
}

/// Checks `args`; `allow_unconfined` is `virtio_fs_allow_unconfined`.
pub fn check(args: &[String], allow_unconfined: bool) -> Result<(), ArgRefusal> {
    for (name, value) in options(args) {
        let value = value.unwrap_or_default();
        if let Some((_, owner)) = SHIM_OWNED.iter().find(|(o, _)| *o == name) {
            return Err(ArgRefusal::ShimOwned(format!(
                "'{name}' is set by the shim ({owner})"
            )));
        }
        if name == "-o source" || name == "-o cache" {
            return Err(ArgRefusal::ShimOwned(format!(
                "'{name}' is set by the shim (the sandbox's share, virtio_fs_cache)"
            )));
        }
        let weakens = match name.as_str() {
            "--sandbox" => value == "none",
            "--seccomp" => value == "none" || value == "log",
            "--modcaps" => value.contains('+'),
            _ => false,
        };
        if weakens && !allow_unconfined {
            return Err(ArgRefusal::Unconfined(format!(
                "'{name}={value}' weakens virtiofsd's confinement; set virtio_fs_allow_unconfined = true to allow it"
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn ordinary_options_pass() {
        let ok = args(&[
            "--sandbox=chroot",
            "--seccomp",
            "kill",
            "--xattr",
            "--thread-pool-size=4",
        ]);
        assert_eq!(check(&ok, false), Ok(()));
    }

    #[test]
    fn weakening_needs_the_key_in_either_form() {
        for weak in [
            &["--sandbox=none"][..],
            &["--sandbox", "none"],
            &["--seccomp=none"],
            &["--seccomp", "log"],
            &["--modcaps=+sys_admin"],
        ] {
            let weak = args(weak);
            assert!(
                matches!(check(&weak, false), Err(ArgRefusal::Unconfined(m)) if m.contains("virtio_fs_allow_unconfined")),
                "{weak:?}"
            );
            assert_eq!(check(&weak, true), Ok(()), "{weak:?}");
        }
        assert_eq!(check(&args(&["--modcaps=-sys_admin"]), false), Ok(()));
    }

    #[test]
    fn what_the_shim_sets_cannot_be_overridden() {
        for owned in [
            &["--shared-dir=/"][..],
            &["--shared-dir", "/"],
            &["--socket-path=/tmp/x"],
            &["--cache=always"],
            &["-o", "source=/,xattr"],
        ] {
            let owned = args(owned);
            assert!(
                matches!(check(&owned, true), Err(ArgRefusal::ShimOwned(_))),
                "{owned:?}"
            );
        }
    }
}
