//! The Jarvis tools, served to the CLI as an MCP server over streamable HTTP on
//! loopback.
//!
//! Each tool becomes a call to the router (`POST /v1/workspace/calls`, through
//! the hub) and returns the router's answer; saving or updating a document also emits a `document` event and
//! speaking a `voice` event. The tools act for the sandbox's one user: none takes a
//! user id. The calling conversation comes from a header the sandbox put in the
//! CLI's `--mcp-config`.

use std::sync::Arc;

use rmcp::{
    ErrorData, ServerHandler,
    handler::server::{router::tool::ToolRouter, tool::Extension, wrapper::Parameters},
    model::{CallToolResult, ContentBlock, ServerCapabilities, ServerConfig},
    schemars, tool, tool_handler, tool_router,
    transport::streamable_http_server::{
        StreamableHttpServerConfig, StreamableHttpService, session::local::LocalSessionManager,
    },
};
use serde::Deserialize;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use crate::{
    process::CONVERSATION_HEADER,
    protocol::{DocumentType, ToolCall},
    session::{CallResult, Hub},
    translate::EventKind,
};

/// The tools' names, as the CLI must pre-approve them (`mcp__jarvis__<name>`).
pub const TOOL_NAMES: &[&str] = &[
    "save_document",
    "list_documents",
    "search_documents",
    "read_document",
    "update_document",
    "speak",
];

/// `save_document`'s arguments.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub struct SaveDocumentArgs {
    /// The document's file name, e.g. `notes.md`.
    pub filename: String,
    /// The document's whole content.
    pub content: String,
    /// What kind of document it is: text, markdown or code.
    #[serde(rename = "type")]
    pub kind: DocumentType,
}

/// `search_documents`' arguments.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub struct SearchArgs {
    /// Words to look for in the user's documents.
    pub query: String,
}

/// `read_document`'s arguments.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub struct ReadArgs {
    /// The document's id, as `list_documents` or `search_documents` gave it.
    pub id: String,
}

/// `update_document`'s arguments.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub struct UpdateArgs {
    /// The document's id.
    pub id: String,
    /// The document's new, whole content.
    pub content: String,
}

/// `speak`'s arguments.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub struct SpeakArgs {
    /// What to say aloud to the user.
    pub text: String,
}

/// The MCP service: one per MCP session, all sharing the hub.
#[derive(Clone)]
pub struct JarvisTools {
    hub: Arc<Hub>,
    tool_router: ToolRouter<Self>,
}

type Parts = Extension<http::request::Parts>;

#[tool_router]
impl JarvisTools {
    /// Tools acting through `hub`.
    pub fn new(hub: Arc<Hub>) -> Self {
        Self {
            hub,
            tool_router: Self::tool_router(),
        }
    }

    #[tool(
        description = "Save a new document for the user (shown in their documents list). Returns its id."
    )]
    async fn save_document(
        &self,
        parts: Parts,
        Parameters(args): Parameters<SaveDocumentArgs>,
    ) -> Result<CallToolResult, ErrorData> {
        let call = ToolCall::SaveDocument {
            filename: args.filename.clone(),
            content: args.content,
            kind: args.kind,
        };
        self.document_call(parts, call, args.filename).await
    }

    #[tool(description = "List the user's documents (id, filename, type).")]
    async fn list_documents(&self, parts: Parts) -> Result<CallToolResult, ErrorData> {
        self.forward(parts, ToolCall::ListDocuments {}).await
    }

    #[tool(description = "Search the user's documents for words; returns matching documents.")]
    async fn search_documents(
        &self,
        parts: Parts,
        Parameters(args): Parameters<SearchArgs>,
    ) -> Result<CallToolResult, ErrorData> {
        self.forward(parts, ToolCall::SearchDocuments { query: args.query })
            .await
    }

    #[tool(description = "Read one of the user's documents by id.")]
    async fn read_document(
        &self,
        parts: Parts,
        Parameters(args): Parameters<ReadArgs>,
    ) -> Result<CallToolResult, ErrorData> {
        self.forward(parts, ToolCall::ReadDocument { id: args.id })
            .await
    }

    #[tool(description = "Replace the content of one of the user's documents.")]
    async fn update_document(
        &self,
        parts: Parts,
        Parameters(args): Parameters<UpdateArgs>,
    ) -> Result<CallToolResult, ErrorData> {
        self.document_call(
            parts,
            ToolCall::UpdateDocument {
                id: args.id,
                content: args.content,
            },
            String::new(),
        )
        .await
    }

    #[tool(description = "Say a text aloud to the user (text-to-speech). Returns the audio's URL.")]
    async fn speak(
        &self,
        parts: Parts,
        Parameters(args): Parameters<SpeakArgs>,
    ) -> Result<CallToolResult, ErrorData> {
        let conversation = self.conversation(&parts);
        let text = args.text.clone();
        let result = self
            .hub
            .call(conversation.clone(), ToolCall::Speak { text: args.text })
            .await;
        if let (Ok(reply), Some(conversation)) = (&result, &conversation) {
            let url = reply["url"].as_str().unwrap_or_default().to_string();
            // The router's transcript says when a long text was cut.
            let transcript = reply["transcript"].as_str().map_or(text, str::to_string);
            self.hub.emit(
                conversation,
                EventKind::Voice {
                    url,
                    transcript,
                    error: None,
                },
            );
        }
        Ok(tool_result(result))
    }
}

impl JarvisTools {
    async fn forward(&self, parts: Parts, call: ToolCall) -> Result<CallToolResult, ErrorData> {
        Ok(tool_result(
            self.hub.call(self.conversation(&parts), call).await,
        ))
    }

    /// A call whose success is a document `{id, filename}`: also emits `document`.
    async fn document_call(
        &self,
        parts: Parts,
        call: ToolCall,
        filename: String,
    ) -> Result<CallToolResult, ErrorData> {
        let conversation = self.conversation(&parts);
        let result = self.hub.call(conversation.clone(), call).await;
        if let (Ok(reply), Some(conversation)) = (&result, &conversation) {
            let id = text_field(reply, "id");
            let filename = reply["filename"]
                .as_str()
                .map(str::to_string)
                .unwrap_or(filename);
            self.hub
                .emit(conversation, EventKind::Document { id, filename });
        }
        Ok(tool_result(result))
    }
}

#[tool_handler(router = self.tool_router)]
impl ServerHandler for JarvisTools {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_instructions("Jarvis tools: the user's documents and voice.")
    }
}

impl JarvisTools {
    /// The calling conversation, from the header in the CLI's MCP config: the
    /// CLI's session, mapped to the conversation it serves (a spare CLI's
    /// session is not its conversation's id).
    fn conversation(&self, parts: &Parts) -> Option<String> {
        let Extension(parts) = parts;
        parts
            .headers
            .get(CONVERSATION_HEADER)
            .and_then(|value| value.to_str().ok())
            .map(|session| self.hub.sessions().conversation_of(session))
    }
}

fn text_field(value: &Value, key: &str) -> String {
    match &value[key] {
        Value::String(text) => text.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

fn tool_result(result: CallResult) -> CallToolResult {
    match result {
        Ok(value) => CallToolResult::success(vec![ContentBlock::text(value.to_string())]),
        Err(error) => CallToolResult::error(vec![ContentBlock::text(format!(
            "{}: {}",
            error.code, error.message
        ))]),
    }
}

/// The MCP endpoint as an axum router (mount it at `/mcp`), stopped by `cancel`.
pub fn router(hub: Arc<Hub>, cancel: CancellationToken) -> axum::Router {
    let service: StreamableHttpService<JarvisTools, LocalSessionManager> =
        StreamableHttpService::new(
            move || Ok(JarvisTools::new(hub.clone())),
            Default::default(),
            StreamableHttpServerConfig::default()
                .with_sse_keep_alive(None)
                .with_cancellation_token(cancel),
        );
    axum::Router::new().nest_service("/mcp", service)
}
