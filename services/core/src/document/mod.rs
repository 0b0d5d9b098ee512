//! JSON documents of contexts: canonical form and hash, RFC 6902 patches, diffs.
//!
//! A context's document is stored and versioned as JSON, so three things must be exact:
//!
//! - **Canonical form** ([`canonical_json`], RFC 8785 / JCS) gives every document one byte
//!   string, whatever the key order or number spelling a client sent, so its SHA-256
//!   ([`sha256_hex`]) can serve as an etag and as a content address that any other JCS
//!   implementation (a Python or TypeScript client) reproduces byte for byte.
//! - **Patches** ([`apply_patch`], RFC 6902) are applied atomically to a copy: a patch
//!   either applies completely or fails without touching the document. A failing `test`
//!   op is FAILED_PRECONDITION (the document is not in the state the client expected);
//!   every other problem is INVALID_ARGUMENT naming the op as `json_patch[i]`.
//! - **Diffs** ([`diff`]) turn one version into the next as a patch that a human can read
//!   in a version history: objects are diffed key by key and arrays by content (a longest
//!   common subsequence), so inserting one element into a long list is one `add`, not a
//!   replace of every element after it.

use serde::{Deserialize, Deserializer};
use serde_json::{Number, Value};

use crate::{
    Error, FieldViolation, Reason, Result,
    error::{QUOTE_BYTES, shorten},
};

mod canonical;
mod diff;
#[cfg(test)]
mod tests;

pub use canonical::{canonical_json, sha256_hex};
pub use diff::diff;

// ---------------------------------------------------------------------------------------
// JSON Patch (RFC 6902)
// ---------------------------------------------------------------------------------------

/// One RFC 6902 operation. Unknown members are ignored (RFC 6902 §4) and a duplicated
/// member is a deserialization error (Appendix A.13).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct PatchOp {
    pub op: PatchOpKind,
    pub path: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// `Some(Value::Null)` when the member is present and `null`: a plain `Option<Value>`
    /// would read `"value": null` as absent and reject `add` of a null.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "present_value"
    )]
    pub value: Option<Value>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PatchOpKind {
    Add,
    Remove,
    Replace,
    Move,
    Copy,
    Test,
}

fn present_value<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<Value>, D::Error> {
    Value::deserialize(deserializer).map(Some)
}

impl PatchOp {
    fn add(path: String, value: Value) -> Self {
        Self::with_value(PatchOpKind::Add, path, Some(value))
    }

    fn remove(path: String) -> Self {
        Self::with_value(PatchOpKind::Remove, path, None)
    }

    fn replace(path: String, value: Value) -> Self {
        Self::with_value(PatchOpKind::Replace, path, Some(value))
    }

    fn with_value(op: PatchOpKind, path: String, value: Option<Value>) -> Self {
        Self {
            op,
            path,
            from: None,
            value,
        }
    }
}

/// Why one op failed; mapped to an [`Error`] with the op's index by [`apply_patch`].
enum OpFailure {
    TestFailed,
    Invalid(String),
}

impl From<String> for OpFailure {
    fn from(description: String) -> Self {
        Self::Invalid(description)
    }
}

/// Applies `ops` in order to a copy of `doc` and returns the result; on any error `doc` is
/// untouched, so a patch never half-applies.
///
/// A failing `test` op, including one whose path does not exist, is FAILED_PRECONDITION
/// `PATCH_TEST_FAILED`: the request is well formed, the document is just not in the state
/// the client expected. `test` compares by JSON value, so `1` equals `1.0`. Anything else
/// (bad pointer, missing target, missing `value`/`from`, moving a value into its own
/// child) is INVALID_ARGUMENT `INVALID_PATCH` with the violation on `json_patch[i]`.
pub fn apply_patch(doc: &Value, ops: &[PatchOp]) -> Result<Value> {
    let mut patched = doc.clone();
    for (i, op) in ops.iter().enumerate() {
        match apply_op(&mut patched, op) {
            Ok(()) => {}
            Err(OpFailure::TestFailed) => {
                return Err(Error::precondition(
                    Reason::PatchTestFailed,
                    format!(
                        "json_patch[{i}]: test failed at {}",
                        shorten(&op.path, QUOTE_BYTES)
                    ),
                ));
            }
            Err(OpFailure::Invalid(description)) => {
                let field = format!("json_patch[{i}]");
                return Err(Error::invalid_many(
                    Reason::InvalidPatch,
                    format!("{field}: {description}"),
                    vec![FieldViolation::new(field, description)],
                ));
            }
        }
    }
    Ok(patched)
}

fn apply_op(doc: &mut Value, op: &PatchOp) -> Result<(), OpFailure> {
    let path = parse_pointer(&op.path)?;
    let value = || {
        op.value
            .as_ref()
            .ok_or_else(|| format!("\"{}\" needs a \"value\"", op.op.as_str()))
    };
    let from = || match &op.from {
        Some(from) => parse_pointer(from),
        None => Err(format!("\"{}\" needs a \"from\"", op.op.as_str())),
    };
    match op.op {
        PatchOpKind::Add => add_at(doc, &path, value()?.clone())?,
        PatchOpKind::Remove => {
            remove_at(doc, &path)?;
        }
        PatchOpKind::Replace => {
            let replacement = value()?.clone();
            *resolve_mut(doc, &path)? = replacement;
        }
        PatchOpKind::Move => {
            let from = from()?;
            if from.len() < path.len() && path.starts_with(&from) {
                return Err(format!(
                    "cannot move {} into its own child {}",
                    render_pointer(&from),
                    render_pointer(&path)
                )
                .into());
            }
            if from == path {
                resolve(doc, &from)?;
            } else {
                let moved = remove_at(doc, &from)?;
                add_at(doc, &path, moved)?;
            }
        }
        PatchOpKind::Copy => {
            let copied = resolve(doc, &from()?)?.clone();
            add_at(doc, &path, copied)?;
        }
        PatchOpKind::Test => {
            let expected = value()?;
            match resolve(doc, &path) {
                Ok(actual) if json_equal(actual, expected) => {}
                _ => return Err(OpFailure::TestFailed),
            }
        }
    }
    Ok(())
}

impl PatchOpKind {
    /// The RFC 6902 `op`, as JSON and the proto spell it.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Add => "add",
            Self::Remove => "remove",
            Self::Replace => "replace",
            Self::Move => "move",
            Self::Copy => "copy",
            Self::Test => "test",
        }
    }
}

/// Splits an RFC 6901 pointer into unescaped reference tokens; `""` is the whole document.
fn parse_pointer(pointer: &str) -> Result<Vec<String>, String> {
    if pointer.is_empty() {
        return Ok(Vec::new());
    }
    let Some(rest) = pointer.strip_prefix('/') else {
        return Err(format!(
            "\"{}\" is not a JSON pointer: it must start with \"/\"",
            shorten(pointer, QUOTE_BYTES)
        ));
    };
    rest.split('/')
        .map(|token| {
            let mut unescaped = String::with_capacity(token.len());
            let mut chars = token.chars();
            while let Some(ch) = chars.next() {
                if ch != '~' {
                    unescaped.push(ch);
                    continue;
                }
                match chars.next() {
                    Some('0') => unescaped.push('~'),
                    Some('1') => unescaped.push('/'),
                    _ => {
                        return Err(format!(
                            "\"{}\" is not a JSON pointer: \"~\" must be followed by 0 or 1",
                            shorten(pointer, QUOTE_BYTES)
                        ));
                    }
                }
            }
            Ok(unescaped)
        })
        .collect()
}

/// Escapes one reference token (RFC 6901 §3: `~` first, so `~1` is not read back as `/`).
fn escape_token(token: &str) -> String {
    token.replace('~', "~0").replace('/', "~1")
}

fn render_pointer(tokens: &[String]) -> String {
    let rendered: String = tokens
        .iter()
        .map(|t| format!("/{}", escape_token(t)))
        .collect();
    format!("\"{}\"", shorten(&rendered, QUOTE_BYTES))
}

/// Reads an array index token: digits without leading zeros, below `len` (or equal to it,
/// as does `-`, when `appending`).
fn array_index(token: &str, len: usize, appending: bool) -> Result<usize, String> {
    if token == "-" {
        return if appending {
            Ok(len)
        } else {
            Err("\"-\" names the position after the last element and only works with add".into())
        };
    }
    let well_formed = !token.is_empty()
        && token.bytes().all(|b| b.is_ascii_digit())
        && (token == "0" || !token.starts_with('0'));
    if !well_formed {
        return Err(format!(
            "\"{}\" is not an array index",
            shorten(token, QUOTE_BYTES)
        ));
    }
    match token.parse::<usize>() {
        Ok(index) if index < len || (appending && index == len) => Ok(index),
        _ => Err(format!(
            "array index {} is out of range for an array of length {len}",
            shorten(token, QUOTE_BYTES)
        )),
    }
}

fn missing(tokens: &[String]) -> String {
    format!("path {} does not exist", render_pointer(tokens))
}

fn resolve<'a>(doc: &'a Value, tokens: &[String]) -> Result<&'a Value, String> {
    let mut current = doc;
    for (depth, token) in tokens.iter().enumerate() {
        current = match current {
            Value::Object(map) => map.get(token),
            Value::Array(items) => Some(&items[array_index(token, items.len(), false)?]),
            _ => None,
        }
        .ok_or_else(|| missing(&tokens[..=depth]))?;
    }
    Ok(current)
}

fn resolve_mut<'a>(doc: &'a mut Value, tokens: &[String]) -> Result<&'a mut Value, String> {
    let mut current = doc;
    for (depth, token) in tokens.iter().enumerate() {
        current = match current {
            Value::Object(map) => map.get_mut(token),
            Value::Array(items) => {
                let index = array_index(token, items.len(), false)?;
                Some(&mut items[index])
            }
            _ => None,
        }
        .ok_or_else(|| missing(&tokens[..=depth]))?;
    }
    Ok(current)
}

fn add_at(doc: &mut Value, tokens: &[String], value: Value) -> Result<(), String> {
    let Some((last, parent)) = tokens.split_last() else {
        *doc = value;
        return Ok(());
    };
    match resolve_mut(doc, parent)? {
        Value::Object(map) => {
            map.insert(last.clone(), value);
        }
        Value::Array(items) => {
            let index = array_index(last, items.len(), true)?;
            items.insert(index, value);
        }
        _ => {
            return Err(format!(
                "cannot add {}: {} is neither an object nor an array",
                render_pointer(tokens),
                render_pointer(parent)
            ));
        }
    }
    Ok(())
}

fn remove_at(doc: &mut Value, tokens: &[String]) -> Result<Value, String> {
    let Some((last, parent)) = tokens.split_last() else {
        return Err("cannot remove the whole document".into());
    };
    match resolve_mut(doc, parent)? {
        Value::Object(map) => map.remove(last).ok_or_else(|| missing(tokens)),
        Value::Array(items) => {
            let index = array_index(last, items.len(), false)?;
            Ok(items.remove(index))
        }
        _ => Err(missing(tokens)),
    }
}

/// JSON data equality for `test`: numbers compare by value (`1 == 1.0`), unlike
/// `serde_json::Value`'s `==`, which tells integers and floats apart.
fn json_equal(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => numbers_equal(x, y),
        (Value::Array(xs), Value::Array(ys)) => {
            xs.len() == ys.len() && xs.iter().zip(ys).all(|(x, y)| json_equal(x, y))
        }
        (Value::Object(xs), Value::Object(ys)) => {
            xs.len() == ys.len()
                && xs
                    .iter()
                    .all(|(key, x)| ys.get(key).is_some_and(|y| json_equal(x, y)))
        }
        _ => a == b,
    }
}

/// Integers compare exactly; as soon as a float is involved the comparison is in f64, so
/// integers beyond 2^53 may equal a nearby float.
fn numbers_equal(a: &Number, b: &Number) -> bool {
    if let (Some(x), Some(y)) = (a.as_i64(), b.as_i64()) {
        return x == y;
    }
    if let (Some(x), Some(y)) = (a.as_u64(), b.as_u64()) {
        return x == y;
    }
    a.as_f64() == b.as_f64()
}
