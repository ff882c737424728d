//! The jail of a local sandbox: the exact `prlimit … bwrap … sandbox …` command
//! line, built purely from paths and limits so it can be read and tested alone.
//!
//! The flags are the ones measured to work here (shared FACTS.md): every namespace
//! unshared (mount, pid, net, ipc, uts, user, cgroup), no capabilities, a new
//! session, the environment cleared, `/usr` read-only with the `/bin`, `/lib`,
//! `/lib64`, `/sbin` symlinks, a private `/proc`, `/dev` and `/tmp` (a tmpfs of
//! [`Limits::tmp_bytes`]), and only this
//! user's workspace and state directories writable. The host sees none of it but
//! the user's run directory (the sandbox's socket), the gateway socket and the
//! egress proxy's socket (the sandbox's only way out: `--egress-socket`, relayed
//! from a loopback proxy the agent's `HTTPS_PROXY` names). `/etc/ssl` (the CA
//! certificates curl, git and pip check servers against) is bound read-only when
//! the host has it.
//! Spawning, uids and reaping are `local.rs`'s business.

use std::{
    ffi::OsString,
    path::{Path, PathBuf},
};

/// The workspace inside the jail (the agent's working directory).
pub const WORKSPACE: &str = "/workspace";
/// The state directory inside the jail (the CLI's HOME, transcripts).
pub const STATE: &str = "/state";
/// The run directory inside the jail: the sandbox's own socket lives here.
pub const RUN: &str = "/run/jarvis";
/// The sandbox's socket, inside the jail.
pub const SOCKET: &str = "/run/jarvis/sandbox.sock";
/// The gateway socket, inside the jail (bound read-only).
pub const GATEWAY_SOCKET: &str = "/run/gateway.sock";
/// The egress proxy's socket, inside the jail (bound read-only when it exists).
pub const EGRESS_SOCKET: &str = "/run/egress.sock";
/// The `sandbox` binary, inside the jail.
pub const SANDBOX_BIN: &str = "/opt/jarvis/sandbox";
/// The CLI's directory, inside the jail.
pub const CLI_DIR: &str = "/opt/claude";
/// The unprivileged uid and gid the sandbox has inside its user namespace.
pub const INNER_ID: &str = "1000";

/// Resource limits of one sandbox (set with `prlimit` before bubblewrap starts,
/// inherited by everything in the jail).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// RLIMIT_AS, bytes.
    pub memory_bytes: u64,
    /// RLIMIT_NPROC.
    pub max_procs: u64,
    /// RLIMIT_CPU, seconds.
    pub cpu_seconds: u64,
    /// Size of the private `/tmp` (tmpfs), bytes.
    pub tmp_bytes: u64,
}

/// Everything the jail is made of, as host paths.
#[derive(Debug, Clone)]
pub struct Spec {
    /// `prlimit` (util-linux).
    pub prlimit: PathBuf,
    /// `bwrap`.
    pub bwrap: PathBuf,
    /// The `sandbox` binary on the host.
    pub sandbox_bin: PathBuf,
    /// The CLI binary on the host (its directory is bound read-only).
    pub claude_bin: PathBuf,
    /// This user's workspace directory.
    pub workspace: PathBuf,
    /// This user's state directory.
    pub state: PathBuf,
    /// This user's run directory (holds the sandbox's socket).
    pub run: PathBuf,
    /// The router's gateway socket.
    pub gateway_socket: PathBuf,
    /// The router's egress proxy socket.
    pub egress_socket: PathBuf,
    /// CLI processes the sandbox keeps alive.
    pub max_agents: u32,
    /// Keep a CLI started for the next new conversation (`--spare-agent`: on
    /// with a warm pool).
    pub spare_agent: bool,
    /// Resource limits.
    pub limits: Limits,
}

/// Where the sandbox's socket appears on the host.
pub fn host_socket(run: &Path) -> PathBuf {
    run.join("sandbox.sock")
}

impl Spec {
    /// The program to run and its arguments. `bwrap --args 0` reads the secret
    /// arguments ([`secret_args`]) from stdin, so the token never shows in the
    /// host's process list.
    pub fn command(&self) -> (PathBuf, Vec<OsString>) {
        let mut a: Vec<OsString> = Vec::new();
        let push =
            |a: &mut Vec<OsString>, items: &[&str]| a.extend(items.iter().map(OsString::from));
        push(
            &mut a,
            &[
                &format!("--as={}", self.limits.memory_bytes),
                &format!("--nproc={}", self.limits.max_procs),
                &format!("--cpu={}", self.limits.cpu_seconds),
                "--",
            ],
        );
        a.push(self.bwrap.clone().into());
        push(
            &mut a,
            &[
                "--unshare-all",
                "--die-with-parent",
                "--new-session",
                "--clearenv",
                "--cap-drop",
                "ALL",
                "--uid",
                INNER_ID,
                "--gid",
                INNER_ID,
                "--ro-bind",
                "/usr",
                "/usr",
                "--symlink",
                "usr/bin",
                "/bin",
                "--symlink",
                "usr/lib",
                "/lib",
                "--symlink",
                "usr/lib64",
                "/lib64",
                "--symlink",
                "usr/sbin",
                "/sbin",
                "--proc",
                "/proc",
                "--dev",
                "/dev",
                // Sized: unsized, a tmpfs may take half the host's memory.
                "--size",
                &self.limits.tmp_bytes.to_string(),
                "--tmpfs",
                "/tmp",
            ],
        );
        let cli_dir = self
            .claude_bin
            .parent()
            .map_or_else(|| PathBuf::from("/"), Path::to_path_buf);
        let cli_name = self
            .claude_bin
            .file_name()
            .map_or_else(|| OsString::from("claude"), OsString::from);
        bind(&mut a, "--bind", &self.workspace, WORKSPACE);
        bind(&mut a, "--bind", &self.state, STATE);
        bind(&mut a, "--bind", &self.run, RUN);
        bind(&mut a, "--ro-bind", &self.gateway_socket, GATEWAY_SOCKET);
        // A missing egress socket leaves the agent without internet, not without
        // its workspace: its forwarder answers 502 saying why.
        bind(&mut a, "--ro-bind-try", &self.egress_socket, EGRESS_SOCKET);
        bind(&mut a, "--ro-bind-try", Path::new("/etc/ssl"), "/etc/ssl");
        bind(&mut a, "--ro-bind", &self.sandbox_bin, SANDBOX_BIN);
        bind(&mut a, "--ro-bind", &cli_dir, CLI_DIR);
        push(
            &mut a,
            &[
                "--setenv",
                "HOME",
                STATE,
                "--setenv",
                "PATH",
                "/usr/local/bin:/usr/bin:/bin",
                "--setenv",
                "LANG",
                "C.UTF-8",
                "--setenv",
                "RUST_LOG",
                "info",
                "--chdir",
                WORKSPACE,
                "--args",
                "0",
                "--",
                SANDBOX_BIN,
                "--listen",
                &format!("unix:{SOCKET}"),
                "--gateway-socket",
                GATEWAY_SOCKET,
                "--egress-socket",
                EGRESS_SOCKET,
                "--workspace-dir",
                WORKSPACE,
                "--state-dir",
                STATE,
                "--max-agents",
                &self.max_agents.to_string(),
                "--claude-bin",
            ],
        );
        let mut cli = PathBuf::from(CLI_DIR);
        cli.push(cli_name);
        a.push(cli.into());
        if self.spare_agent {
            push(&mut a, &["--spare-agent"]);
        }
        (self.prlimit.clone(), a)
    }
}

fn bind(args: &mut Vec<OsString>, flag: &str, host: &Path, inside: &str) {
    args.push(flag.into());
    args.push(host.into());
    args.push(inside.into());
}

/// The NUL-separated arguments bubblewrap reads from stdin (`--args 0`): the
/// workspace token as the sandbox's environment.
pub fn secret_args(token: &str) -> Vec<u8> {
    nul_separated(&["--setenv", "JARVIS_WORKSPACE_TOKEN", token])
}

/// [`secret_args`] of a warm pool sandbox: no token, the secret its claim
/// must present (`JARVIS_CLAIM_SECRET`).
pub fn claim_args(secret: &str) -> Vec<u8> {
    nul_separated(&["--setenv", "JARVIS_CLAIM_SECRET", secret])
}

fn nul_separated(parts: &[&str]) -> Vec<u8> {
    let mut out = Vec::new();
    for part in parts {
        out.extend_from_slice(part.as_bytes());
        out.push(0);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> Spec {
        Spec {
            prlimit: "/usr/bin/prlimit".into(),
            bwrap: "/usr/bin/bwrap".into(),
            sandbox_bin: "/opt/build/sandbox".into(),
            claude_bin: "/tools/claude/bin/claude.exe".into(),
            workspace: "/data/u/workspace".into(),
            state: "/data/u/state".into(),
            run: "/run/u".into(),
            gateway_socket: "/run/gateway.sock".into(),
            egress_socket: "/run/egress.sock".into(),
            max_agents: 1,
            spare_agent: false,
            limits: Limits {
                memory_bytes: 1 << 30,
                max_procs: 64,
                cpu_seconds: 60,
                tmp_bytes: 64 << 20,
            },
        }
    }

    fn joined() -> String {
        let (program, args) = spec().command();
        let args: Vec<String> = args
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        format!("{} {}", program.display(), args.join(" "))
    }

    #[test]
    fn the_jail_unshares_everything_and_drops_capabilities() {
        let line = joined();
        for flag in [
            "--unshare-all",
            "--die-with-parent",
            "--new-session",
            "--clearenv",
            "--cap-drop ALL",
            "--size 67108864 --tmpfs /tmp",
        ] {
            assert!(line.contains(flag), "{flag} missing: {line}");
        }
        assert!(
            line.starts_with(
                "/usr/bin/prlimit --as=1073741824 --nproc=64 --cpu=60 -- /usr/bin/bwrap"
            )
        );
    }

    #[test]
    fn only_the_users_own_directories_are_writable() {
        let line = joined();
        assert!(line.contains("--bind /data/u/workspace /workspace"));
        assert!(line.contains("--bind /data/u/state /state"));
        assert!(line.contains("--ro-bind /usr /usr"));
        assert!(line.contains("--ro-bind /tools/claude/bin /opt/claude"));
        assert!(line.contains("--ro-bind /run/gateway.sock /run/gateway.sock"));
        assert!(line.contains("--ro-bind-try /etc/ssl /etc/ssl"));
        assert_eq!(line.matches("--bind ").count(), 3, "{line}");
    }

    #[test]
    fn the_sandbox_is_told_where_the_egress_proxy_is() {
        let line = joined();
        assert!(line.contains("--ro-bind-try /run/egress.sock /run/egress.sock"));
        assert!(line.contains("--egress-socket /run/egress.sock"), "{line}");
    }

    #[test]
    fn the_token_is_not_on_the_command_line() {
        assert!(!joined().contains("JARVIS_WORKSPACE_TOKEN"));
        let secret = secret_args("jw_secret");
        assert_eq!(secret, b"--setenv\0JARVIS_WORKSPACE_TOKEN\0jw_secret\0");
        assert_eq!(
            claim_args("pool_secret"),
            b"--setenv\0JARVIS_CLAIM_SECRET\0pool_secret\0"
        );
    }

    #[test]
    fn a_spare_agent_is_asked_for_only_when_wanted() {
        assert!(!joined().contains("--spare-agent"));
        let mut spec = spec();
        spec.spare_agent = true;
        let (_, args) = spec.command();
        assert_eq!(
            args.last()
                .map(|a| a.to_string_lossy().into_owned())
                .as_deref(),
            Some("--spare-agent")
        );
    }
}
