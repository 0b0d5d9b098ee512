//! Text that may be absent. The domain says so with `Option<String>`; the wire (proto3
//! strings), the database columns and JSON written before keep the earlier form, an
//! empty string, and are converted where they are read and written.

use serde::{Deserialize, Deserializer, Serializer};

/// `text`, unless it is empty.
pub fn non_empty(text: impl Into<String>) -> Option<String> {
    Some(text.into()).filter(|t: &String| !t.is_empty())
}

/// [`non_empty`], borrowed.
pub fn non_empty_str(text: &str) -> Option<&str> {
    Some(text).filter(|t| !t.is_empty())
}

/// The stored or wire form of an optional text: empty when absent.
pub fn or_empty(text: &Option<String>) -> &str {
    text.as_deref().unwrap_or_default()
}

/// Serde for an `Option<String>` kept in JSON as before: `""` when absent, so rows
/// written by either form read back alike (with `#[serde(default, with = ...)]`).
pub mod as_empty {
    use super::*;

    pub fn serialize<S: Serializer>(text: &Option<String>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(super::or_empty(text))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
        Option::<String>::deserialize(d).map(|t| t.and_then(non_empty))
    }
}

#[cfg(test)]
mod tests {
    use serde::Serialize;

    use super::*;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Row {
        #[serde(default, with = "as_empty")]
        by: Option<String>,
    }

    #[test]
    fn absent_text_is_stored_empty_and_empty_text_reads_absent() {
        let none = Row { by: None };
        assert_eq!(serde_json::to_string(&none).unwrap(), r#"{"by":""}"#);
        for text in [r#"{"by":""}"#, r#"{"by":null}"#, "{}"] {
            assert_eq!(serde_json::from_str::<Row>(text).unwrap(), none, "{text}");
        }
        let some = Row {
            by: Some("k".into()),
        };
        let text = serde_json::to_string(&some).unwrap();
        assert_eq!(serde_json::from_str::<Row>(&text).unwrap(), some);
        assert_eq!((non_empty(""), non_empty("a")), (None, Some("a".into())));
    }
}
