//! JSON round trips of every frame: the wire contract with the router.

use super::*;
use serde_json::json;

fn round_trip_router(frame: RouterFrame, expected: Value) {
    let text = serde_json::to_string(&frame).expect("serialize");
    assert_eq!(
        serde_json::from_str::<Value>(&text).expect("json"),
        expected
    );
    assert_eq!(
        serde_json::from_value::<RouterFrame>(expected).expect("parse"),
        frame
    );
}

fn round_trip_sandbox(frame: SandboxFrame, expected: Value) {
    let text = serde_json::to_string(&frame).expect("serialize");
    assert_eq!(
        serde_json::from_str::<Value>(&text).expect("json"),
        expected
    );
    assert_eq!(
        serde_json::from_value::<SandboxFrame>(expected).expect("parse"),
        frame
    );
}

#[test]
fn router_frames_round_trip() {
    round_trip_router(
        RouterFrame::Message {
            content: "hi".into(),
            conversation_id: "c".into(),
            voice: Some(true),
            voice_max_chars: Some(500),
            attachments: Some(vec!["f1".into()]),
            message_id: None,
            max_turns: None,
            prompt_id: None,
            replaces: None,
        },
        json!({"type":"message","content":"hi","conversation_id":"c","voice":true,"voice_max_chars":500,"attachments":["f1"]}),
    );
    round_trip_router(
        RouterFrame::Message {
            content: "again".into(),
            conversation_id: "c".into(),
            voice: None,
            voice_max_chars: None,
            attachments: None,
            message_id: Some("m".into()),
            max_turns: None,
            prompt_id: Some("p2".into()),
            replaces: Some("p1".into()),
        },
        json!({"type":"message","content":"again","conversation_id":"c","message_id":"m","prompt_id":"p2","replaces":"p1"}),
    );
    round_trip_router(
        RouterFrame::Interrupt {
            conversation_id: None,
        },
        json!({"type":"interrupt"}),
    );
    round_trip_router(
        RouterFrame::Resume {
            conversation_id: "c".into(),
            after_seq: 7,
            request_id: None,
        },
        json!({"type":"resume","conversation_id":"c","after_seq":7}),
    );
    round_trip_router(
        RouterFrame::Reply {
            call_id: "k".into(),
            result: None,
            error: Some(ErrorBody {
                code: "not_found".into(),
                message: "no".into(),
            }),
        },
        json!({"type":"reply","call_id":"k","error":{"code":"not_found","message":"no"}}),
    );
}

#[test]
fn sandbox_events_round_trip() {
    let c = || "c".to_string();
    round_trip_sandbox(
        SandboxFrame::Turn {
            seq: 1,
            conversation_id: c(),
            message_id: None,
            prompt_id: None,
        },
        json!({"type":"turn","seq":1,"conversation_id":"c"}),
    );
    round_trip_sandbox(
        SandboxFrame::Turn {
            seq: 1,
            conversation_id: c(),
            message_id: Some("m".into()),
            prompt_id: Some("p".into()),
        },
        json!({"type":"turn","seq":1,"conversation_id":"c","message_id":"m","prompt_id":"p"}),
    );
    round_trip_sandbox(
        SandboxFrame::Text {
            seq: 2,
            conversation_id: c(),
            delta: "x".into(),
        },
        json!({"type":"text","seq":2,"conversation_id":"c","delta":"x"}),
    );
    round_trip_sandbox(
        SandboxFrame::ToolUse {
            seq: 3,
            conversation_id: c(),
            id: "t".into(),
            name: "Bash".into(),
            input: json!({"command":"ls"}),
        },
        json!({"type":"tool_use","seq":3,"conversation_id":"c","id":"t","name":"Bash","input":{"command":"ls"}}),
    );
    round_trip_sandbox(
        SandboxFrame::ToolResult {
            seq: 4,
            conversation_id: c(),
            id: "t".into(),
            is_error: false,
            content: "ok".into(),
        },
        json!({"type":"tool_result","seq":4,"conversation_id":"c","id":"t","is_error":false,"content":"ok"}),
    );
    round_trip_sandbox(
        SandboxFrame::Document {
            seq: 5,
            conversation_id: c(),
            id: "d".into(),
            filename: "a.md".into(),
        },
        json!({"type":"document","seq":5,"conversation_id":"c","id":"d","filename":"a.md"}),
    );
    round_trip_sandbox(
        SandboxFrame::Voice {
            seq: 6,
            conversation_id: c(),
            url: "/a".into(),
            transcript: "hi".into(),
            error: None,
        },
        json!({"type":"voice","seq":6,"conversation_id":"c","url":"/a","transcript":"hi"}),
    );
    round_trip_sandbox(
        SandboxFrame::Voice {
            seq: 6,
            conversation_id: c(),
            url: String::new(),
            transcript: "hi".into(),
            error: Some(ErrorBody {
                code: "voice_failed".into(),
                message: "m".into(),
            }),
        },
        json!({"type":"voice","seq":6,"conversation_id":"c","url":"","transcript":"hi","error":{"code":"voice_failed","message":"m"}}),
    );
    round_trip_sandbox(
        SandboxFrame::Done {
            seq: 7,
            conversation_id: c(),
            usage: Usage {
                input_tokens: 1,
                output_tokens: 2,
            },
            stopped: false,
        },
        json!({"type":"done","seq":7,"conversation_id":"c","usage":{"input_tokens":1,"output_tokens":2}}),
    );
    round_trip_sandbox(
        SandboxFrame::Done {
            seq: 8,
            conversation_id: c(),
            usage: Usage::default(),
            stopped: true,
        },
        json!({"type":"done","seq":8,"conversation_id":"c","usage":{"input_tokens":0,"output_tokens":0},"stopped":true}),
    );
    round_trip_sandbox(
        SandboxFrame::Error {
            seq: None,
            conversation_id: None,
            code: "bad_frame".into(),
            message: "m".into(),
            message_id: None,
        },
        json!({"type":"error","code":"bad_frame","message":"m"}),
    );
}

#[test]
fn calls_round_trip() {
    round_trip_sandbox(
        SandboxFrame::Call {
            call_id: "k".into(),
            conversation_id: Some("c".into()),
            call: ToolCall::SaveDocument {
                filename: "a.md".into(),
                content: "# A".into(),
                kind: DocumentType::Markdown,
            },
        },
        json!({"type":"call","call_id":"k","conversation_id":"c","method":"save_document",
               "params":{"filename":"a.md","content":"# A","type":"markdown"}}),
    );
    round_trip_sandbox(
        SandboxFrame::Call {
            call_id: "k".into(),
            conversation_id: None,
            call: ToolCall::ListDocuments {},
        },
        json!({"type":"call","call_id":"k","method":"list_documents","params":{}}),
    );
    round_trip_sandbox(
        SandboxFrame::Call {
            call_id: "k".into(),
            conversation_id: None,
            call: ToolCall::Speak {
                text: "hello".into(),
            },
        },
        json!({"type":"call","call_id":"k","method":"speak","params":{"text":"hello"}}),
    );
}

#[test]
fn unknown_types_and_missing_fields_are_refused() {
    assert!(serde_json::from_str::<RouterFrame>(r#"{"type":"launch"}"#).is_err());
    assert!(serde_json::from_str::<RouterFrame>(r#"{"type":"message","content":"x"}"#).is_err());
}
