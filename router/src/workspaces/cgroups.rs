//! Per-sandbox cgroups: what this host allows, said once at start-up.
//!
//! Jarvis does not put local sandboxes in cgroups yet; their limits are rlimits
//! set by `prlimit` (see `jail.rs`): RLIMIT_NPROC per workspace uid, RLIMIT_AS
//! and RLIMIT_CPU per process, a sized `/tmp`. A cgroup v2 path needs, for the
//! router's own cgroup: the unified hierarchy mounted at `/sys/fs/cgroup` (not the
//! hybrid v1 layout), the `memory`, `pids` and `cpu` controllers in its
//! `cgroup.controllers`, and write access to it (a delegated subtree, e.g. a
//! systemd unit with `Delegate=yes`, or root in a cgroup namespace of its own).
//! It would then make `jarvis/<workspace>` per sandbox with `memory.max`,
//! `memory.swap.max`, `pids.max` and `cpu.max`, move the `prlimit` child into it
//! before it execs bubblewrap, and remove it on sleep. This module only detects
//! whether that is possible here and says so.

use std::path::{Path, PathBuf};

/// The controllers a per-sandbox cgroup needs.
const NEEDED: [&str; 3] = ["memory", "pids", "cpu"];

/// Whether per-sandbox cgroup v2 limits could be used on this host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Support {
    /// The router's cgroup has the controllers and is writable.
    Delegated(PathBuf),
    /// Not possible here, and why.
    Unavailable(String),
}

/// What `/sys/fs/cgroup` and `/proc/self/cgroup` say.
pub fn probe() -> Support {
    let root = Path::new("/sys/fs/cgroup");
    let own = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
    let controllers = |dir: &Path| std::fs::read_to_string(dir.join("cgroup.controllers")).ok();
    assess(root, &own, controllers, |dir| {
        rustix::fs::access(
            dir.join("cgroup.subtree_control"),
            rustix::fs::Access::WRITE_OK,
        )
        .is_ok()
    })
}

/// [`probe`] from what the host says (pure, for tests).
fn assess(
    root: &Path,
    proc_self_cgroup: &str,
    controllers: impl Fn(&Path) -> Option<String>,
    writable: impl Fn(&Path) -> bool,
) -> Support {
    if controllers(root).is_none() {
        return Support::Unavailable(
            "cgroup v2 is not mounted at /sys/fs/cgroup (a cgroup v1 or hybrid host)".into(),
        );
    }
    let Some(path) = proc_self_cgroup
        .lines()
        .find_map(|line| line.strip_prefix("0::"))
    else {
        return Support::Unavailable("the router is in no cgroup v2 group".into());
    };
    let own = root.join(path.trim().trim_start_matches('/'));
    let have = controllers(&own).unwrap_or_default();
    let missing: Vec<&str> = NEEDED
        .into_iter()
        .filter(|c| !have.split_whitespace().any(|h| h == *c))
        .collect();
    if !missing.is_empty() {
        return Support::Unavailable(format!(
            "the router's cgroup {} lacks the {} controller(s)",
            own.display(),
            missing.join(", ")
        ));
    }
    if !writable(&own) {
        return Support::Unavailable(format!(
            "the router's cgroup {} is not delegated to it (not writable)",
            own.display()
        ));
    }
    Support::Delegated(own)
}

/// Logs what [`probe`] found and which limits apply.
pub fn log_support() {
    match probe() {
        Support::Delegated(path) => tracing::info!(
            cgroup = %path.display(),
            "cgroup v2 delegation is available, but local sandboxes are limited by rlimits \
             (RLIMIT_NPROC per workspace uid, RLIMIT_AS and RLIMIT_CPU per process) and a sized /tmp"
        ),
        Support::Unavailable(reason) => tracing::info!(
            "no per-sandbox cgroups ({reason}): local sandboxes are limited by rlimits \
             (RLIMIT_NPROC per workspace uid, RLIMIT_AS and RLIMIT_CPU per process) and a sized /tmp"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hybrid_host_a_missing_controller_and_a_delegated_group_are_told_apart() {
        let root = Path::new("/sys/fs/cgroup");
        let none = |_: &Path| None;
        assert!(matches!(
            assess(root, "0::/\n", none, |_| true),
            Support::Unavailable(r) if r.contains("not mounted")
        ));
        let only_pids = |_: &Path| Some("cpuset pids".to_string());
        assert!(matches!(
            assess(root, "0::/jarvis\n", only_pids, |_| true),
            Support::Unavailable(r) if r.contains("memory, cpu")
        ));
        let all = |_: &Path| Some("cpu memory pids io".to_string());
        assert!(matches!(
            assess(root, "0::/jarvis\n", all, |_| false),
            Support::Unavailable(r) if r.contains("not delegated")
        ));
        assert_eq!(
            assess(root, "0::/system.slice/jarvis.service\n", all, |_| true),
            Support::Delegated("/sys/fs/cgroup/system.slice/jarvis.service".into())
        );
    }
}
