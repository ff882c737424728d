//! Where the agent's installs go: into the workspace, so they are there again
//! after sleep and wake, and never into the read-only system.
//!
//! - Python: a virtual environment at `<workspace>/.venv`, made at start when
//!   missing (`python3 -m venv --system-site-packages --without-pip`: about 50 ms,
//!   where copying pip in takes seconds), first on `PATH` with `VIRTUAL_ENV` set,
//!   so `pip install x` and `python3 -c 'import x'` work as the agent expects.
//!   Its `pip`/`pip3` run the system's pip module (Debian's `python3-pip`,
//!   visible through the system site-packages) under the environment's python,
//!   which installs into the environment. A venv rather than `PIP_USER` +
//!   `PYTHONUSERBASE`: Debian's python refuses user installs (its environment is
//!   "externally managed"), and `PIP_USER` makes pip refuse to work inside a venv
//!   the agent makes itself.
//! - Node: `npm install` writes the project's `node_modules` as always;
//!   `npm install -g` goes to `<workspace>/.npm-global` (`npm_config_prefix`,
//!   its `bin` on `PATH`) instead of `/usr`.
//! - Caches (pip's, npm's): `<workspace>/.cache`, not the CLI's HOME, whose
//!   state is archived on every sync.
//!
//! `.venv`, `node_modules` and `.cache` are names the sync never stores
//! ([`crate::sync::IGNORED`]): they live as long as the workspace's disk (the
//! local backend's directory, a pod's persistent volume); on a disk restored
//! from storage the environment is made again, empty.

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

/// The workspace's Python environment, relative to the workspace.
pub const VENV: &str = ".venv";
/// npm's global prefix, relative to the workspace.
pub const NPM_PREFIX: &str = ".npm-global";
/// Package managers' caches, relative to the workspace.
pub const CACHE: &str = ".cache";

/// How long making the environment may take.
const VENV_TIMEOUT: Duration = Duration::from_secs(60);

/// The install locations of one workspace.
#[derive(Debug, Clone)]
pub struct Installs {
    venv: PathBuf,
    npm_prefix: PathBuf,
    cache: PathBuf,
}

impl Installs {
    /// The locations inside `workspace`.
    pub fn new(workspace: &Path) -> Self {
        Self {
            venv: workspace.join(VENV),
            npm_prefix: workspace.join(NPM_PREFIX),
            cache: workspace.join(CACHE),
        }
    }

    /// `PATH` for the agent: the environment's and npm's `bin` before `base`.
    pub fn path(&self, base: &str) -> String {
        format!(
            "{}:{}:{base}",
            self.venv.join("bin").display(),
            self.npm_prefix.join("bin").display()
        )
    }

    /// The variables that send installs and caches into the workspace.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("VIRTUAL_ENV", self.venv.display().to_string()),
            ("npm_config_prefix", self.npm_prefix.display().to_string()),
            (
                "npm_config_cache",
                self.cache.join("npm").display().to_string(),
            ),
            ("XDG_CACHE_HOME", self.cache.display().to_string()),
            ("PIP_DISABLE_PIP_VERSION_CHECK", "1".into()),
        ]
    }

    /// Makes the Python environment if it is missing, with the first `python3`
    /// on `path`, as `uid_gid` when given. Best effort: without python3, or when
    /// making it fails, the agent works on without it (logged).
    pub async fn prepare(&self, path: &str, uid_gid: Option<(u32, u32)>) {
        if self.venv.join("bin/python3").exists() {
            return;
        }
        let Some(python) = find_program(path, "python3") else {
            tracing::info!("no python3 on the agent's PATH; no Python environment made");
            return;
        };
        let mut command = tokio::process::Command::new(&python);
        command
            .args(["-m", "venv", "--system-site-packages", "--without-pip"])
            .arg(&self.venv)
            .env_clear()
            .env("PATH", path)
            .env("LANG", "C.UTF-8")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true);
        if let Some((uid, gid)) = uid_gid {
            command.uid(uid).gid(gid);
        }
        let made = match tokio::time::timeout(VENV_TIMEOUT, command.output()).await {
            Ok(Ok(output)) if output.status.success() => Ok(()),
            Ok(Ok(output)) => Err(String::from_utf8_lossy(&output.stderr).trim().to_string()),
            Ok(Err(error)) => Err(error.to_string()),
            Err(_) => Err("timed out".into()),
        };
        let made = made.and_then(|()| self.write_pip_shims(uid_gid).map_err(|e| e.to_string()));
        match made {
            Ok(()) => tracing::info!(venv = %self.venv.display(), "Python environment made"),
            Err(error) => {
                tracing::warn!(%error, venv = %self.venv.display(), "the Python environment could not be made")
            }
        }
    }

    /// `pip` and `pip3` in the environment: the system's pip module run by the
    /// environment's python.
    fn write_pip_shims(&self, uid_gid: Option<(u32, u32)>) -> std::io::Result<()> {
        use std::os::unix::fs::PermissionsExt;
        let python = self.venv.join("bin/python3");
        let script = format!(
            "#!/bin/sh\n# pip of this environment (the system's pip module, run by its python).\nexec \"{}\" -m pip \"$@\"\n",
            python.display()
        );
        for name in ["pip", "pip3"] {
            let shim = self.venv.join("bin").join(name);
            if shim.exists() {
                continue;
            }
            std::fs::write(&shim, &script)?;
            std::fs::set_permissions(&shim, std::fs::Permissions::from_mode(0o755))?;
            if let Some((uid, gid)) = uid_gid {
                std::os::unix::fs::lchown(&shim, Some(uid), Some(gid))?;
            }
        }
        Ok(())
    }
}

/// The first executable `name` in the directories of `path`.
fn find_program(path: &str, name: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    path.split(':')
        .filter(|dir| !dir.is_empty())
        .map(|dir| Path::new(dir).join(name))
        .find(|candidate| {
            std::fs::metadata(candidate)
                .is_ok_and(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn installs_and_caches_point_into_the_workspace() {
        let installs = Installs::new(Path::new("/workspace"));
        assert_eq!(
            installs.path("/usr/bin:/bin"),
            "/workspace/.venv/bin:/workspace/.npm-global/bin:/usr/bin:/bin"
        );
        for (name, value) in installs.env() {
            if name != "PIP_DISABLE_PIP_VERSION_CHECK" {
                assert!(value.starts_with("/workspace/"), "{name}={value}");
            }
        }
        for name in [VENV, CACHE] {
            assert!(
                crate::sync::IGNORED.contains(&name),
                "{name} is never synced"
            );
        }
    }

    #[tokio::test]
    async fn the_environment_installs_into_itself_and_is_made_once() {
        let path = "/usr/local/bin:/usr/bin:/bin";
        if find_program(path, "python3").is_none() {
            panic!("python3 is missing: apt-get install python3 python3-venv python3-pip");
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let installs = Installs::new(dir.path());
        installs.prepare(path, None).await;
        let pip = dir.path().join(".venv/bin/pip");
        assert!(pip.is_file(), "pip shim made");
        // pip, run as the agent would, reports the environment as where it installs.
        let output = std::process::Command::new(&pip)
            .args(["--version"])
            .env_clear()
            .env("PATH", installs.path(path))
            .output()
            .expect("run pip");
        let version = String::from_utf8_lossy(&output.stdout);
        assert!(output.status.success(), "{version} {output:?}");
        let python = std::process::Command::new(dir.path().join(".venv/bin/python3"))
            .args(["-c", "import sys; print(sys.prefix)"])
            .env_clear()
            .output()
            .expect("run python");
        assert_eq!(
            String::from_utf8_lossy(&python.stdout).trim(),
            dir.path().join(VENV).display().to_string()
        );
        // A second start keeps what is there.
        std::fs::write(dir.path().join(".venv/marker"), "kept").expect("write");
        installs.prepare(path, None).await;
        assert!(dir.path().join(".venv/marker").is_file());
    }
}
