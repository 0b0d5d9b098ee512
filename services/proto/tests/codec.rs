//! The request codec's refusals, on encoded messages: U+0000 anywhere in a request's text
//! is INVALID_ARGUMENT naming the field path; bytes that do not decode are
//! MALFORMED_REQUEST saying what is wrong; responses and clean requests decode as prost
//! decodes them.

use std::collections::BTreeMap;

use agentry_proto::{codec::decode, v1 as pb};
use prost::Message;
use prost_types::{ListValue, Struct, Value, value::Kind};
use tonic::{Code, Status};
use tonic_types::StatusExt;

fn refused<U: Message + prost::Name + Default + std::fmt::Debug>(bytes: &[u8]) -> Status {
    decode::<U>(bytes).expect_err("the request is refused")
}

fn reason(status: &Status) -> String {
    status
        .get_details_error_info()
        .expect("an ErrorInfo")
        .reason
}

fn fields(status: &Status) -> Vec<String> {
    status
        .get_details_bad_request()
        .map(|b| b.field_violations.into_iter().map(|v| v.field).collect())
        .unwrap_or_default()
}

fn text(s: &str) -> Value {
    Value {
        kind: Some(Kind::StringValue(s.into())),
    }
}

fn object(entries: Vec<(&str, Value)>) -> Value {
    Value {
        kind: Some(Kind::StructValue(Struct {
            fields: entries.into_iter().map(|(k, v)| (k.into(), v)).collect(),
        })),
    }
}

fn list(values: Vec<Value>) -> Value {
    Value {
        kind: Some(Kind::ListValue(ListValue { values })),
    }
}

fn run_with_input(contents: &[&str]) -> pb::CreateRunRequest {
    pb::CreateRunRequest {
        parent: "workspaces/a/projects/p/sessions/s".into(),
        run: Some(pb::Run {
            input: contents
                .iter()
                .map(|c| pb::Message {
                    role: pb::MessageRole::User as i32,
                    content: (*c).into(),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

#[test]
fn nul_in_a_nested_repeated_string_names_its_path() {
    let bytes = run_with_input(&["fine", "also fine", "bad\0text"]).encode_to_vec();
    let status = refused::<pb::CreateRunRequest>(&bytes);
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(reason(&status), "INVALID_ARGUMENT");
    assert_eq!(fields(&status), ["run.input[2].content"]);
    assert!(
        status
            .message()
            .starts_with("run.input[2].content must not contain U+0000")
    );
}

#[test]
fn nul_inside_a_struct_document_is_named_by_json_pointer() {
    let doc = object(vec![
        ("title", text("ok")),
        (
            "notes",
            list(vec![text("a"), object(vec![("x/y", text("b\0"))])]),
        ),
    ]);
    let request = pb::CreateContextRequest {
        parent: "workspaces/a/projects/p".into(),
        context_id: "c".into(),
        data: Some(doc),
        ..Default::default()
    };
    let status = refused::<pb::CreateContextRequest>(&request.encode_to_vec());
    assert_eq!(fields(&status), ["data/notes/1/x~1y"]);
}

#[test]
fn nul_in_a_map_key_or_a_struct_key_is_refused() {
    let project = pb::UpdateProjectRequest {
        project: Some(pb::Project {
            name: "workspaces/a/projects/p".into(),
            labels: BTreeMap::from([("ok".into(), "v".into()), ("k\0".into(), "v".into())]),
            ..Default::default()
        }),
        ..Default::default()
    };
    let status = refused::<pb::UpdateProjectRequest>(&project.encode_to_vec());
    assert_eq!(fields(&status), ["project.labels.k\\u{0}"]);

    let write = pb::WriteContextRequest {
        name: "workspaces/a/projects/p/contexts/c".into(),
        change: Some(pb::write_context_request::Change::MergePatch(object(vec![
            ("\0", text("v")),
        ]))),
        ..Default::default()
    };
    let status = refused::<pb::WriteContextRequest>(&write.encode_to_vec());
    assert_eq!(fields(&status), ["merge_patch/\\u{0}"]);
}

#[test]
fn other_control_characters_and_zero_bytes_outside_text_pass() {
    let mut request = run_with_input(&["tab\there\u{1}\u{7f}\u{1b}[0m", ""]);
    let run = request.run.as_mut().expect("a run");
    run.retry_policy = Some(pb::RetryPolicy {
        backoff_coefficient: 2.0, // a double full of zero bytes
        max_attempts: 0,
        ..Default::default()
    });
    run.labels.insert("k".into(), String::new());
    let bytes = request.encode_to_vec();
    assert!(bytes.contains(&0), "the encoding holds zero bytes");
    assert_eq!(
        decode::<pb::CreateRunRequest>(&bytes).expect("decodes"),
        request
    );
}

#[test]
fn responses_with_nul_still_decode() {
    let message = pb::Message {
        content: "stored\0before".into(),
        ..Default::default()
    };
    let bytes = message.encode_to_vec();
    assert_eq!(decode::<pb::Message>(&bytes).expect("decodes"), message);
}

#[test]
fn invalid_utf8_is_malformed_and_names_the_field() {
    let mut bytes = run_with_input(&["ok", "abc"]).encode_to_vec();
    let at = bytes
        .windows(3)
        .position(|w| w == b"abc")
        .expect("the text is in the encoding");
    bytes[at + 1] = 0xff;
    let status = refused::<pb::CreateRunRequest>(&bytes);
    assert_eq!(reason(&status), "MALFORMED_REQUEST");
    assert_eq!(fields(&status), ["run.input[1].content"]);
    assert!(
        status.message().contains("is not valid UTF-8"),
        "{status:?}"
    );
}

#[test]
fn truncated_input_is_malformed_and_says_so() {
    let bytes = run_with_input(&["hello there"]).encode_to_vec();
    let status = refused::<pb::CreateRunRequest>(&bytes[..bytes.len() - 3]);
    assert_eq!(reason(&status), "MALFORMED_REQUEST");
    assert!(status.message().contains("truncated"), "{status:?}");
    assert!(!status.message().contains("nest"), "{status:?}");
}

#[test]
fn deep_nesting_is_malformed_and_says_so_briefly() {
    let mut doc = text("leaf");
    for _ in 0..40 {
        doc = object(vec![("k", doc)]);
    }
    let request = pb::CreateContextRequest {
        data: Some(doc),
        ..Default::default()
    };
    let status = refused::<pb::CreateContextRequest>(&request.encode_to_vec());
    assert_eq!(reason(&status), "MALFORMED_REQUEST");
    assert!(status.message().contains("at most 32 levels"), "{status:?}");
    assert!(status.message().len() < 400, "{}", status.message());
    let field = &fields(&status)[0];
    assert!(field.starts_with("data/k/k/"), "{field}");
}

#[test]
fn a_wrong_wire_type_is_malformed() {
    // GetRunRequest.name (field 1, a string) sent as a varint.
    let status = refused::<pb::GetRunRequest>(&[0x08, 0x01]);
    assert_eq!(reason(&status), "MALFORMED_REQUEST");
    assert_eq!(fields(&status), ["name"]);
}

#[test]
fn unknown_fields_are_skipped_as_prost_skips_them() {
    // Field 99 (varint 0) and field 98 (a length-delimited blob holding a zero byte).
    let mut bytes = pb::GetRunRequest {
        name: "workspaces/a/projects/p/sessions/s/runs/r".into(),
    }
    .encode_to_vec();
    bytes.extend_from_slice(&[0x98, 0x06, 0x00, 0x92, 0x06, 0x02, 0x00, 0x00]);
    assert!(decode::<pb::GetRunRequest>(&bytes).is_ok());
}

#[test]
fn every_request_type_is_known_to_the_schema() {
    let schema = agentry_proto::scan::schema();
    for name in [
        "CreateRunRequest",
        "ReadContextRequest",
        "CreateWorkspaceRequest",
    ] {
        let found = schema.message("agentry.v1", name).expect(name);
        assert!(found.is_request, "{name} is some method's request");
    }
    let response = schema.message("agentry.v1", "Run").expect("Run");
    assert!(!response.is_request);
}
