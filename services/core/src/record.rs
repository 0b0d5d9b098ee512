//! Versioned records: what is kept or handed out as JSON (the store's run specs, events,
//! approvals and replayed results; the server's task tokens) is written with a format tag, `{"v":1,...}`,
//! so a later format can be told apart and read, and rows written before the tag
//! (untagged) read as version 1. An older server reading a tagged row ignores the
//! unknown `v` field.

use crate::{Error, Result};
use serde::{Serialize, de::DeserializeOwned};
use serde_json::Value;

/// The format version this server writes and the newest it reads.
const VERSION: u64 = 1;
const TAG: &str = "{\"v\":1,";

/// `value` as a tagged JSON object.
pub fn to_record(value: &impl Serialize) -> String {
    let text = serde_json::to_string(value).expect("domain values serialize");
    match text.strip_prefix('{') {
        Some("}") => "{\"v\":1}".to_owned(),
        Some(rest) => format!("{TAG}{rest}"),
        None => text,
    }
}

/// A record read back: tagged with a version this server knows, or untagged.
pub fn record<T: DeserializeOwned>(column: &str, text: &str) -> Result<T> {
    let invalid =
        |e: serde_json::Error| Error::internal(format!("column {column} holds invalid JSON: {e}"));
    // The form this server writes: the tag first.
    if let Some(rest) = text.strip_prefix(TAG) {
        return serde_json::from_str(&format!("{{{rest}")).map_err(invalid);
    }
    let mut value: Value = serde_json::from_str(text).map_err(invalid)?;
    if let Value::Object(fields) = &mut value
        && let Some(version) = fields.remove("v")
        && version.as_u64() != Some(VERSION)
    {
        return Err(Error::internal(format!(
            "column {column} holds a record of version {version}; this server reads version {VERSION}"
        )));
    }
    serde_json::from_value(value).map_err(invalid)
}

/// [`record`] of a column that may be empty (no value).
pub fn optional_record<T: DeserializeOwned>(column: &str, text: &str) -> Result<Option<T>> {
    if text.is_empty() {
        Ok(None)
    } else {
        record(column, text).map(Some)
    }
}

#[cfg(test)]
mod tests {
    use crate::run::{EventBody, RunStatus, StopReason};

    use super::*;

    fn body() -> EventBody {
        EventBody::StatusChanged {
            previous: None,
            status: RunStatus::Queued,
            stop_reason: StopReason::Unspecified,
            message: "m".into(),
        }
    }

    #[test]
    fn a_record_is_written_tagged_and_reads_back() {
        let text = to_record(&body());
        assert!(text.starts_with("{\"v\":1,\"kind\":"), "{text}");
        assert_eq!(record::<EventBody>("body", &text).unwrap(), body());
    }

    #[test]
    fn an_untagged_row_reads_as_version_one() {
        let text = serde_json::to_string(&body()).unwrap();
        assert_eq!(record::<EventBody>("body", &text).unwrap(), body());
    }

    #[test]
    fn a_tag_anywhere_reads_and_an_unknown_version_is_refused() {
        let moved = r#"{"kind":"status_changed","v":1,"previous":null,"status":"Queued","stop_reason":"Unspecified","message":"m"}"#;
        assert_eq!(record::<EventBody>("body", moved).unwrap(), body());
        let newer = moved.replace("\"v\":1", "\"v\":2");
        let err = record::<EventBody>("body", &newer).unwrap_err();
        assert!(err.to_string().contains("version 2"), "{err}");
    }

    #[test]
    fn an_empty_object_and_an_empty_column() {
        assert_eq!(to_record(&serde_json::json!({})), "{\"v\":1}");
        let none: Option<Value> = optional_record("approval", "").unwrap();
        assert_eq!(none, None);
    }
}
