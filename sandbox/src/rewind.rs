//! Regenerate and edit-and-resend: cutting the agent's memory of a conversation
//! so a new message takes the place of an earlier turn and of every turn after it.
//!
//! Each prompt the sandbox gives the CLI carries the router's id of the user's
//! message as its `uuid` (the CLI keeps it in its transcript), so a `message`
//! with `replaces` names the turn to forget by that id. The CLI's transcript
//! (`$HOME/.claude/projects/<encoded cwd>/<session>.jsonl`, one JSON entry per
//! line, each with its `uuid` and `parentUuid`) tells where that prompt hangs:
//! the CLI is resumed with `--resume-session-at <its parent>`, which keeps the
//! history up to and including the parent, and the new prompt continues from
//! there; later resumes follow the newest branch. A prompt with no parent was the
//! conversation's first: the transcript is removed and a new session started
//! under the same id.
//!
//! The transcript lives in the agent's HOME, which the agent can change under us:
//! it is opened without following a symlink, must be a regular file, and is read
//! up to [`MAX_TRANSCRIPT_BYTES`].

use std::{
    io::{BufRead, BufReader, Read},
    os::unix::fs::OpenOptionsExt,
    path::{Path, PathBuf},
};

use serde_json::Value;

/// The largest transcript searched for a prompt.
pub const MAX_TRANSCRIPT_BYTES: u64 = 256 * 1024 * 1024;

/// How the CLI is started so the replaced turn and those after it are forgotten.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rewind {
    /// Resume, keeping the transcript up to and including this entry.
    At(String),
    /// Start the session afresh: the replaced prompt was the first. The
    /// transcript (when there is one) is removed first ([`Rewind::apply`]).
    Fresh(Option<PathBuf>),
}

/// Why a `replaces` cannot be honoured.
#[derive(Debug, thiserror::Error)]
pub enum RewindError {
    /// The transcript holds no prompt with that id.
    #[error("the agent's memory of this conversation does not hold that message")]
    NotFound,
    /// The transcript is not a regular file, or is too large to search.
    #[error("the agent's memory of this conversation cannot be read: {0}")]
    Unreadable(String),
    /// Reading failed.
    #[error("the agent's memory of this conversation cannot be read: {0}")]
    Io(#[from] std::io::Error),
}

impl Rewind {
    /// Decides how to forget the turn of prompt `prompt_id` (and the turns after
    /// it) in session `session_id` under `home`. With no transcript at all there is
    /// nothing to forget: a fresh start.
    pub fn plan(home: &Path, session_id: &str, prompt_id: &str) -> Result<Self, RewindError> {
        let Some(path) = transcript_path(home, session_id) else {
            return Ok(Self::Fresh(None));
        };
        match parent_of_prompt(&path, prompt_id)? {
            Some(parent) => Ok(Self::At(parent)),
            None => Ok(Self::Fresh(Some(path))),
        }
    }

    /// Prepares the start: removes the transcript of a fresh start. Returns the
    /// entry to resume at, or `None` for a new session.
    pub fn apply(self) -> std::io::Result<Option<String>> {
        match self {
            Self::At(entry) => Ok(Some(entry)),
            Self::Fresh(None) => Ok(None),
            Self::Fresh(Some(path)) => match std::fs::remove_file(&path) {
                Err(error) if error.kind() != std::io::ErrorKind::NotFound => Err(error),
                _ => Ok(None),
            },
        }
    }
}

/// The transcript of `session_id` under `home`, if there is one
/// (`.claude/projects/<encoded cwd>/<session_id>.jsonl`).
pub fn transcript_path(home: &Path, session_id: &str) -> Option<PathBuf> {
    let projects = home.join(".claude").join("projects");
    let file = format!("{session_id}.jsonl");
    std::fs::read_dir(projects)
        .ok()?
        .flatten()
        .map(|entry| entry.path().join(&file))
        .find(|path| std::fs::symlink_metadata(path).is_ok_and(|m| m.is_file() || m.is_symlink()))
}

/// The `parentUuid` of the user entry whose `uuid` is `prompt_id`: `Some(parent)`,
/// or `None` when it has none (the session's first prompt).
fn parent_of_prompt(path: &Path, prompt_id: &str) -> Result<Option<String>, RewindError> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
        .open(path)
        .map_err(|error| match error.raw_os_error() {
            Some(code) if code == rustix::io::Errno::LOOP.raw_os_error() => {
                RewindError::Unreadable("it is a symbolic link".into())
            }
            _ => RewindError::Io(error),
        })?;
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(RewindError::Unreadable("it is not a regular file".into()));
    }
    if meta.len() > MAX_TRANSCRIPT_BYTES {
        return Err(RewindError::Unreadable(format!(
            "it is larger than {} MiB",
            MAX_TRANSCRIPT_BYTES / (1024 * 1024)
        )));
    }
    find_parent(BufReader::new(file.take(MAX_TRANSCRIPT_BYTES)), prompt_id)
}

fn find_parent(mut reader: impl BufRead, prompt_id: &str) -> Result<Option<String>, RewindError> {
    let needle = prompt_id.as_bytes();
    let mut line = Vec::new();
    loop {
        line.clear();
        if reader.read_until(b'\n', &mut line)? == 0 {
            return Err(RewindError::NotFound);
        }
        // Only lines naming the id are parsed (tool results can be large).
        if !line.windows(needle.len()).any(|w| w == needle) {
            continue;
        }
        let Ok(entry) = serde_json::from_slice::<Value>(&line) else {
            continue;
        };
        if entry["type"] == "user" && entry["uuid"] == prompt_id {
            return Ok(entry["parentUuid"].as_str().map(str::to_string));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIRST: &str = "aaaaaaaa-0000-4000-8000-000000000001";
    const SECOND: &str = "aaaaaaaa-0000-4000-8000-000000000002";
    const SESSION: &str = "11111111-1111-4111-8111-111111111111";

    /// A transcript as the CLI writes one (2.1.331): bookkeeping lines without
    /// uuids, attachments chained between prompt and answer.
    fn transcript() -> String {
        [
            r#"{"type":"queue-operation","operation":"enqueue"}"#.to_string(),
            format!(r#"{{"type":"user","uuid":"{FIRST}","parentUuid":null,"message":{{"role":"user","content":"first"}}}}"#),
            format!(r#"{{"type":"attachment","uuid":"b1","parentUuid":"{FIRST}"}}"#),
            r#"{"type":"assistant","uuid":"c1","parentUuid":"b1","message":{"content":[{"type":"text","text":"one"}]}}"#.to_string(),
            r#"{"type":"attachment","uuid":"d1","parentUuid":"c1"}"#.to_string(),
            // A tool result naming the second prompt's id is not the prompt.
            format!(r#"{{"type":"user","uuid":"e1","parentUuid":"d1","message":{{"content":[{{"type":"tool_result","content":"{SECOND}"}}]}}}}"#),
            format!(r#"{{"type":"user","uuid":"{SECOND}","parentUuid":"e1","message":{{"role":"user","content":"second"}}}}"#),
            format!(r#"{{"type":"assistant","uuid":"f1","parentUuid":"{SECOND}"}}"#),
        ]
        .join("\n")
            + "\n"
    }

    fn home_with(text: &str) -> (tempfile::TempDir, PathBuf) {
        let home = tempfile::tempdir().expect("tempdir");
        let dir = home.path().join(".claude/projects/-workspace");
        std::fs::create_dir_all(&dir).expect("mkdir");
        let path = dir.join(format!("{SESSION}.jsonl"));
        std::fs::write(&path, text).expect("write");
        (home, path)
    }

    #[test]
    fn a_later_prompt_resumes_at_its_parent() {
        let (home, _) = home_with(&transcript());
        let plan = Rewind::plan(home.path(), SESSION, SECOND).expect("plan");
        assert_eq!(plan, Rewind::At("e1".into()));
        assert_eq!(plan.apply().expect("apply"), Some("e1".into()));
    }

    #[test]
    fn the_first_prompt_starts_afresh_and_removes_the_transcript() {
        let (home, path) = home_with(&transcript());
        let plan = Rewind::plan(home.path(), SESSION, FIRST).expect("plan");
        assert_eq!(plan, Rewind::Fresh(Some(path.clone())));
        assert_eq!(plan.apply().expect("apply"), None);
        assert!(!path.exists(), "the old session is gone");
    }

    #[test]
    fn an_unknown_prompt_is_refused_and_changes_nothing() {
        let (home, path) = home_with(&transcript());
        let unknown = "aaaaaaaa-0000-4000-8000-000000000009";
        assert!(matches!(
            Rewind::plan(home.path(), SESSION, unknown),
            Err(RewindError::NotFound)
        ));
        assert!(path.exists());
    }

    #[test]
    fn no_transcript_is_a_fresh_start() {
        let home = tempfile::tempdir().expect("tempdir");
        assert_eq!(
            Rewind::plan(home.path(), SESSION, FIRST).expect("plan"),
            Rewind::Fresh(None)
        );
    }

    #[test]
    fn a_transcript_swapped_for_a_symlink_is_not_read() {
        let (home, path) = home_with("");
        let elsewhere = home.path().join("elsewhere.jsonl");
        std::fs::write(&elsewhere, transcript()).expect("write");
        std::fs::remove_file(&path).expect("rm");
        std::os::unix::fs::symlink(&elsewhere, &path).expect("symlink");
        assert!(matches!(
            Rewind::plan(home.path(), SESSION, SECOND),
            Err(RewindError::Unreadable(_))
        ));
    }
}
