//! Translation of recorded CLI output (2.1.331 against a fake Messages API).

use super::*;

fn run(recorded: &str) -> Vec<Output> {
    let mut translator = Translator::new();
    recorded
        .lines()
        .flat_map(|line| translator.line(line))
        .collect()
}

fn events(outputs: Vec<Output>) -> Vec<EventKind> {
    outputs
        .into_iter()
        .filter_map(|o| match o {
            Output::Event(e) => Some(e),
            Output::Init { .. } | Output::Refuse { .. } => None,
        })
        .collect()
}

#[test]
fn text_streams_as_deltas_and_ends_with_done() {
    let events = events(run(include_str!("fixtures/text.jsonl")));
    assert_eq!(
        events,
        vec![
            EventKind::Text {
                delta: "Hello ".into()
            },
            EventKind::Text {
                delta: "world".into()
            },
            EventKind::Done {
                usage: Usage {
                    input_tokens: 12,
                    output_tokens: 5
                },
                stopped: false,
            },
        ]
    );
}

#[test]
fn tool_use_and_result_are_reported_once() {
    let events = events(run(include_str!("fixtures/bash.jsonl")));
    let EventKind::ToolUse { id, name, input } = &events[0] else {
        panic!("expected tool_use first, got {events:?}");
    };
    assert_eq!((id.as_str(), name.as_str()), ("toolu_2", "Bash"));
    assert_eq!(input["command"], "env");
    let EventKind::ToolResult {
        id,
        is_error,
        content,
    } = &events[1]
    else {
        panic!("expected tool_result second, got {events:?}");
    };
    assert_eq!(id, "toolu_2");
    assert!(!is_error);
    assert!(content.contains("ANTHROPIC_BASE_URL="));
    assert_eq!(
        events
            .iter()
            .filter(|e| matches!(e, EventKind::ToolUse { .. }))
            .count(),
        1
    );
    assert!(matches!(events.last(), Some(EventKind::Done { .. })));
}

#[test]
fn init_line_reports_mcp_servers() {
    let line = r#"{"type":"system","subtype":"init","mcp_servers":[{"name":"jarvis","status":"connected"}]}"#;
    assert_eq!(
        Translator::new().line(line),
        vec![Output::Init {
            mcp_servers: vec![("jarvis".into(), "connected".into())]
        }]
    );
}

#[test]
fn rate_limit_result_is_an_error() {
    let events = events(run(include_str!("fixtures/rate_limited.jsonl")));
    let Some(EventKind::Error { code, message }) = events.last() else {
        panic!("expected an error, got {events:?}");
    };
    assert_eq!(code, error_code::RATE_LIMITED);
    assert!(message.contains("429"), "{message}");
    assert!(!events.iter().any(|e| matches!(e, EventKind::Text { .. })));
}

#[test]
fn interrupted_turn_ends_with_a_stopped_done() {
    let line = r#"{"type":"result","subtype":"error_during_execution","is_error":true,"usage":{"input_tokens":3,"output_tokens":1}}"#;
    let mut translator = Translator::new();
    translator.interrupted();
    assert_eq!(
        translator.line(line),
        vec![Output::Event(EventKind::Done {
            usage: Usage {
                input_tokens: 3,
                output_tokens: 1
            },
            stopped: true,
        })]
    );
}

#[test]
fn overloaded_and_server_errors_have_codes() {
    let result = |status: u16| {
        format!(
            r#"{{"type":"result","is_error":true,"api_error_status":{status},"result":"API Error"}}"#
        )
    };
    let code = |status| match Translator::new().line(&result(status)).pop() {
        Some(Output::Event(EventKind::Error { code, .. })) => code,
        other => panic!("{other:?}"),
    };
    assert_eq!(code(529), error_code::OVERLOADED);
    assert_eq!(code(500), error_code::UPSTREAM_ERROR);
}

#[test]
fn sub_agent_lines_and_garbage_are_ignored() {
    let mut translator = Translator::new();
    assert!(translator.line("not json").is_empty());
    let nested = r#"{"type":"stream_event","parent_tool_use_id":"t","event":{"type":"content_block_delta","delta":{"type":"text_delta","text":"x"}}}"#;
    assert!(translator.line(nested).is_empty());
}

#[test]
fn long_tool_results_are_cut() {
    let text = "é".repeat(MAX_TOOL_RESULT_CHARS);
    let cut = truncate(text);
    assert!(cut.len() < MAX_TOOL_RESULT_CHARS + 20);
    assert!(cut.ends_with("[… cut]"));
}

#[test]
fn host_requests_are_refused() {
    let line = r#"{"type":"control_request","request_id":"r1","request":{"subtype":"can_use_tool","tool_name":"Bash"}}"#;
    let outputs = Translator::new().line(line);
    let [Output::Refuse { response }] = outputs.as_slice() else {
        panic!("expected a refusal");
    };
    let response: Value = serde_json::from_str(response).expect("json");
    assert_eq!(response["type"], "control_response");
    assert_eq!(response["response"]["request_id"], "r1");
    assert_eq!(response["response"]["subtype"], "error");
}
