//! Printers: `json` (the proto3 JSON mapping of the response, through the descriptors
//! the server was built from, so it matches grpcurl's), `yaml` (the same document), and
//! `table` (chosen columns per resource type, enum prefixes and sub-second digits cut).
//! Without `--output`, a terminal gets a table and anything else JSON.

use std::{
    io::{IsTerminal as _, Write as _},
    sync::OnceLock,
};

use prost::{Message, Name};
use prost_reflect::{DescriptorPool, DynamicMessage, MessageDescriptor, SerializeOptions};
use serde_json::Value;

use super::{Failure, Format, status::fail};

pub fn pool() -> &'static DescriptorPool {
    static POOL: OnceLock<DescriptorPool> = OnceLock::new();
    POOL.get_or_init(|| {
        DescriptorPool::decode(agentry_proto::FILE_DESCRIPTOR_SET).expect("descriptors decode")
    })
}

pub fn descriptor<M: Name>() -> MessageDescriptor {
    pool()
        .get_message_by_name(&M::full_name())
        .expect("every agentry message is in the descriptor set")
}

/// The proto3 JSON of `msg`.
pub fn to_json<M: Message + Name>(msg: &M) -> Value {
    let dynamic = DynamicMessage::decode(descriptor::<M>(), msg.encode_to_vec().as_slice())
        .expect("a message decodes as itself");
    let mut value = dynamic
        .serialize_with_options(serde_json::value::Serializer, &SerializeOptions::new())
        .expect("proto3 JSON");
    integral_numbers(&mut value);
    value
}

/// `1.0` → `1`: `google.protobuf.Value` numbers are doubles, and the proto3 JSON mapping
/// (protojson, grpcurl) prints an integral double without a fraction; so does a document
/// written as `{"a": 1}` read back.
fn integral_numbers(value: &mut Value) {
    const EXACT: f64 = 9_007_199_254_740_992.0; // 2^53
    match value {
        Value::Number(n) => {
            if let Some(f) = n
                .as_f64()
                .filter(|f| n.is_f64() && f.fract() == 0.0 && f.abs() <= EXACT)
            {
                *value = Value::from(f as i64);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(integral_numbers),
        Value::Object(map) => map.values_mut().for_each(integral_numbers),
        _ => {}
    }
}

/// `M` from its proto3 JSON (field names in either spelling).
pub fn from_json<M: Message + Name + Default>(value: Value, what: &str) -> Result<M, Failure> {
    let dynamic =
        DynamicMessage::deserialize(descriptor::<M>(), value).map_err(|e| fail!("{what}: {e}"))?;
    M::decode(dynamic.encode_to_vec().as_slice()).map_err(|e| fail!("{what}: {e}"))
}

#[derive(Debug, Clone, Copy)]
pub struct Printer {
    pub format: Format,
    /// ANSI colours: a terminal, and NO_COLOR unset.
    pub color: bool,
}

impl Printer {
    pub fn new(format: Option<Format>) -> Self {
        let tty = std::io::stdout().is_terminal();
        Self {
            format: format.unwrap_or(if tty { Format::Table } else { Format::Json }),
            color: tty && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty()),
        }
    }

    /// Prints a response: a table of its items (list responses) or of itself.
    pub fn print<M: Message + Name>(&self, msg: &M) -> Result<(), Failure> {
        let value = to_json(msg);
        match self.format {
            Format::Json => self.json(&value),
            Format::Yaml => self.yaml(&value),
            Format::Table => {
                let descriptor = descriptor::<M>();
                if let Some((field, item)) = list_field(&descriptor)
                    && let Some(columns) = columns(item.full_name())
                {
                    let empty = Vec::new();
                    let items = value
                        .get(&field)
                        .and_then(Value::as_array)
                        .unwrap_or(&empty);
                    table(columns, items);
                } else if let Some(columns) = columns(descriptor.full_name()) {
                    table(columns, std::slice::from_ref(&value));
                } else {
                    self.yaml(&value)?;
                }
                Ok(())
            }
        }
    }

    pub fn json(&self, value: &Value) -> Result<(), Failure> {
        let text = serde_json::to_string_pretty(value).map_err(|e| fail!("{e}"))?;
        write_out(&format!("{text}\n"))
    }

    pub fn yaml(&self, value: &Value) -> Result<(), Failure> {
        let text = serde_yaml::to_string(value).map_err(|e| fail!("{e}"))?;
        write_out(&text)
    }

    /// One item of a stream: a JSON line, a YAML document, or `line` for a table.
    pub fn stream_item(&self, value: &Value, line: impl FnOnce() -> String) -> Result<(), Failure> {
        match self.format {
            Format::Json => write_out(&format!("{value}\n")),
            Format::Yaml => write_out(&format!(
                "---\n{}",
                serde_yaml::to_string(value).map_err(|e| fail!("{e}"))?
            )),
            Format::Table => write_out(&format!("{}\n", line())),
        }
    }

    /// The answer of a call that returns nothing (google.protobuf.Empty): `{}` as JSON
    /// or YAML, `note` in a table.
    pub fn empty(&self, note: &str) -> Result<(), Failure> {
        match self.format {
            Format::Json => write_out("{}\n"),
            Format::Yaml => write_out("{}\n"),
            Format::Table => write_out(&format!("{note}\n")),
        }
    }

    /// `text` in an ANSI colour (e.g. "32" green) when colours are on.
    pub fn paint(&self, code: &str, text: &str) -> String {
        if self.color {
            format!("\x1b[{code}m{text}\x1b[0m")
        } else {
            text.to_owned()
        }
    }
}

/// Writes and flushes stdout; a closed pipe (`| head`) ends the command quietly.
pub fn write_out(text: &str) -> Result<(), Failure> {
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Err(Failure::Exit(0)),
        Err(e) => Err(fail!("stdout: {e}")),
    }
}

/// The repeated message field of a list response and its item type.
fn list_field(descriptor: &MessageDescriptor) -> Option<(String, MessageDescriptor)> {
    descriptor.fields().find_map(|f| match f.kind() {
        prost_reflect::Kind::Message(item) if f.is_list() => Some((f.json_name().to_owned(), item)),
        _ => None,
    })
}

type Columns = &'static [(&'static str, &'static str)];

/// Table columns per resource: header and JSON path (`a.b`; `x|y` takes the first
/// non-empty).
const COLUMNS: &[(&str, Columns)] = &[
    (
        "agentry.v1.Workspace",
        &[
            ("NAME", "name"),
            ("DISPLAY NAME", "displayName"),
            ("CREATED", "createTime"),
        ],
    ),
    (
        "agentry.v1.Project",
        &[
            ("NAME", "name"),
            ("DISPLAY NAME", "displayName"),
            ("DESCRIPTION", "description"),
            ("CREATED", "createTime"),
        ],
    ),
    (
        "agentry.v1.ApiKey",
        &[
            ("NAME", "name"),
            ("DISPLAY NAME", "displayName"),
            ("ROLE", "role"),
            ("CREATED", "createTime"),
            ("EXPIRES", "expireTime"),
        ],
    ),
    (
        "agentry.v1.Agent",
        &[
            ("NAME", "name"),
            ("REVISION", "revision"),
            ("TYPE", "agentType"),
            ("ENABLED", "enabled"),
            ("REVISED", "revisionCreateTime"),
        ],
    ),
    (
        "agentry.v1.Instance",
        &[
            ("NAME", "name"),
            ("AGENT", "agent"),
            ("REVISION", "agentRevision"),
            ("STATUS", "status"),
            ("LAST HEARTBEAT", "lastHeartbeatTime"),
        ],
    ),
    (
        "agentry.v1.Context",
        &[
            ("NAME", "name"),
            ("HEAD", "headVersion"),
            ("OWNER", "owner"),
            ("UPDATED", "updateTime"),
        ],
    ),
    (
        "agentry.v1.ContextVersion",
        &[
            ("VERSION", "version"),
            ("OP", "op"),
            ("AUTHOR", "author"),
            ("SIZE", "sizeBytes"),
            ("CREATED", "createTime"),
            ("DESCRIPTION", "description"),
        ],
    ),
    (
        "agentry.v1.WriteContextResponse",
        &[
            ("VERSION", "version.version"),
            ("OP", "version.op"),
            ("NOOP", "noop"),
            ("SIZE", "version.sizeBytes"),
            ("SHA256", "version.sha256"),
        ],
    ),
    (
        "agentry.v1.Session",
        &[
            ("NAME", "name"),
            ("INSTANCE", "instance"),
            ("ACTIVE RUN", "activeRun"),
            ("MESSAGES", "messageCount"),
            ("CREATED", "createTime"),
        ],
    ),
    (
        "agentry.v1.Message",
        &[
            ("SEQ", "sequence"),
            ("ROLE", "role"),
            ("CONTENT", "content|toolCall.tool"),
            ("CREATED", "createTime"),
        ],
    ),
    (
        "agentry.v1.Run",
        &[
            ("NAME", "name"),
            ("STATUS", "status"),
            ("STOP REASON", "stopReason"),
            ("AGENT", "agent"),
            ("CREATED", "createTime"),
        ],
    ),
    (
        "agentry.v1.AuditRecord",
        &[
            ("TIME", "createTime"),
            ("PRINCIPAL", "principal"),
            ("METHOD", "method"),
            ("RESOURCE", "resource"),
        ],
    ),
];

fn columns(full_name: &str) -> Option<Columns> {
    COLUMNS
        .iter()
        .find(|(name, _)| *name == full_name)
        .map(|(_, columns)| *columns)
}

fn table(columns: Columns, items: &[Value]) {
    let headers: Vec<&str> = columns.iter().map(|(h, _)| *h).collect();
    let rows: Vec<Vec<String>> = items
        .iter()
        .map(|item| columns.iter().map(|(_, path)| cell(item, path)).collect())
        .collect();
    print_table(&headers, &rows);
}

pub fn print_table(headers: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, c) in widths.iter_mut().zip(row) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut out = String::new();
        for (i, (cell, width)) in cells.iter().zip(&widths).enumerate() {
            if i + 1 == cells.len() {
                out.push_str(cell);
            } else {
                out.push_str(&format!("{cell:<width$}   "));
            }
        }
        out.trim_end().to_owned() + "\n"
    };
    let mut text = line(headers.to_vec());
    for row in rows {
        text.push_str(&line(row.iter().map(String::as_str).collect()));
    }
    let _ = write_out(&text);
}

fn lookup<'a>(value: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.').try_fold(value, |v, key| v.get(key))
}

/// A table cell: enum prefixes and sub-second digits cut, long text shortened.
pub fn cell(item: &Value, path: &str) -> String {
    let found = path.split('|').find_map(|p| {
        lookup(item, p)
            .filter(|v| !v.is_null() && *v != "")
            .cloned()
    });
    let text = match found {
        None => String::new(),
        Some(Value::String(s)) => short_enum(&short_time(&s)).to_owned(),
        Some(other) => other.to_string(),
    };
    shorten(&text.replace(['\n', '\r', '\t'], " "), 72)
}

/// `2026-01-02T03:04:05.123456Z` → `2026-01-02T03:04:05Z`.
pub fn short_time(text: &str) -> String {
    let b = text.as_bytes();
    if b.len() > 20 && b[4] == b'-' && b[10] == b'T' && b[19] == b'.' && text.ends_with('Z') {
        format!("{}Z", &text[..19])
    } else {
        text.to_owned()
    }
}

const ENUM_PREFIXES: [&str; 9] = [
    "RUN_STATUS_",
    "INSTANCE_STATUS_",
    "STOP_REASON_",
    "ROLE_",
    "CONTEXT_OP_",
    "MESSAGE_ROLE_",
    "AUTONOMY_LEVEL_",
    "TOOL_RISK_",
    "APPROVAL_DECISION_",
];

/// `RUN_STATUS_RUNNING` → `RUNNING`.
pub fn short_enum(text: &str) -> &str {
    ENUM_PREFIXES
        .iter()
        .find_map(|p| text.strip_prefix(p))
        .filter(|rest| {
            !rest.is_empty()
                && rest
                    .bytes()
                    .all(|b| b.is_ascii_uppercase() || b == b'_' || b.is_ascii_digit())
        })
        .unwrap_or(text)
}

fn shorten(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((i, _)) => format!("{}…", &text[..i]),
        None => text.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cells_cut_enum_prefixes_and_fractions() {
        let item = serde_json::json!({
            "status": "RUN_STATUS_RUNNING",
            "createTime": "2026-01-02T03:04:05.123456Z",
            "toolCall": {"tool": "search"},
            "n": "12"
        });
        assert_eq!(cell(&item, "status"), "RUNNING");
        assert_eq!(cell(&item, "createTime"), "2026-01-02T03:04:05Z");
        assert_eq!(cell(&item, "content|toolCall.tool"), "search");
        assert_eq!(cell(&item, "n"), "12");
        assert_eq!(cell(&item, "missing"), "");
    }

    #[test]
    fn proto3_json_round_trips() {
        let run = agentry_proto::v1::Run {
            name: "workspaces/a/projects/b/sessions/c/runs/d".into(),
            status: agentry_proto::v1::RunStatus::Running as i32,
            last_sequence: 7,
            ..Default::default()
        };
        let json = to_json(&run);
        assert_eq!(json["status"], "RUN_STATUS_RUNNING");
        assert_eq!(json["lastSequence"], "7");
        assert_eq!(
            from_json::<agentry_proto::v1::Run>(json, "run").unwrap(),
            run
        );
    }
}
