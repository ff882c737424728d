//! Which CLI session holds each conversation's history.
//!
//! By default a conversation's CLI session id is the conversation id. A spare
//! CLI ([`crate::agents`]) is started before anyone knows which conversation it
//! will serve, with a fresh session id; the conversation that takes it keeps
//! that session for good. This map records those, in
//! `<state>/jarvis/sessions.json` (agent state: stored and restored with the
//! transcripts). Everything that derives a session from a conversation
//! (`--resume`, the transcript a rewind cuts) asks [`Sessions::session_of`];
//! what the CLI names a session in (the conversation header of its model calls
//! and MCP calls) is mapped back with [`Sessions::conversation_of`].
//!
//! The file is in a directory the agent can write: what is read from it is
//! checked (UUIDs only, bounded size), and a bad file reads as empty.

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    sync::Mutex,
};

use uuid::Uuid;

/// Largest map file read.
const MAX_FILE_BYTES: u64 = 4 << 20;

/// Conversation → CLI session, where they differ.
#[derive(Debug)]
pub struct Sessions {
    path: PathBuf,
    map: Mutex<HashMap<String, String>>,
}

impl Sessions {
    /// The map kept under `state_dir`, as its file says now.
    pub fn load(state_dir: &Path) -> Self {
        let path = state_dir.join("jarvis").join("sessions.json");
        let map = Mutex::new(read(&path));
        Self { path, map }
    }

    /// Reads the file again (a claimed sandbox: the user's agent state was just
    /// put in place).
    pub fn reload(&self) {
        *self.lock() = read(&self.path);
    }

    /// The CLI session of `conversation_id` (the conversation id itself unless a
    /// spare CLI took it).
    pub fn session_of(&self, conversation_id: &str) -> String {
        self.lock()
            .get(conversation_id)
            .cloned()
            .unwrap_or_else(|| conversation_id.to_string())
    }

    /// Whether `conversation_id` has a session of its own recorded.
    pub fn is_mapped(&self, conversation_id: &str) -> bool {
        self.lock().contains_key(conversation_id)
    }

    /// The conversation a CLI session serves (the session id itself when none
    /// is recorded).
    pub fn conversation_of(&self, session_id: &str) -> String {
        self.lock()
            .iter()
            .find(|(_, session)| session.as_str() == session_id)
            .map(|(conversation, _)| conversation.clone())
            .unwrap_or_else(|| session_id.to_string())
    }

    /// Records that `conversation_id`'s history is session `session_id`, on
    /// disk before it returns.
    pub fn record(&self, conversation_id: &str, session_id: &str) -> std::io::Result<()> {
        let mut map = self.lock();
        map.insert(conversation_id.to_string(), session_id.to_string());
        let text = serde_json::to_string(&*map).map_err(std::io::Error::other)?;
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let tmp = self.path.with_extension("json.tmp");
        let _ = std::fs::remove_file(&tmp);
        std::fs::write(&tmp, text)?;
        std::fs::rename(tmp, &self.path)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, String>> {
        self.map.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The map in `path`; empty when missing, too large or not a map of UUIDs.
fn read(path: &Path) -> HashMap<String, String> {
    use std::io::Read;
    let Ok(file) = std::fs::File::open(path) else {
        return HashMap::new();
    };
    let mut text = String::new();
    if file.take(MAX_FILE_BYTES).read_to_string(&mut text).is_err() {
        return HashMap::new();
    }
    let Ok(map) = serde_json::from_str::<HashMap<String, String>>(&text) else {
        tracing::warn!(path = %path.display(), "the session map is not readable; ignored");
        return HashMap::new();
    };
    map.into_iter()
        .filter_map(|(conversation, session)| {
            let conversation = Uuid::parse_str(&conversation).ok()?;
            let session = Uuid::parse_str(&session).ok()?;
            Some((conversation.to_string(), session.to_string()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conversations_default_to_their_own_session_and_recorded_ones_survive() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (c, s) = (Uuid::new_v4().to_string(), Uuid::new_v4().to_string());
        let sessions = Sessions::load(dir.path());
        assert_eq!(sessions.session_of(&c), c);
        assert_eq!(sessions.conversation_of(&s), s);
        sessions.record(&c, &s).expect("recorded");
        assert_eq!(sessions.session_of(&c), s);
        assert_eq!(sessions.conversation_of(&s), c);
        let again = Sessions::load(dir.path());
        assert_eq!(again.session_of(&c), s, "kept on disk");
        assert!(again.is_mapped(&c));
    }

    #[test]
    fn a_tampered_file_reads_as_uuids_only() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("jarvis").join("sessions.json");
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        let c = Uuid::new_v4().to_string();
        std::fs::write(
            &path,
            serde_json::json!({ &c: "../../etc/passwd", "x": Uuid::new_v4().to_string() })
                .to_string(),
        )
        .expect("write");
        let sessions = Sessions::load(dir.path());
        assert_eq!(sessions.session_of(&c), c);
        std::fs::write(&path, "not json").expect("write");
        sessions.reload();
        assert_eq!(sessions.session_of(&c), c);
    }
}
