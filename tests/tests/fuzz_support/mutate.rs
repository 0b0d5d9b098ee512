//! Hostile variants of a valid-looking request, generated from its descriptor: every
//! field at every depth (down to [`MAX_DEPTH`] messages, through element 0 of repeated
//! messages and every member of a oneof) gets the values its type invites: U+0000 and
//! other control characters, 10 000-character and invalid-UTF-8 text, extreme and
//! non-finite numbers, unknown enum values, negative and enormous durations, far
//! timestamps, documents nested past every limit, bad field masks, oversized lists and
//! maps; fields whose name says what they hold also get malformed resource names, garbage
//! page tokens, broken filters and patches. Nothing here knows a method by name: a field
//! added to a `.proto` file is fuzzed the day it exists.
//!
//! Everything is deterministic: the variants come in descriptor order and the only
//! "random" bytes come from a fixed-seed generator.

mod values;

use prost::Message as _;
use prost_reflect::{
    DynamicMessage, FieldDescriptor, Kind, MapKey, MessageDescriptor, ReflectMessage, Value,
};

use values::{documents, masks, times};

/// How deep into nested messages the variants reach.
const MAX_DEPTH: usize = 5;

/// In place of a string, replaced in the encoded bytes by invalid UTF-8 of its length.
const MARKER: &str = "\u{1}MARKER-UTF8-X\u{1}";
const INVALID: &[u8] = b"\x01MA\xff\xfeER-\xc0\x80F8-X\x01";

/// One hostile request.
pub struct Variant {
    /// The field path as the server names it (`run.input[0].content`).
    pub field: String,
    /// What was done to it, for reports.
    pub what: String,
    pub bytes: Vec<u8>,
    pub expect: Expect,
}

/// What the server must answer, beyond the rules every answer follows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expect {
    Anything,
    /// INVALID_ARGUMENT with `reason` and a field violation whose field starts with
    /// `field` (equals it when `exact`).
    Refused {
        reason: &'static str,
        field: String,
        exact: bool,
    },
}

/// Every variant of `baseline`; `page_token` is a valid token of another method.
pub fn variants(baseline: &DynamicMessage, page_token: &str) -> Vec<Variant> {
    let mut out = Vec::new();
    let mut generator = Generator {
        baseline,
        page_token,
        rng: 0x5eed_f022,
        out: &mut out,
    };
    generator.message(&baseline.descriptor(), &mut Vec::new(), "", 0);
    out
}

/// A map variant: what it is, the entries, what to expect.
type MapCase = (String, Vec<(String, Value)>, Expect);

/// One step from a message to a field of it: element 0 when the field is repeated.
#[derive(Clone)]
struct Step(FieldDescriptor);

struct Generator<'a> {
    baseline: &'a DynamicMessage,
    page_token: &'a str,
    rng: u64,
    out: &'a mut Vec<Variant>,
}

impl Generator<'_> {
    fn message(
        &mut self,
        desc: &MessageDescriptor,
        path: &mut Vec<Step>,
        shown: &str,
        depth: usize,
    ) {
        for field in desc.fields() {
            let name = if shown.is_empty() {
                field.name().to_owned()
            } else {
                format!("{shown}.{}", field.name())
            };
            path.push(Step(field.clone()));
            self.field(&field, path, &name, depth);
            path.pop();
        }
    }

    fn field(&mut self, field: &FieldDescriptor, path: &mut Vec<Step>, shown: &str, depth: usize) {
        if field.is_map() {
            return self.map(field, path, shown);
        }
        if field.is_list() {
            // The list itself: empty, and one over every batch limit.
            self.push(
                path,
                shown,
                "no elements",
                Some(Value::List(Vec::new())),
                Expect::Anything,
            );
            let element = self
                .current(path)
                .and_then(|v| v.as_list().and_then(|l| l.first().cloned()));
            let element = element.unwrap_or_else(|| Value::default_value(&field.kind()));
            self.push(
                path,
                shown,
                "1001 elements",
                Some(Value::List(vec![element; 1001])),
                Expect::Anything,
            );
        }
        let element_shown = if field.is_list() {
            format!("{shown}[0]")
        } else {
            shown.to_owned()
        };
        let wrap = |value: Value| match field.is_list() {
            true => Value::List(vec![value]),
            false => value,
        };
        match field.kind() {
            Kind::String => {
                for (what, text, expect) in self.strings(field.name(), &element_shown) {
                    self.push(path, shown, &what, Some(wrap(Value::String(text))), expect);
                }
            }
            Kind::Bytes => {}
            Kind::Bool => self.push(
                path,
                shown,
                "true",
                Some(wrap(Value::Bool(true))),
                Expect::Anything,
            ),
            Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => {
                for n in [0, -1, i32::MIN, i32::MAX] {
                    self.push(
                        path,
                        shown,
                        &n.to_string(),
                        Some(wrap(Value::I32(n))),
                        Expect::Anything,
                    );
                }
            }
            Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 => {
                for n in [0, -1, i64::MIN, i64::MAX, (1 << 53) + 1] {
                    self.push(
                        path,
                        shown,
                        &n.to_string(),
                        Some(wrap(Value::I64(n))),
                        Expect::Anything,
                    );
                }
            }
            Kind::Uint32 | Kind::Fixed32 => {
                self.push(
                    path,
                    shown,
                    "u32::MAX",
                    Some(wrap(Value::U32(u32::MAX))),
                    Expect::Anything,
                );
            }
            Kind::Uint64 | Kind::Fixed64 => {
                self.push(
                    path,
                    shown,
                    "u64::MAX",
                    Some(wrap(Value::U64(u64::MAX))),
                    Expect::Anything,
                );
            }
            Kind::Double | Kind::Float => {
                for x in [
                    f64::NAN,
                    f64::INFINITY,
                    f64::NEG_INFINITY,
                    -0.0,
                    f64::MAX,
                    -1e-300,
                ] {
                    let value = match field.kind() {
                        Kind::Float => Value::F32(x as f32),
                        _ => Value::F64(x),
                    };
                    self.push(
                        path,
                        shown,
                        &format!("{x:e}"),
                        Some(wrap(value)),
                        Expect::Anything,
                    );
                }
            }
            Kind::Enum(e) => {
                let numbers = e.values().map(|v| v.number()).chain([-1, 99, i32::MAX]);
                for n in numbers.collect::<Vec<_>>() {
                    self.push(
                        path,
                        shown,
                        &format!("enum {n}"),
                        Some(wrap(Value::EnumNumber(n))),
                        Expect::Anything,
                    );
                }
            }
            Kind::Message(m) => {
                if !field.is_list() {
                    self.push(path, shown, "absent", None, Expect::Anything);
                }
                match m.full_name() {
                    "google.protobuf.Duration" | "google.protobuf.Timestamp" => {
                        let duration = m.full_name().ends_with("Duration");
                        for (what, seconds, nanos) in times(duration) {
                            let mut value = DynamicMessage::new(m.clone());
                            value.set_field_by_name("seconds", Value::I64(seconds));
                            value.set_field_by_name("nanos", Value::I32(nanos));
                            self.push(
                                path,
                                shown,
                                what,
                                Some(wrap(Value::Message(value))),
                                Expect::Anything,
                            );
                        }
                    }
                    "google.protobuf.FieldMask" => {
                        for (what, paths, expect) in masks(&element_shown) {
                            let mut value = DynamicMessage::new(m.clone());
                            let paths = paths.into_iter().map(Value::String).collect();
                            value.set_field_by_name("paths", Value::List(paths));
                            self.push(
                                path,
                                shown,
                                &what,
                                Some(wrap(Value::Message(value))),
                                expect,
                            );
                        }
                    }
                    "google.protobuf.Struct" | "google.protobuf.Value" => {
                        // Spliced in as bytes: documents nested past the decoding limit
                        // cannot be held by a DynamicMessage.
                        let is_value = m.full_name().ends_with("Value");
                        for (what, doc, expect) in documents(&element_shown, is_value) {
                            let bytes = splice(self.baseline, path, &doc);
                            self.record(shown, &what, bytes, expect);
                        }
                    }
                    _ if depth < MAX_DEPTH => {
                        self.push(
                            path,
                            shown,
                            "empty",
                            Some(wrap(Value::Message(DynamicMessage::new(m.clone())))),
                            Expect::Anything,
                        );
                        self.message(&m, path, &element_shown, depth + 1);
                    }
                    _ => {}
                }
            }
        }
    }

    /// A map field: hostile keys and values, and one entry too many.
    fn map(&mut self, field: &FieldDescriptor, path: &[Step], shown: &str) {
        let Kind::Message(entry) = field.kind() else {
            return;
        };
        let value_field = entry.map_entry_value_field();
        let plain = match value_field.kind() {
            Kind::String => Value::String("v".into()),
            kind => Value::default_value(&kind),
        };
        let mut cases: Vec<MapCase> = Vec::new();
        for (what, key, expect) in self.strings("key", &format!("{shown}.")) {
            let expect = match expect {
                Expect::Refused { reason, field, .. } => Expect::Refused {
                    reason,
                    field,
                    exact: false,
                },
                other => other,
            };
            cases.push((format!("key {what}"), vec![(key, plain.clone())], expect));
        }
        if matches!(value_field.kind(), Kind::String) {
            for (what, text, expect) in self.strings("value", &format!("{shown}.k")) {
                cases.push((
                    format!("value {what}"),
                    vec![("k".into(), Value::String(text))],
                    expect,
                ));
            }
        }
        let many = (0..65).map(|i| (format!("k{i}"), plain.clone())).collect();
        cases.push(("65 entries".into(), many, Expect::Anything));
        for (what, entries, expect) in cases {
            let map = entries
                .into_iter()
                .map(|(k, v)| (MapKey::String(k), v))
                .collect();
            self.push(path, shown, &what, Some(Value::Map(map)), expect);
        }
    }

    /// Text for a string field called `name`, shown at `shown`.
    fn strings(&mut self, name: &str, shown: &str) -> Vec<(String, String, Expect)> {
        let nul = Expect::Refused {
            reason: "INVALID_ARGUMENT",
            field: shown.to_owned(),
            exact: true,
        };
        let malformed = Expect::Refused {
            reason: "MALFORMED_REQUEST",
            field: shown.to_owned(),
            exact: true,
        };
        let mixed: String = "aé😀\u{301}".chars().cycle().take(10_000).collect();
        let mut out = vec![
            ("empty".to_owned(), String::new(), Expect::Anything),
            ("U+0000".to_owned(), "nul\0inside".to_owned(), nul),
            (
                "control characters".to_owned(),
                "\u{1}\u{7}\u{8}\u{b}\u{1b}[31m\u{7f}\u{85}\u{2028}\r\n\t".to_owned(),
                Expect::Anything,
            ),
            ("10000 characters".to_owned(), mixed, Expect::Anything),
            ("invalid UTF-8".to_owned(), MARKER.to_owned(), malformed),
        ];
        let base = "workspaces/acme/projects/web";
        let specific: Vec<String> = match name {
            "name" | "parent" | "agent" | "instance" | "owner" | "context" | "session"
            | "agents" | "run" | "active_run" | "decided_by" | "author" => vec![
                "workspaces/acme/../other".into(),
                "workspaces/other/projects/web".into(),
                format!("{base}/instances/bot/extra"),
                format!("{base}/sessions/chat/runs/not-a-uuid"),
                format!("{base}/contexts/Memory"),
                "workspaces//acme".into(),
                format!("/{base}"),
            ],
            "page_token" => vec![
                "garbage".into(),
                "AAAAAAAAAAAAAAAA".into(),
                self.random_base64(48),
                self.page_token.to_owned(),
                format!("{}x", self.page_token),
            ],
            "filter" => vec![
                "status = ".into(),
                "= ACTIVE".into(),
                "status = ACTIVE AND".into(),
                "nope = 1".into(),
                "create_time > \"not a time\"".into(),
                "create_time < \"99999-01-01T00:00:00Z\"".into(),
                "status = \"ACTIVE\" OR status = \"BUSY\"".into(),
                "status = ACTIVE AND ".repeat(400),
            ],
            "op" => vec!["frobnicate".into(), "ADD".into(), "test".into()],
            "path" | "from" => vec![
                "no-slash".into(),
                "/a/~2".into(),
                "/-".into(),
                format!("/{}", "a/".repeat(5000)),
            ],
            "task_token" => vec![self.random_base64(90), "v1.garbage.token".into()],
            "etag" => vec!["\"stale\"".into(), "W/\"1\"".into()],
            "approval_id" => vec![
                "not-an-id".into(),
                "01890000-0000-7000-8000-000000000000".into(),
            ],
            _ => Vec::new(),
        };
        out.extend(specific.into_iter().map(|text| {
            let what: String = format!("{text:?}").chars().take(40).collect();
            (what, text, Expect::Anything)
        }));
        out
    }

    fn random_base64(&mut self, len: usize) -> String {
        const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        (0..len)
            .map(|_| {
                // xorshift64: deterministic, good enough for garbage.
                self.rng ^= self.rng << 13;
                self.rng ^= self.rng >> 7;
                self.rng ^= self.rng << 17;
                ALPHABET[(self.rng % 64) as usize] as char
            })
            .collect()
    }

    /// The baseline's current value at `path` (element 0 through repeated fields).
    fn current(&self, path: &[Step]) -> Option<Value> {
        let (last, parents) = path.split_last()?;
        let mut message = self.baseline.clone();
        for Step(field) in parents {
            let value = message.get_field(field).into_owned();
            message = match value {
                Value::Message(m) => m,
                Value::List(list) => list.into_iter().next()?.as_message()?.clone(),
                _ => return None,
            };
        }
        Some(message.get_field(&last.0).into_owned())
    }

    /// A copy of the baseline with `value` at `path` (cleared for `None`), encoded.
    fn push(
        &mut self,
        path: &[Step],
        shown: &str,
        what: &str,
        value: Option<Value>,
        expect: Expect,
    ) {
        let mut request = self.baseline.clone();
        let (last, parents) = path.split_last().expect("a field");
        let mut message = &mut request;
        for Step(field) in parents {
            let slot = message.get_field_mut(field);
            if let Value::List(list) = slot {
                if list.is_empty() {
                    let Kind::Message(m) = field.kind() else {
                        unreachable!("paths go through messages")
                    };
                    list.push(Value::Message(DynamicMessage::new(m)));
                }
                message = list[0].as_message_mut().expect("a message element");
            } else {
                message = slot.as_message_mut().expect("a message field");
            }
        }
        match value {
            Some(value) => message.set_field(&last.0, value),
            None => message.clear_field(&last.0),
        }
        let mut bytes = request.encode_to_vec();
        if what == "invalid UTF-8" || what == "key invalid UTF-8" || what == "value invalid UTF-8" {
            let at = bytes
                .windows(MARKER.len())
                .position(|w| w == MARKER.as_bytes())
                .expect("the marker is in the encoding");
            bytes[at..at + MARKER.len()].copy_from_slice(INVALID);
        }
        self.record(shown, what, bytes, expect);
    }

    fn record(&mut self, shown: &str, what: &str, bytes: Vec<u8>, expect: Expect) {
        self.out.push(Variant {
            field: shown.to_owned(),
            what: what.to_owned(),
            bytes,
            expect,
        });
    }
}

/// `message` encoded with the field at `path` holding `raw` (an encoded message) in
/// place of its value. The field goes last, which protobuf reads as the value that counts
/// (a list is left with that one element).
fn splice(message: &DynamicMessage, path: &[Step], raw: &[u8]) -> Vec<u8> {
    let (Step(field), rest) = path.split_first().expect("a field");
    let mut outer = message.clone();
    let inner = if rest.is_empty() {
        outer.clear_field(field);
        raw.to_vec()
    } else {
        // A list keeps only the element spliced in, so that it stays element 0.
        let child = match outer.get_field_mut(field) {
            Value::List(list) if !list.is_empty() => list.swap_remove(0),
            Value::List(_) => Value::default_value(&field.kind()),
            other => std::mem::replace(other, Value::Bool(false)),
        };
        outer.clear_field(field);
        let child = child
            .as_message()
            .cloned()
            .expect("paths go through messages");
        splice(&child, rest, raw)
    };
    let mut bytes = outer.encode_to_vec();
    prost::encoding::encode_key(
        field.number(),
        prost::encoding::WireType::LengthDelimited,
        &mut bytes,
    );
    prost::encoding::encode_varint(inner.len() as u64, &mut bytes);
    bytes.extend_from_slice(&inner);
    bytes
}
