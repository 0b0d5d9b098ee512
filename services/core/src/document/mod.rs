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

use std::collections::HashMap;
use std::fmt::Write as _;

use serde::{Deserialize, Deserializer};
use serde_json::{Map, Number, Value};
use sha2::{Digest, Sha256};

use crate::{
    Error, FieldViolation, Result,
    error::{QUOTE_BYTES, shorten},
};

#[cfg(test)]
mod tests;

// ---------------------------------------------------------------------------------------
// Canonical JSON (RFC 8785)
// ---------------------------------------------------------------------------------------

/// Serializes `value` per RFC 8785 (JSON Canonicalization Scheme): no whitespace, object
/// keys sorted by their UTF-16 code units, minimal string escaping and ECMAScript number
/// formatting. Two documents that are equal as JSON data get the same string, which is
/// what makes [`sha256_hex`] of it usable as an etag across languages.
///
/// Integers that serde_json holds as `u64`/`i64` are printed exactly, even beyond 2^53.
/// JCS assumes IEEE doubles, where such integers would be rounded; printing them as sent
/// keeps ids and counters intact, at the price of a hash that a double-only JCS
/// implementation would compute from a rounded value. Within ±2^53 both agree.
pub fn canonical_json(value: &Value) -> String {
    let mut out = String::new();
    write_canonical(&mut out, value);
    out
}

/// Lowercase hex of the SHA-256 of `canonical`'s UTF-8 bytes: the etag and content hash of
/// a document, given its [`canonical_json`].
pub fn sha256_hex(canonical: &str) -> String {
    let digest = Sha256::digest(canonical.as_bytes());
    let mut hex = String::with_capacity(digest.len() * 2);
    for byte in digest {
        write!(hex, "{byte:02x}").expect("writing to a String cannot fail");
    }
    hex
}

fn write_canonical(out: &mut String, value: &Value) {
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(flag) => out.push_str(if *flag { "true" } else { "false" }),
        Value::Number(number) => write_number(out, number),
        Value::String(text) => write_string(out, text),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(out, item);
            }
            out.push(']');
        }
        Value::Object(map) => {
            // Sorted here rather than trusting the map's order: JCS orders by UTF-16 code
            // units, which differs from byte order once non-BMP characters (surrogate
            // pairs, 0xD800..) meet BMP characters above them (0xE000..0xFFFF).
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_by(|(a, _), (b, _)| a.encode_utf16().cmp(b.encode_utf16()));
            out.push('{');
            for (i, (key, item)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_string(out, key);
                out.push(':');
                write_canonical(out, item);
            }
            out.push('}');
        }
    }
}

/// JCS escapes only what JSON requires; everything else, including non-ASCII and DEL,
/// stays literal UTF-8.
fn write_string(out: &mut String, text: &str) {
    out.push('"');
    for ch in text.chars() {
        match ch {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{8}' => out.push_str("\\b"),
            '\t' => out.push_str("\\t"),
            '\n' => out.push_str("\\n"),
            '\u{c}' => out.push_str("\\f"),
            '\r' => out.push_str("\\r"),
            c if c < ' ' => {
                write!(out, "\\u{:04x}", c as u32).expect("writing to a String cannot fail")
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// The shortest decimal digits that read back as `value` (positive, finite) and the decimal
/// exponent of the first one. Rust's `{:e}` already gives the shortest and closest digits,
/// but breaks an exact tie between two of them upwards, where ECMAScript (like David Gay's
/// dtoa) takes the even one: 0x43143ff3c1cb0959 is exactly 1424953923781206.25, which
/// Rust prints as …206.3 and JCS requires as …206.2.
fn shortest_digits(value: f64) -> (String, i32) {
    let scientific = format!("{value:e}");
    let (digits, exponent) = split_scientific(&scientific);
    match even_tie_neighbour(value, &digits, exponent) {
        Some(even) => (even, exponent),
        None => (digits, exponent),
    }
}

/// Splits Rust's `{:e}` output into its significant digits and decimal exponent.
fn split_scientific(scientific: &str) -> (String, i32) {
    let (mantissa, exponent) = scientific
        .split_once('e')
        .expect("{:e} always prints an exponent");
    let digits = mantissa.chars().filter(|c| *c != '.').collect();
    let exponent = exponent.parse().expect("{:e} prints a decimal exponent");
    (digits, exponent)
}

/// The even candidate when `digits` (odd in the last place) ties with a neighbour: both
/// read back as `value` and `value` lies exactly halfway between them.
fn even_tie_neighbour(value: f64, digits: &str, exponent: i32) -> Option<String> {
    let (stem, last) = digits.split_at(digits.len() - 1);
    let last = last.parse::<u8>().ok()?;
    // A midpoint is (10·lower + 5)·10^scale with 10·lower + 5 odd, so it holds exactly
    // `scale` factors of two; this cheap test rules out nearly every number before any
    // parsing or exact printing.
    let scale = exponent - digits.len() as i32;
    if last % 2 == 0 || powers_of_two(value) != scale {
        return None;
    }
    // A neighbour ending in 0 (or carrying) would mean a shorter form exists, which the
    // shortest digits rule out; only 1..=9 need a look.
    for neighbour in [last - 1, last + 1]
        .into_iter()
        .filter(|d| (1..=9).contains(d))
    {
        let candidate = format!("{stem}{neighbour}");
        if format!("{candidate}e{}", scale + 1).parse::<f64>() != Ok(value) {
            continue;
        }
        let lower = if neighbour < last {
            candidate.as_str()
        } else {
            digits
        };
        // A double's decimal expansion ends within 767 significant digits, so 800 print
        // it exactly.
        let (exact_digits, exact_exponent) = split_scientific(&format!("{value:.800e}"));
        if exact_exponent == exponent && exact_digits.trim_end_matches('0') == format!("{lower}5") {
            return Some(candidate);
        }
    }
    None
}

/// The exponent of 2 in `value` (positive, finite) written as odd × 2^e.
fn powers_of_two(value: f64) -> i32 {
    let bits = value.to_bits();
    let biased_exponent = ((bits >> 52) & 0x7ff) as i32;
    let fraction = bits & ((1 << 52) - 1);
    let (mantissa, exponent) = match biased_exponent {
        0 => (fraction, -1074),
        _ => (fraction | (1 << 52), biased_exponent - 1075),
    };
    exponent + mantissa.trailing_zeros() as i32
}

fn write_number(out: &mut String, number: &Number) {
    if let Some(unsigned) = number.as_u64() {
        write!(out, "{unsigned}").expect("writing to a String cannot fail");
    } else if let Some(signed) = number.as_i64() {
        write!(out, "{signed}").expect("writing to a String cannot fail");
    } else {
        let float = number
            .as_f64()
            .expect("a JSON number is an integer or a float");
        write_es_double(out, float);
    }
}

/// ECMAScript `Number.prototype.toString` (ECMA-262 Number::toString, radix 10), which JCS
/// mandates: the shortest digits that round-trip, laid out plainly, as a fraction or with
/// an exponent depending on the magnitude.
fn write_es_double(out: &mut String, value: f64) {
    debug_assert!(value.is_finite(), "serde_json holds only finite numbers");
    if value == 0.0 {
        // Also -0, which ES prints as "0".
        out.push('0');
        return;
    }
    if value < 0.0 {
        out.push('-');
    }
    let (digits, exponent) = shortest_digits(value.abs());
    // ES names: the value is 0.d1d2…dk × 10^n.
    let k = digits.len() as i32;
    let n = exponent + 1;
    if k <= n && n <= 21 {
        out.push_str(&digits);
        out.extend(std::iter::repeat_n('0', (n - k) as usize));
    } else if 0 < n && n <= 21 {
        let (whole, fraction) = digits.split_at(n as usize);
        out.push_str(whole);
        out.push('.');
        out.push_str(fraction);
    } else if -6 < n && n <= 0 {
        out.push_str("0.");
        out.extend(std::iter::repeat_n('0', (-n) as usize));
        out.push_str(&digits);
    } else {
        let (first, rest) = digits.split_at(1);
        out.push_str(first);
        if !rest.is_empty() {
            out.push('.');
            out.push_str(rest);
        }
        let shown = n - 1;
        write!(out, "e{}{}", if shown < 0 { '-' } else { '+' }, shown.abs())
            .expect("writing to a String cannot fail");
    }
}

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
                    "PATCH_TEST_FAILED",
                    format!(
                        "json_patch[{i}]: test failed at {}",
                        shorten(&op.path, QUOTE_BYTES)
                    ),
                ));
            }
            Err(OpFailure::Invalid(description)) => {
                let field = format!("json_patch[{i}]");
                return Err(Error::invalid_many(
                    "INVALID_PATCH",
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
            .ok_or_else(|| format!("\"{}\" needs a \"value\"", kind_name(op.op)))
    };
    let from = || match &op.from {
        Some(from) => parse_pointer(from),
        None => Err(format!("\"{}\" needs a \"from\"", kind_name(op.op))),
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

fn kind_name(kind: PatchOpKind) -> &'static str {
    match kind {
        PatchOpKind::Add => "add",
        PatchOpKind::Remove => "remove",
        PatchOpKind::Replace => "replace",
        PatchOpKind::Move => "move",
        PatchOpKind::Copy => "copy",
        PatchOpKind::Test => "test",
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

// ---------------------------------------------------------------------------------------
// Diff
// ---------------------------------------------------------------------------------------

/// Above this many cells (`(len(a) + 1) × (len(b) + 1)` of the part of two arrays that
/// differs) the LCS table (4 bytes a cell, so 16 MB here) is not built; see [`diff`].
const MAX_LCS_CELLS: usize = 4_000_000;

/// RFC 6902 ops that turn `from` into `to`: `apply_patch(from, &diff(from, to)) == to`.
///
/// The output is deterministic and small enough to read as a change log:
/// - equal values give no ops; a change of type or of a scalar is one `replace` (at the
///   root that is a single `replace` with path `""`);
/// - objects are diffed per key in key order: removes, then changed keys (recursively),
///   then adds;
/// - arrays are diffed by content: after trimming the common prefix and suffix, a longest
///   common subsequence of canonically equal elements is kept; between two kept elements,
///   the removed and added runs are paired position by position and diffed recursively
///   (so editing one field of one object in a list is one deep `replace`), the surplus of
///   the longer run is removed (highest index first) or added. Inserting one element
///   anywhere in a long array is therefore one `add`.
///
/// When the differing middles of two arrays would need an LCS table of more than 4 000 000
/// cells (about len(a) × len(b)), the LCS is skipped and the middle is diffed positionally as one run: still correct, just not
/// minimal for large reorders, and bounded in time and memory.
pub fn diff(from: &Value, to: &Value) -> Vec<PatchOp> {
    let mut ops = Vec::new();
    diff_values(from, to, "", &mut ops);
    ops
}

fn diff_values(from: &Value, to: &Value, path: &str, ops: &mut Vec<PatchOp>) {
    // Strict equality on purpose: `1` and `1.0` differ here, so the patch reproduces `to`
    // exactly, including how its numbers are spelled.
    if from == to {
        return;
    }
    match (from, to) {
        (Value::Object(a), Value::Object(b)) => diff_objects(a, b, path, ops),
        (Value::Array(a), Value::Array(b)) => diff_arrays(a, b, path, ops),
        _ => ops.push(PatchOp::replace(path.to_owned(), to.clone())),
    }
}

fn child_path(path: &str, token: &str) -> String {
    format!("{path}/{}", escape_token(token))
}

fn diff_objects(
    a: &Map<String, Value>,
    b: &Map<String, Value>,
    path: &str,
    ops: &mut Vec<PatchOp>,
) {
    let (a_keys, b_keys) = (sorted_keys(a), sorted_keys(b));
    for key in a_keys.iter().filter(|key| !b.contains_key(key.as_str())) {
        ops.push(PatchOp::remove(child_path(path, key)));
    }
    for key in &a_keys {
        if let Some(to) = b.get(key.as_str()) {
            diff_values(&a[key.as_str()], to, &child_path(path, key), ops);
        }
    }
    for key in b_keys.iter().filter(|key| !a.contains_key(key.as_str())) {
        ops.push(PatchOp::add(child_path(path, key), b[key.as_str()].clone()));
    }
}

/// Sorted explicitly so the output does not depend on serde_json's map flavour.
fn sorted_keys(map: &Map<String, Value>) -> Vec<&String> {
    let mut keys: Vec<&String> = map.keys().collect();
    keys.sort();
    keys
}

fn diff_arrays(a: &[Value], b: &[Value], path: &str, ops: &mut Vec<PatchOp>) {
    let prefix = a.iter().zip(b).take_while(|(x, y)| x == y).count();
    let suffix = a[prefix..]
        .iter()
        .rev()
        .zip(b[prefix..].iter().rev())
        .take_while(|(x, y)| x == y)
        .count();
    let (a_mid, b_mid) = (&a[prefix..a.len() - suffix], &b[prefix..b.len() - suffix]);

    // With one side empty there is nothing to match, and no table worth building.
    let cells = (a_mid.len() + 1).saturating_mul(b_mid.len() + 1);
    let matches = if a_mid.is_empty() || b_mid.is_empty() || cells > MAX_LCS_CELLS {
        Vec::new()
    } else {
        longest_common_subsequence(a_mid, b_mid)
    };

    // Ops are emitted left to right, so when a run starts at `b_mid[j]` the array being
    // patched already matches `b[..prefix + j]` and the run sits at index `prefix + j`.
    let (mut i, mut j) = (0, 0);
    let end = (a_mid.len(), b_mid.len());
    for (next_i, next_j) in matches.into_iter().chain([end]) {
        diff_run(&a_mid[i..next_i], &b_mid[j..next_j], prefix + j, path, ops);
        if (next_i, next_j) != end {
            // Canonically equal, yet possibly `1` against `1.0`.
            let index = (prefix + next_j).to_string();
            diff_values(
                &a_mid[next_i],
                &b_mid[next_j],
                &child_path(path, &index),
                ops,
            );
        }
        (i, j) = (next_i + 1, next_j + 1);
    }
}

/// Turns `removed` (at `start..` of the array being patched) into `added`.
fn diff_run(removed: &[Value], added: &[Value], start: usize, path: &str, ops: &mut Vec<PatchOp>) {
    let paired = removed.len().min(added.len());
    for (offset, (from, to)) in removed.iter().zip(added).enumerate() {
        let index = (start + offset).to_string();
        diff_values(from, to, &child_path(path, &index), ops);
    }
    for offset in (paired..removed.len()).rev() {
        ops.push(PatchOp::remove(child_path(
            path,
            &(start + offset).to_string(),
        )));
    }
    for (offset, value) in added.iter().enumerate().skip(paired) {
        let index = (start + offset).to_string();
        ops.push(PatchOp::add(child_path(path, &index), value.clone()));
    }
}

/// Index pairs `(i, j)`, increasing in both, of a longest common subsequence of `a` and
/// `b` under canonical equality. Elements are interned to small ids first, so the
/// quadratic table compares integers rather than whole subtrees.
fn longest_common_subsequence(a: &[Value], b: &[Value]) -> Vec<(usize, usize)> {
    let mut interned: HashMap<String, u32> = HashMap::new();
    let mut intern = |value: &Value| {
        let next = interned.len() as u32;
        *interned.entry(canonical_json(value)).or_insert(next)
    };
    let a_ids: Vec<u32> = a.iter().map(&mut intern).collect();
    let b_ids: Vec<u32> = b.iter().map(&mut intern).collect();

    // lengths[i][j]: LCS length of a[i..] and b[j..], row-major with width b.len() + 1.
    let width = b.len() + 1;
    let mut lengths = vec![0u32; (a.len() + 1) * width];
    for i in (0..a.len()).rev() {
        for j in (0..b.len()).rev() {
            lengths[i * width + j] = if a_ids[i] == b_ids[j] {
                lengths[(i + 1) * width + j + 1] + 1
            } else {
                lengths[(i + 1) * width + j].max(lengths[i * width + j + 1])
            };
        }
    }

    let mut matches = Vec::new();
    let (mut i, mut j) = (0, 0);
    while i < a.len() && j < b.len() {
        if a_ids[i] == b_ids[j] {
            matches.push((i, j));
            (i, j) = (i + 1, j + 1);
        } else if lengths[(i + 1) * width + j] >= lengths[i * width + j + 1] {
            i += 1;
        } else {
            j += 1;
        }
    }
    matches
}
