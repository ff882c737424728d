//! One Claude Code CLI child process: how it is started, fed and stopped.
//!
//! Owns the command line and the environment the CLI gets (cleared, then set
//! explicitly: nothing of the sandbox's own environment leaks), the stdin writer
//! task, the stdout/stderr reader tasks and the reaper. Knows nothing of turns.

use std::{path::PathBuf, process::Stdio, time::Duration};

use tokio::{
    io::{AsyncBufReadExt, AsyncWriteExt, BufReader},
    process::{Child, Command},
    sync::{mpsc, oneshot},
};

use crate::{Error, Result};

/// The CLI's built-in tools the agent gets: the real file and code tools.
pub const BUILTIN_TOOLS: &[&str] = &["Read", "Write", "Edit", "Bash", "Glob", "Grep"];

/// Tools that reach outside the workspace, spawn agents or schedule background work.
pub const DISALLOWED_TOOLS: &[&str] = &[
    "Agent",
    "Task",
    "TaskCreate",
    "TaskGet",
    "TaskList",
    "TaskOutput",
    "TaskStop",
    "TaskUpdate",
    "ListAgents",
    "ScheduleWakeup",
    "Workflow",
    "WebFetch",
    "WebSearch",
    "Skill",
    "ReportFindings",
    "ToolSearch",
    "SendUserMessage",
    "NotebookEdit",
    "KillShell",
    "BashOutput",
    "ExitPlanMode",
    "EnterWorktree",
];

/// The MCP server name the CLI knows the Jarvis tools under.
pub const MCP_SERVER_NAME: &str = "jarvis";

/// The header that tells the MCP server which conversation's agent is calling.
pub const CONVERSATION_HEADER: &str = "x-jarvis-conversation";

/// The header naming the conversation on each model call (the router's gateway
/// reads it to record usage per conversation).
pub const GATEWAY_CONVERSATION_HEADER: &str = "X-Jarvis-Conversation";

/// Everything needed to start the CLI for one conversation.
#[derive(Debug, Clone)]
pub struct AgentSpec {
    /// The CLI binary.
    pub claude_bin: PathBuf,
    /// The agent's working directory.
    pub workspace_dir: PathBuf,
    /// The CLI's HOME (its transcripts live under it).
    pub home: PathBuf,
    /// The conversation, also the CLI's session id.
    pub session_id: String,
    /// Continue an existing transcript (`--resume`) instead of starting one.
    pub resume: bool,
    /// With `resume`: keep the transcript only up to and including this entry
    /// (`--resume-session-at`), so the turns after it are forgotten and the next
    /// prompt continues from there (`crate::rewind`).
    pub resume_at: Option<String>,
    /// The model gateway's base URL as the CLI sees it.
    pub gateway_url: String,
    /// The CLI's API key: a placeholder the gateway forwarder replaces with
    /// the workspace token (local mode), else the workspace token.
    pub api_key: String,
    /// The Jarvis MCP server's URL.
    pub mcp_url: String,
    /// The names of the Jarvis MCP tools.
    pub mcp_tools: Vec<String>,
    /// PATH for the CLI and its shell.
    pub path: String,
    /// The CLI's model API retries.
    pub max_retries: u32,
    /// The model to ask for, if not the CLI's default.
    pub model: Option<String>,
    /// Run as this uid/gid.
    pub uid_gid: Option<(u32, u32)>,
    /// The loopback egress proxy (`http://127.0.0.1:PORT`) the CLI and its
    /// commands use for everything but loopback; none: no proxy variables.
    pub egress_proxy: Option<String>,
    /// More variables for the CLI and its commands (where installs go:
    /// [`crate::installs::Installs::env`]).
    pub extra_env: Vec<(&'static str, String)>,
}

/// What never goes through the egress proxy: the gateway forwarder, the MCP
/// server and anything else the agent runs on loopback.
pub const NO_PROXY: &str = "localhost,127.0.0.1,::1";

impl AgentSpec {
    /// The CLI's arguments.
    pub fn args(&self) -> Vec<String> {
        let mcp_config = serde_json::json!({"mcpServers": {MCP_SERVER_NAME: {
            "type": "http",
            "url": self.mcp_url,
            "headers": {CONVERSATION_HEADER: self.session_id},
        }}});
        let allowed: Vec<String> = BUILTIN_TOOLS
            .iter()
            .map(|t| t.to_string())
            .chain(
                self.mcp_tools
                    .iter()
                    .map(|t| format!("mcp__{MCP_SERVER_NAME}__{t}")),
            )
            .collect();
        let mut args: Vec<String> = [
            "-p",
            "--input-format",
            "stream-json",
            "--output-format",
            "stream-json",
            "--verbose",
            "--include-partial-messages",
            "--disable-slash-commands",
            "--strict-mcp-config",
            // File tools confined to the workspace; no user/project settings files.
            "--restricted",
            // Nobody answers permission prompts: whatever would ask is denied at once
            // (instead of a turn hanging on a question no one sees).
            "--permission-prompts",
            "none",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        args.extend(["--mcp-config".into(), mcp_config.to_string()]);
        args.extend(["--tools".into(), BUILTIN_TOOLS.join(",")]);
        args.extend(["--allowedTools".into(), allowed.join(",")]);
        args.extend(["--disallowedTools".into(), DISALLOWED_TOOLS.join(",")]);
        let session_flag = if self.resume {
            "--resume"
        } else {
            "--session-id"
        };
        args.extend([session_flag.into(), self.session_id.clone()]);
        if let Some(at) = self.resume_at.as_ref().filter(|_| self.resume) {
            args.extend(["--resume-session-at".into(), at.clone()]);
        }
        if let Some(model) = &self.model {
            args.extend(["--model".into(), model.clone()]);
        }
        args
    }

    /// The CLI's whole environment.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        let mut env = vec![
            ("HOME", self.home.display().to_string()),
            ("PATH", self.path.clone()),
            ("LANG", "C.UTF-8".into()),
            ("SHELL", "/bin/bash".into()),
            ("ANTHROPIC_BASE_URL", self.gateway_url.clone()),
            ("ANTHROPIC_API_KEY", self.api_key.clone()),
            ("CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC", "1".into()),
            ("DISABLE_AUTOUPDATER", "1".into()),
            ("DISABLE_TELEMETRY", "1".into()),
            ("DISABLE_ERROR_REPORTING", "1".into()),
            ("ENABLE_TOOL_SEARCH", "false".into()),
            ("CLAUDE_CODE_MAX_RETRIES", self.max_retries.to_string()),
            // Sent with every model call, so the gateway records usage per conversation.
            (
                "ANTHROPIC_CUSTOM_HEADERS",
                format!("{GATEWAY_CONVERSATION_HEADER}: {}", self.session_id),
            ),
        ];
        if let Some(proxy) = &self.egress_proxy {
            for name in ["HTTPS_PROXY", "HTTP_PROXY", "https_proxy", "http_proxy"] {
                env.push((name, proxy.clone()));
            }
            env.push(("NO_PROXY", NO_PROXY.into()));
            env.push(("no_proxy", NO_PROXY.into()));
        }
        env.extend(self.extra_env.iter().cloned());
        env
    }
}

/// A running CLI: send it lines, read its lines. Dropping it kills the process group.
#[derive(Debug)]
pub struct Agent {
    stdin: mpsc::Sender<String>,
    lines: mpsc::Receiver<String>,
    kill: Option<oneshot::Sender<()>>,
    pid: Option<u32>,
}

impl Agent {
    /// Starts the CLI.
    pub fn spawn(spec: &AgentSpec) -> Result<Self> {
        let mut command = Command::new(&spec.claude_bin);
        command
            .args(spec.args())
            .env_clear()
            .envs(spec.env())
            .current_dir(&spec.workspace_dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true);
        if let Some((uid, gid)) = spec.uid_gid {
            command.uid(uid).gid(gid);
        }
        let mut child = command.spawn().map_err(|source| Error::Spawn {
            path: spec.claude_bin.clone(),
            source,
        })?;
        let pid = child.id();
        let (stdin_tx, stdin_rx) = mpsc::channel(16);
        let (lines_tx, lines_rx) = mpsc::channel(256);
        let (kill_tx, kill_rx) = oneshot::channel();
        if let Some(stdin) = child.stdin.take() {
            tokio::spawn(write_stdin(stdin, stdin_rx));
        }
        if let Some(stdout) = child.stdout.take() {
            tokio::spawn(read_stdout(stdout, lines_tx));
        }
        if let Some(stderr) = child.stderr.take() {
            tokio::spawn(log_stderr(stderr));
        }
        tokio::spawn(reap(child, kill_rx));
        tracing::debug!(pid, session.id = %spec.session_id, resume = spec.resume, "agent started");
        Ok(Self {
            stdin: stdin_tx,
            lines: lines_rx,
            kill: Some(kill_tx),
            pid,
        })
    }

    /// The CLI's process id.
    pub fn pid(&self) -> Option<u32> {
        self.pid
    }

    /// A handle to write lines to the CLI's stdin (a newline is added).
    pub fn stdin(&self) -> mpsc::Sender<String> {
        self.stdin.clone()
    }

    /// The next stdout line; `None` once the CLI closed its output (it exited).
    pub async fn next_line(&mut self) -> Option<String> {
        self.lines.recv().await
    }

    /// Whether the CLI still runs; drops output left over from an earlier turn.
    pub fn is_alive(&mut self) -> bool {
        loop {
            match self.lines.try_recv() {
                Ok(_) => continue,
                Err(mpsc::error::TryRecvError::Empty) => return true,
                Err(mpsc::error::TryRecvError::Disconnected) => return false,
            }
        }
    }

    /// Closes stdin so the CLI exits on its own, killing it if it lingers.
    pub fn shutdown(mut self) {
        let kill = self.kill.take();
        drop(self);
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(3)).await;
            drop(kill);
        });
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if let Some(kill) = self.kill.take() {
            let _ = kill.send(());
        }
    }
}

async fn write_stdin(mut stdin: tokio::process::ChildStdin, mut rx: mpsc::Receiver<String>) {
    while let Some(line) = rx.recv().await {
        let written = async {
            stdin.write_all(line.as_bytes()).await?;
            stdin.write_all(b"\n").await?;
            stdin.flush().await
        };
        if let Err(error) = written.await {
            tracing::debug!(%error, "agent stdin closed");
            return;
        }
    }
}

async fn read_stdout(stdout: tokio::process::ChildStdout, tx: mpsc::Sender<String>) {
    let mut lines = BufReader::new(stdout).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        if tx.send(line).await.is_err() {
            return;
        }
    }
}

async fn log_stderr(stderr: tokio::process::ChildStderr) {
    let mut lines = BufReader::new(stderr).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        tracing::debug!(target: "sandbox::cli", "{line}");
    }
}

/// Waits for the child (so it is reaped); on a kill request (or the `Agent` being
/// dropped) kills its whole process group, shells and their children included.
async fn reap(mut child: Child, kill: oneshot::Receiver<()>) {
    let pid = child.id();
    tokio::select! {
        status = child.wait() => {
            tracing::debug!(?pid, ?status, "agent exited");
        }
        _ = kill => {
            if let Some(pgid) = pid.and_then(|p| rustix::process::Pid::from_raw(p as i32)) {
                let _ = rustix::process::kill_process_group(pgid, rustix::process::Signal::KILL);
            }
            let _ = child.kill().await;
            tracing::debug!(?pid, "agent killed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> AgentSpec {
        AgentSpec {
            claude_bin: "/bin/claude".into(),
            workspace_dir: "/workspace".into(),
            home: "/state".into(),
            session_id: "0b7e6c1e-0000-4000-8000-000000000000".into(),
            resume: false,
            resume_at: None,
            gateway_url: "http://127.0.0.1:1".into(),
            api_key: "token".into(),
            mcp_url: "http://127.0.0.1:2/mcp".into(),
            mcp_tools: vec!["save_document".into()],
            path: "/usr/bin:/bin".into(),
            max_retries: 0,
            model: None,
            uid_gid: None,
            egress_proxy: None,
            extra_env: Vec::new(),
        }
    }

    #[test]
    fn new_and_resumed_sessions_use_the_conversation_id() {
        let mut spec = spec();
        let args = spec.args();
        let at = args
            .iter()
            .position(|a| a == "--session-id")
            .expect("--session-id");
        assert_eq!(args[at + 1], spec.session_id);
        spec.resume = true;
        assert!(spec.args().contains(&"--resume".to_string()));
        assert!(!spec.args().contains(&"--resume-session-at".to_string()));
    }

    #[test]
    fn a_rewound_resume_names_the_entry_it_keeps_up_to() {
        let mut spec = spec();
        spec.resume_at = Some("5cf44abf-f94b-4f3c-8c8c-d3eb3fe7187e".into());
        assert!(
            !spec.args().contains(&"--resume-session-at".to_string()),
            "a new session has nothing to cut"
        );
        spec.resume = true;
        let args = spec.args();
        let at = args
            .iter()
            .position(|a| a == "--resume-session-at")
            .expect("--resume-session-at");
        assert_eq!(args[at + 1], "5cf44abf-f94b-4f3c-8c8c-d3eb3fe7187e");
        assert_eq!(args[at - 2], "--resume");
    }

    #[test]
    fn only_file_code_and_jarvis_tools_are_allowed() {
        let args = spec().args();
        let value = |flag: &str| {
            let at = args.iter().position(|a| a == flag).expect(flag);
            args[at + 1].clone()
        };
        assert_eq!(value("--tools"), "Read,Write,Edit,Bash,Glob,Grep");
        assert_eq!(value("--permission-prompts"), "none");
        assert!(args.contains(&"--restricted".to_string()));
        assert!(value("--allowedTools").ends_with(",mcp__jarvis__save_document"));
        for tool in ["Agent", "WebFetch", "ScheduleWakeup", "ToolSearch", "Skill"] {
            assert!(
                value("--disallowedTools").split(',').any(|t| t == tool),
                "{tool}"
            );
        }
    }

    #[test]
    fn model_calls_name_the_conversation() {
        let spec = spec();
        let env = spec.env();
        let headers = env
            .iter()
            .find(|(k, _)| *k == "ANTHROPIC_CUSTOM_HEADERS")
            .map(|(_, v)| v.as_str());
        assert_eq!(
            headers,
            Some("X-Jarvis-Conversation: 0b7e6c1e-0000-4000-8000-000000000000")
        );
    }

    #[test]
    fn commands_go_out_through_the_egress_proxy_except_to_loopback() {
        let value = |env: &[(&str, String)], name: &str| {
            env.iter().find(|(k, _)| *k == name).map(|(_, v)| v.clone())
        };
        let env = spec().env();
        assert_eq!(value(&env, "HTTPS_PROXY"), None, "no proxy unless told");
        let mut spec = spec();
        spec.egress_proxy = Some("http://127.0.0.1:4321".into());
        let env = spec.env();
        for name in ["HTTPS_PROXY", "HTTP_PROXY", "https_proxy", "http_proxy"] {
            assert_eq!(
                value(&env, name).as_deref(),
                Some("http://127.0.0.1:4321"),
                "{name}"
            );
        }
        for name in ["NO_PROXY", "no_proxy"] {
            assert_eq!(
                value(&env, name).as_deref(),
                Some("localhost,127.0.0.1,::1")
            );
        }
        // The token reaches the proxy only through the forwarder.
        assert!(
            !env.iter()
                .any(|(k, v)| k.to_ascii_lowercase().contains("proxy") && v.contains("token"))
        );
    }

    #[test]
    fn environment_holds_only_what_the_cli_needs() {
        let names: Vec<&str> = spec().env().into_iter().map(|(k, _)| k).collect();
        assert!(names.contains(&"ANTHROPIC_API_KEY"));
        assert!(names.contains(&"CLAUDE_CODE_MAX_RETRIES"));
        assert!(
            !names
                .iter()
                .any(|n| n.contains("DATABASE") || n.contains("STRIPE"))
        );
    }
}
