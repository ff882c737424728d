//! Running turns: one CLI process per active conversation, at most `max_agents`
//! alive, the least recently used idle one closed to make room (it resumes later
//! from its transcript).
//!
//! Owns a turn's life: `turn` event, (re)starting the CLI, feeding it the user's
//! message, translating its output, interrupts, the inactivity timeout and crashes.
//! Numbering and delivering events is the hub's (`session`) business.

use std::{path::Path, sync::Arc, time::Duration};

use tokio::{sync::Notify, time::Instant};

use crate::{
    process::{Agent, AgentSpec},
    protocol::error_code,
    rewind::Rewind,
    session::{Hub, LinkId, conversation_entry, running_turns},
    speaker::Speaker,
    sync::RouterSync,
    translate::{EventKind, Output, Translator},
};

/// How long an interrupted CLI gets to end its turn before it is killed.
pub const INTERRUPT_GRACE: Duration = Duration::from_millis(700);

/// How long a turn waits for the CLI's first line, at least (start-up included).
pub const STARTUP_ALLOWANCE: Duration = Duration::from_secs(60);

/// What the turns need to start CLIs.
#[derive(Debug, Clone)]
pub struct AgentSettings {
    /// The template for each conversation's CLI (session id and resume are set per turn).
    pub spec: AgentSpec,
    /// CLI processes alive at most.
    pub max_agents: usize,
    /// A running turn fails after this long without a line from the CLI.
    pub idle_timeout: Duration,
    /// The sandbox's own sync through the router (`--sync router`): attachments
    /// missing from the workspace are fetched before a turn, changes pushed after.
    pub sync: Option<Arc<RouterSync>>,
    /// A CLI kept started for the next new conversation (`--spare-agent`).
    pub spare: Option<Arc<Spare>>,
}

/// A CLI started ahead of the next new conversation, under a session id of its
/// own: a new conversation's first turn skips the CLI's start-up (the CPU
/// seconds of a start are spent before anyone waits). The conversation that
/// takes it keeps its session (`crate::sessions`). Started at the sandbox's
/// start and again after a turn that used it (so it does not compete with that
/// turn's answer). It counts on top of `max_agents`.
#[derive(Debug, Default)]
pub struct Spare {
    ready: std::sync::Mutex<Option<(String, Agent)>>,
}

impl Spare {
    /// Starts a spare CLI from `template` unless one is ready.
    pub fn fill(&self, template: &AgentSpec) {
        let mut ready = self.ready.lock().unwrap_or_else(|e| e.into_inner());
        if ready.as_mut().is_some_and(|(_, agent)| agent.is_alive()) {
            return;
        }
        let mut spec = template.clone();
        spec.session_id = uuid::Uuid::new_v4().to_string();
        spec.resume = false;
        spec.resume_at = None;
        match Agent::spawn(&spec) {
            Ok(agent) => {
                tracing::debug!(session.id = %spec.session_id, "spare agent started");
                *ready = Some((spec.session_id, agent));
            }
            Err(error) => {
                *ready = None;
                tracing::warn!(%error, "could not start a spare agent");
            }
        }
    }

    /// The spare CLI and its session id, if one is ready and alive.
    fn take(&self) -> Option<(String, Agent)> {
        let mut ready = self.ready.lock().unwrap_or_else(|e| e.into_inner());
        let (session, mut agent) = ready.take()?;
        agent.is_alive().then_some((session, agent))
    }
}

/// A conversation's CLI and running turn.
#[derive(Debug, Default)]
pub(crate) struct Slot {
    agent: Option<Agent>,
    running: Option<Arc<Notify>>,
}

impl Slot {
    pub(crate) fn alive(&self) -> bool {
        self.agent.is_some() || self.running.is_some()
    }

    /// Marks a turn as running (for tests of what depends on running turns).
    #[cfg(test)]
    pub(crate) fn start_for_test(&mut self) {
        self.running = Some(Arc::new(Notify::new()));
    }

    /// A turn runs (its end may still wait to be stored).
    pub(crate) fn running(&self) -> bool {
        self.running.is_some()
    }
}

/// A `message` the router sent: what the turn needs.
#[derive(Debug, Clone, Default)]
pub struct TurnRequest {
    /// The conversation (a canonical UUID).
    pub conversation_id: String,
    /// The prompt for the CLI.
    pub content: String,
    /// Workspace paths of the uploads the message names.
    pub attachments: Vec<String>,
    /// Speak the answer, at most this many characters.
    pub voice: Option<usize>,
    /// The assistant message the router opened for the turn.
    pub message_id: Option<String>,
    /// The user's message (the CLI prompt's `uuid`).
    pub prompt_id: Option<String>,
    /// The prompt of an earlier turn this message takes the place of.
    pub replaces: Option<String>,
    /// Turns the workspace runs at once at most (all conversations).
    pub max_turns: Option<u32>,
    /// The link that sent the message (refusals go to it only).
    pub link: LinkId,
}

/// Starts a turn in the background, or answers the sending link with an error
/// (and changes nothing) when the conversation's turn is still running, the
/// workspace runs `max_turns` turns or every agent is busy, or when it
/// `replaces` a prompt the agent's memory does not hold (`crate::rewind`). With
/// `voice` (the characters to speak at most), the answer is also spoken.
pub fn start_turn(hub: Arc<Hub>, settings: Arc<AgentSettings>, request: TurnRequest) {
    let TurnRequest {
        conversation_id,
        content,
        attachments,
        voice,
        message_id,
        prompt_id,
        replaces,
        max_turns,
        link,
    } = request;
    let session = hub.sessions().session_of(&conversation_id);
    let rewind = match replaces
        .map(|prompt| Rewind::plan(&settings.spec.home, &session, &prompt))
        .transpose()
    {
        Ok(rewind) => rewind,
        Err(error) => {
            tracing::info!(conversation.id = %conversation_id, %error, "a replacing message refused");
            return hub.send_error(
                link,
                (Some(conversation_id), message_id),
                error_code::CANNOT_REWIND,
                format!("{error}; send it as a new message instead"),
            );
        }
    };
    match claim(
        &hub,
        &settings,
        &conversation_id,
        Ticket {
            message_id: message_id.clone(),
            prompt_id: prompt_id.clone(),
            max_turns,
            fresh_agent: rewind.is_some(),
        },
    ) {
        Ok((agent, interrupt)) => {
            let speaker = voice
                .map(|max_chars| Speaker::start(hub.clone(), conversation_id.clone(), max_chars));
            tokio::spawn(run_turn(
                hub,
                settings,
                conversation_id,
                Prompt {
                    content,
                    attachments,
                    id: prompt_id,
                    rewind,
                },
                (agent, speaker),
                interrupt,
            ));
        }
        Err((code, message)) => {
            hub.send_error(link, (Some(conversation_id), message_id), code, message)
        }
    }
}

type Claim = (Option<Agent>, Arc<Notify>);

/// What [`claim`] records for a turn.
struct Ticket {
    message_id: Option<String>,
    prompt_id: Option<String>,
    max_turns: Option<u32>,
    /// The conversation's running CLI (which remembers what is to be forgotten)
    /// is closed: the turn starts a new one.
    fresh_agent: bool,
}

/// What the CLI is given for a turn.
struct Prompt {
    content: String,
    attachments: Vec<String>,
    /// The prompt's `uuid` in the CLI's transcript.
    id: Option<String>,
    /// The turns to forget first.
    rewind: Option<Rewind>,
}

/// Marks the conversation's turn as running (for the router's `message_id`) and
/// takes (or makes room for) its CLI.
fn claim(
    hub: &Hub,
    settings: &AgentSettings,
    conversation_id: &str,
    ticket: Ticket,
) -> Result<Claim, (&'static str, &'static str)> {
    let Ticket {
        message_id,
        prompt_id,
        max_turns,
        fresh_agent,
    } = ticket;
    let mut guard = hub.lock();
    let state = &mut *guard;
    let running = running_turns(state);
    state.clock += 1;
    let clock = state.clock;
    let conversation = conversation_entry(
        &mut state.conversations,
        hub.conversations_dir(),
        conversation_id,
    );
    if conversation.slot.running.is_some() {
        return Err((
            error_code::TURN_IN_PROGRESS,
            "a turn is already running in this conversation",
        ));
    }
    if max_turns.is_some_and(|max| running >= max as usize) {
        return Err((
            error_code::TOO_MANY_TURNS,
            "the workspace runs as many turns at once as the plan allows",
        ));
    }
    conversation.last_used = clock;
    let mut agent = conversation.slot.agent.take();
    if agent.as_mut().is_some_and(|agent| !agent.is_alive()) {
        agent = None;
    }
    if fresh_agent && let Some(old) = agent.take() {
        old.shutdown();
    }
    if agent.is_none() && !make_room(&mut state.conversations, settings.max_agents) {
        return Err((
            error_code::TOO_MANY_AGENTS,
            "every agent is busy with a running turn",
        ));
    }
    let interrupt = Arc::new(Notify::new());
    if let Some(conversation) = state.conversations.get_mut(conversation_id) {
        conversation.slot.running = Some(interrupt.clone());
        conversation.message_id = message_id;
        conversation.prompt_id = prompt_id;
    }
    Ok((agent, interrupt))
}

/// Interrupts the running turn of one conversation, or of all.
pub fn interrupt(hub: &Hub, conversation_id: Option<&str>) {
    let state = hub.lock();
    for (id, conversation) in &state.conversations {
        if conversation_id.is_none_or(|wanted| wanted == id)
            && let Some(interrupt) = &conversation.slot.running
        {
            interrupt.notify_one();
        }
    }
}

/// Closes the least recently used idle CLI while `max_agents` are alive; `false`
/// when all alive ones run turns.
fn make_room(
    conversations: &mut std::collections::HashMap<String, crate::session::Conversation>,
    max_agents: usize,
) -> bool {
    loop {
        let alive = conversations.values().filter(|c| c.slot.alive()).count();
        if alive < max_agents.max(1) {
            return true;
        }
        let idle = conversations
            .iter_mut()
            .filter(|(_, c)| c.slot.agent.is_some() && c.slot.running.is_none())
            .min_by_key(|(_, c)| c.last_used);
        let Some((id, conversation)) = idle else {
            return false;
        };
        tracing::info!(conversation.id = %id, "closing the least recently used agent");
        if let Some(agent) = conversation.slot.agent.take() {
            agent.shutdown();
        }
    }
}

async fn run_turn(
    hub: Arc<Hub>,
    settings: Arc<AgentSettings>,
    conversation_id: String,
    prompt: Prompt,
    (agent, mut speaker): (Option<Agent>, Option<Speaker>),
    interrupt: Arc<Notify>,
) {
    let Prompt {
        content,
        attachments,
        id: prompt_id,
        rewind,
    } = prompt;
    hub.emit(&conversation_id, EventKind::Turn);
    // Uploads made while this sandbox was awake are not on its disk yet.
    if let Some(sync) = &settings.sync {
        for path in &attachments {
            if let Err(error) = sync.fetch(path).await {
                tracing::warn!(%error, "an attachment could not be fetched from the router");
            }
        }
    }
    let spare = match (&agent, &rewind) {
        (None, None) => take_spare(&hub, &settings, &conversation_id),
        _ => None,
    };
    let agent = match (agent.or(spare), rewind) {
        (Some(agent), None) => Ok(agent),
        (_, rewind) => {
            let mut spec = settings.spec.clone();
            spec.session_id = hub.sessions().session_of(&conversation_id);
            match rewind.map(Rewind::apply).transpose() {
                Ok(at) => {
                    spec.resume_at = at.flatten();
                    spec.resume = transcript_exists(&spec.home, &spec.session_id);
                    Agent::spawn(&spec)
                }
                Err(error) => Err(crate::Error::Rewind(error)),
            }
        }
    };
    let (kept, end) = match agent {
        Ok(agent) => {
            drive(
                &hub,
                &settings,
                &conversation_id,
                (&content, prompt_id.as_deref()),
                agent,
                (&interrupt, speaker.as_mut()),
            )
            .await
        }
        Err(error) => {
            tracing::error!(%error, "could not start the agent");
            let end = EventKind::error(error_code::AGENT_START_FAILED, error.to_string());
            (None, end)
        }
    };
    // The answer's audio comes before its end: `done` tells the browser the
    // voice is complete too. Each call is bounded by the router's TTS timeout.
    if let Some(speaker) = speaker {
        speaker.finish().await;
    }
    // The turn's end is stored before any link sees it (what a user saw finish
    // survives a router crash); then the slot is freed and the end shown under one
    // lock, so a message sent in answer to it finds the conversation idle.
    let seq = hub.emit_end(&mut hub.lock(), &conversation_id, end);
    hub.wait_stored(&conversation_id, seq).await;
    let mut state = hub.lock();
    if let Some(conversation) = state.conversations.get_mut(&conversation_id) {
        conversation.slot.running = None;
        conversation.slot.agent = kept;
        conversation.message_id = None;
        conversation.prompt_id = None;
    }
    hub.release(&mut state, &conversation_id);
    drop(state);
    // The next new conversation is warm too (also when the spare died):
    // started after this turn's answer, not against it.
    if let Some(spare) = &settings.spare {
        spare.fill(&settings.spec);
    }
    if let Some(sync) = settings.sync.clone() {
        tokio::spawn(async move {
            if let Err(error) = sync.push().await {
                tracing::warn!(%error, "the workspace could not be pushed to the router");
            }
        });
    }
}

/// The spare CLI for `conversation_id` when it is new (no session recorded,
/// no transcript): its session is recorded as the conversation's first.
fn take_spare(hub: &Hub, settings: &AgentSettings, conversation_id: &str) -> Option<Agent> {
    let spare = settings.spare.as_ref()?;
    if hub.sessions().is_mapped(conversation_id)
        || transcript_exists(&settings.spec.home, conversation_id)
    {
        return None;
    }
    let (session, agent) = spare.take()?;
    match hub.sessions().record(conversation_id, &session) {
        Ok(()) => {
            tracing::debug!(conversation.id = conversation_id, session.id = %session, "the spare agent takes a new conversation");
            Some(agent)
        }
        Err(error) => {
            tracing::warn!(%error, "the session map could not be written; starting an agent instead");
            agent.shutdown();
            None
        }
    }
}

/// Feeds one message and relays the CLI's output until the turn ends; returns the
/// CLI when it can take the next turn, and the turn's last event (not yet sent).
async fn drive(
    hub: &Hub,
    settings: &AgentSettings,
    conversation_id: &str,
    (content, prompt_id): (&str, Option<&str>),
    mut agent: Agent,
    (interrupt, mut speaker): (&Notify, Option<&mut Speaker>),
) -> (Option<Agent>, EventKind) {
    let stdin = agent.stdin();
    let mut message =
        serde_json::json!({"type": "user", "message": {"role": "user", "content": content}});
    // The CLI keeps the prompt under this uuid: a later `replaces` names it.
    if let Some(id) = prompt_id {
        message["uuid"] = id.into();
    }
    if stdin.send(message.to_string()).await.is_err() {
        return (
            None,
            EventKind::error(error_code::AGENT_CRASHED, "the agent exited"),
        );
    }
    let mut translator = Translator::new();
    // A (re)started CLI may take a while to say anything on a busy machine: the
    // inactivity clock starts with its first line.
    let mut idle_deadline = Instant::now() + settings.idle_timeout.max(STARTUP_ALLOWANCE);
    let mut interrupt_deadline: Option<Instant> = None;
    loop {
        tokio::select! {
            line = agent.next_line() => {
                let Some(line) = line else {
                    tracing::warn!(conversation.id = conversation_id, "the agent exited mid-turn");
                    return (None, EventKind::error(error_code::AGENT_CRASHED, "the agent exited mid-turn"));
                };
                idle_deadline = Instant::now() + settings.idle_timeout;
                tracing::trace!(target: "sandbox::cli", "{line}");
                for output in translator.line(&line) {
                    match output {
                        Output::Init { mcp_servers } => check_mcp(&mcp_servers),
                        Output::Refuse { response } => {
                            tracing::warn!(conversation.id = conversation_id, "refusing a CLI host request");
                            let _ = stdin.send(response).await;
                        }
                        Output::Event(event) if event.ends_turn() => return (Some(agent), event),
                        Output::Event(event) => {
                            // Spoken as it streams: each finished sentence goes out now.
                            if let EventKind::Text { delta } = &event
                                && let Some(speaker) = speaker.as_deref_mut()
                            {
                                speaker.text(delta);
                            }
                            hub.emit(conversation_id, event);
                        }
                    }
                }
            }
            () = tokio::time::sleep_until(idle_deadline) => {
                tracing::warn!(conversation.id = conversation_id, "the agent went silent mid-turn");
                return (None, EventKind::error(error_code::AGENT_TIMEOUT, "the agent stopped responding"));
            }
            () = interrupt.notified(), if interrupt_deadline.is_none() => {
                translator.interrupted();
                if let Some(speaker) = speaker.as_deref() {
                    speaker.stop();
                }
                interrupt_deadline = Some(Instant::now() + INTERRUPT_GRACE);
                let request = serde_json::json!({
                    "type": "control_request",
                    "request_id": uuid::Uuid::new_v4().to_string(),
                    "request": {"subtype": "interrupt"},
                });
                let _ = stdin.send(request.to_string()).await;
            }
            () = sleep_until_some(interrupt_deadline) => {
                tracing::warn!(conversation.id = conversation_id, "the agent ignored an interrupt; killing it");
                return (None, EventKind::Done { usage: Default::default(), stopped: true });
            }
        }
    }
}

async fn sleep_until_some(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

fn check_mcp(servers: &[(String, String)]) {
    let jarvis = servers
        .iter()
        .find(|(name, _)| name == crate::process::MCP_SERVER_NAME);
    match jarvis {
        Some((_, status)) if status == "connected" => tracing::debug!("jarvis tools connected"),
        other => tracing::error!(status = ?other, "the CLI has no connected jarvis tools"),
    }
}

/// Whether the CLI has a transcript of `session_id` under `home`
/// (`.claude/projects/<encoded cwd>/<session_id>.jsonl`).
pub fn transcript_exists(home: &Path, session_id: &str) -> bool {
    crate::rewind::transcript_path(home, session_id).is_some()
}
