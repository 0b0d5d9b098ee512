//! Decoding helpers for columns that hold JSON text and enum names.

use agentry_core::{Error, Result, model::Labels};
use serde::de::DeserializeOwned;

pub(crate) fn json<T: DeserializeOwned>(column: &str, text: &str) -> Result<T> {
    serde_json::from_str(text)
        .map_err(|e| Error::internal(format!("column {column} holds invalid JSON: {e}")))
}

pub(crate) fn labels(text: &str) -> Result<Labels> {
    json("labels", text)
}

pub(crate) fn to_json(value: &impl serde::Serialize) -> String {
    serde_json::to_string(value).expect("domain values serialize")
}

/// An `etag` from a request: empty means unconditional.
pub(crate) fn check_etag(current: i64, expected: &str) -> Result<()> {
    if expected.is_empty() || expected == current.to_string() {
        Ok(())
    } else {
        Err(Error::etag_mismatch(&current.to_string()))
    }
}
