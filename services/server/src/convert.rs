//! Conversions between proto and domain values, with the validation that belongs to the
//! receiving side: documents, timestamps, labels, field masks and free text.

use agentry_core::{
    Error, Result,
    error::{excerpt, quote},
    model::Labels,
    time::UnixMicros,
};
use prost_types::{ListValue, Struct, Timestamp, value::Kind};
use serde_json::{Map, Number, Value};

/// Documents deeper than this are refused before they reach a validator. Protobuf
/// decoding stops near 33 levels already (prost's recursion limit, three message levels
/// per JSON level); this bound keeps the rule explicit whatever the transport allows.
const MAX_DEPTH: usize = 32;
const MAX_TEXT: usize = 4096;
const MAX_LABELS: usize = 64;

pub fn struct_to_json(field: &str, value: Struct) -> Result<Value> {
    fields_to_json(field, value.fields, 0)
}

fn fields_to_json(
    field: &str,
    fields: std::collections::BTreeMap<String, prost_types::Value>,
    depth: usize,
) -> Result<Value> {
    let mut map = Map::new();
    for (key, value) in fields {
        map.insert(key, value_to_json(field, value, depth + 1)?);
    }
    Ok(Value::Object(map))
}

pub fn value_to_json(field: &str, value: prost_types::Value, depth: usize) -> Result<Value> {
    if depth > MAX_DEPTH {
        return Err(Error::invalid(
            field,
            format!("documents may nest at most {MAX_DEPTH} levels"),
        ));
    }
    Ok(match value.kind {
        None | Some(Kind::NullValue(_)) => Value::Null,
        Some(Kind::BoolValue(b)) => Value::Bool(b),
        Some(Kind::StringValue(s)) => Value::String(s),
        Some(Kind::NumberValue(n)) => Value::Number(number(field, n)?),
        Some(Kind::StructValue(s)) => fields_to_json(field, s.fields, depth)?,
        Some(Kind::ListValue(list)) => Value::Array(
            list.values
                .into_iter()
                .map(|v| value_to_json(field, v, depth + 1))
                .collect::<Result<_>>()?,
        ),
    })
}

/// Integral numbers become JSON integers, so `1` round-trips as `1`, not `1.0`.
fn number(field: &str, n: f64) -> Result<Number> {
    if !n.is_finite() {
        return Err(Error::invalid(
            field,
            "numbers must be finite (no NaN or Infinity)",
        ));
    }
    if n.fract() == 0.0 && n.abs() < 9_007_199_254_740_992.0 {
        return Ok(Number::from(n as i64));
    }
    Number::from_f64(n).ok_or_else(|| Error::invalid(field, "not a JSON number"))
}

pub fn json_to_value(value: &Value) -> prost_types::Value {
    let kind = match value {
        Value::Null => Kind::NullValue(0),
        Value::Bool(b) => Kind::BoolValue(*b),
        Value::Number(n) => Kind::NumberValue(n.as_f64().unwrap_or_default()),
        Value::String(s) => Kind::StringValue(s.clone()),
        Value::Array(items) => Kind::ListValue(ListValue {
            values: items.iter().map(json_to_value).collect(),
        }),
        Value::Object(_) => Kind::StructValue(json_to_struct(value)),
    };
    prost_types::Value { kind: Some(kind) }
}

/// An object as a `Struct`; anything else becomes an empty one.
pub fn json_to_struct(value: &Value) -> Struct {
    match value {
        Value::Object(map) => Struct {
            fields: map
                .iter()
                .map(|(k, v)| (k.clone(), json_to_value(v)))
                .collect(),
        },
        _ => Struct::default(),
    }
}

pub fn timestamp(micros: UnixMicros) -> Option<Timestamp> {
    Some(Timestamp {
        seconds: micros.div_euclid(1_000_000),
        nanos: (micros.rem_euclid(1_000_000) * 1000) as i32,
    })
}

pub fn micros(field: &str, ts: &Timestamp) -> Result<UnixMicros> {
    if !(0..1_000_000_000).contains(&ts.nanos) || !(0..=253_402_300_799).contains(&ts.seconds) {
        return Err(Error::invalid(field, "not a valid timestamp"));
    }
    Ok(ts.seconds * 1_000_000 + i64::from(ts.nanos) / 1000)
}

pub fn labels(field: &str, labels: Labels) -> Result<Labels> {
    if labels.len() > MAX_LABELS {
        return Err(Error::invalid(
            field,
            format!("at most {MAX_LABELS} labels"),
        ));
    }
    for (key, value) in &labels {
        let key_ok = !key.is_empty()
            && key.len() <= 63
            && key.as_bytes()[0].is_ascii_lowercase()
            && key.bytes().all(|b| {
                b.is_ascii_lowercase()
                    || b.is_ascii_digit()
                    || b == b'_'
                    || b == b'-'
                    || b == b'.'
                    || b == b'/'
            });
        if !key_ok {
            return Err(Error::invalid(
                format!("{field}.{}", excerpt(key)),
                "label keys are 1-63 characters: a lowercase letter, then [a-z0-9_./-]",
            ));
        }
        if value.len() > 256 {
            return Err(Error::invalid(
                format!("{field}.{}", excerpt(key)),
                "label values are at most 256 bytes",
            ));
        }
    }
    Ok(labels)
}

/// Free text such as display names and descriptions.
pub fn text(field: &str, value: String) -> Result<String> {
    if value.len() > MAX_TEXT {
        return Err(Error::invalid(field, format!("at most {MAX_TEXT} bytes")));
    }
    if value
        .chars()
        .any(|c| c.is_control() && c != '\n' && c != '\t')
    {
        return Err(Error::invalid(field, "control characters are not allowed"));
    }
    Ok(value)
}

/// An update's field mask, checked against the updatable fields of the resource in the
/// request's field `resource` (`project`, `agent` …). An absent or empty mask means every
/// updatable field. Only the fields in `nested` (messages) may be named by a sub-path
/// (`quotas.max_projects`); the caller checks the sub-field.
pub struct Mask {
    resource: &'static str,
    paths: Vec<String>,
}

impl Mask {
    pub fn new(
        resource: &'static str,
        mask: Option<prost_types::FieldMask>,
        allowed: &[&str],
        nested: &[&str],
    ) -> Result<Self> {
        let paths = mask.map(|m| m.paths).unwrap_or_default();
        if paths.is_empty() {
            let paths = allowed.iter().map(|s| (*s).to_owned()).collect();
            return Ok(Self { resource, paths });
        }
        for path in &paths {
            let (top, sub) = path
                .split_once('.')
                .map_or((path.as_str(), None), |(t, s)| (t, Some(s)));
            if !allowed.contains(&top) || (sub.is_some() && !nested.contains(&top)) {
                return Err(Error::invalid(
                    "update_mask",
                    format!(
                        "{} cannot be updated; updatable fields: {}",
                        quote(path),
                        allowed.join(", ")
                    ),
                ));
            }
        }
        Ok(Self { resource, paths })
    }

    /// Whether the mask names `field` itself.
    pub fn has(&self, field: &str) -> bool {
        self.paths.iter().any(|p| p == field)
    }

    pub fn paths(&self) -> &[String] {
        &self.paths
    }

    /// `convert(path, value)` when the mask names `field`, where `path` is the field's
    /// path in the request (`project.display_name`); `None` when it does not.
    pub fn pick<V, T>(
        &self,
        field: &str,
        value: V,
        convert: impl FnOnce(&str, V) -> Result<T>,
    ) -> Result<Option<T>> {
        self.has(field)
            .then(|| convert(&format!("{}.{field}", self.resource), value))
            .transpose()
    }

    /// A free-text field ([`text`]) when the mask names it.
    pub fn text(&self, field: &str, value: String) -> Result<Option<String>> {
        self.pick(field, value, text)
    }

    /// The `labels` field ([`labels`]) when the mask names it.
    pub fn labels(&self, value: Labels) -> Result<Option<Labels>> {
        self.pick("labels", value, labels)
    }
}

/// `request_id`: empty, or up to 128 printable ASCII characters.
pub fn request_id(value: &str) -> Result<()> {
    if value.len() > 128 || !value.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(Error::invalid(
            "request_id",
            "at most 128 printable ASCII characters",
        ));
    }
    Ok(())
}

/// Parses an RFC 3339 timestamp (`2026-11-22T10:00:00Z`, fractions and offsets
/// allowed) into microseconds since the epoch.
pub fn rfc3339_micros(text: &str) -> Option<UnixMicros> {
    let b = text.as_bytes();
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        std::str::from_utf8(b.get(r)?).ok()?.parse().ok()
    };
    if b.len() < 20
        || b[4] != b'-'
        || b[7] != b'-'
        || !matches!(b[10], b'T' | b't' | b' ')
        || b[13] != b':'
        || b[16] != b':'
    {
        return None;
    }
    let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hour, minute, second) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&month)
        || !(1..=31).contains(&day)
        || hour > 23
        || minute > 59
        || second > 60
    {
        return None;
    }
    let mut i = 19;
    let mut micros = 0i64;
    if b.get(i) == Some(&b'.') {
        i += 1;
        let start = i;
        while b.get(i).is_some_and(u8::is_ascii_digit) {
            i += 1;
        }
        let digits = std::str::from_utf8(&b[start..i]).ok()?;
        if digits.is_empty() {
            return None;
        }
        let padded: String = digits
            .chars()
            .chain(std::iter::repeat('0'))
            .take(6)
            .collect();
        micros = padded.parse().ok()?;
    }
    let offset_secs = match b.get(i)? {
        b'Z' | b'z' if i + 1 == b.len() => 0,
        sign @ (b'+' | b'-') if i + 6 == b.len() && b[i + 3] == b':' => {
            let secs = num(i + 1..i + 3)? * 3600 + num(i + 4..i + 6)? * 60;
            if *sign == b'+' { secs } else { -secs }
        }
        _ => return None,
    };
    // Days from the civil date (Howard Hinnant's algorithm).
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + hour * 3600 + minute * 60 + second - offset_secs;
    Some(secs * 1_000_000 + micros)
}

/// The terms of a small AIP-160 subset: `key OP value` joined by ` AND `, where OP is
/// `=`, `>` or `<` and the value may be quoted. `supported` completes error messages.
pub fn filter_terms<'a>(
    text: &'a str,
    supported: &str,
) -> Result<Vec<(&'a str, &'a str, &'a str)>> {
    if text.trim().is_empty() {
        return Ok(Vec::new());
    }
    text.split(" AND ")
        .map(|term| {
            let term = term.trim();
            ["=", ">", "<"]
                .iter()
                .find_map(|op| {
                    term.split_once(op)
                        .map(|(k, v)| (k.trim(), *op, v.trim().trim_matches('"')))
                })
                .ok_or_else(|| filter_error("expected key = value", supported))
        })
        .collect()
}

/// `{parent}/{collection}/{id}`, or empty (the wire's none) without an `id`.
pub fn child_name(parent: &str, collection: &str, id: Option<&str>) -> String {
    id.map(|id| format!("{parent}/{collection}/{id}"))
        .unwrap_or_default()
}

/// The value of a filter that may only be `key = "value"` (`example` shows one); `None`
/// when the filter is empty.
pub fn only_term<'a>(text: &'a str, key: &str, example: &str) -> Result<Option<&'a str>> {
    match text.trim() {
        "" => Ok(None),
        text => text
            .strip_prefix(key)
            .and_then(|rest| rest.trim_start().strip_prefix('='))
            .map(|v| Some(v.trim().trim_matches('"')))
            .ok_or_else(|| Error::invalid("filter", format!("supported: {key} = \"{example}\""))),
    }
}

pub fn filter_error(why: &str, supported: &str) -> Error {
    Error::invalid(
        "filter",
        format!("{why}; supported: {supported}, joined by AND"),
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn rfc3339_parses_utc_offsets_and_fractions() {
        assert_eq!(rfc3339_micros("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(
            rfc3339_micros("2023-11-14T22:13:20.5Z"),
            Some(1_700_000_000_500_000)
        );
        assert_eq!(
            rfc3339_micros("2023-11-15T00:13:20+02:00"),
            Some(1_700_000_000_000_000)
        );
        assert_eq!(rfc3339_micros("2023-11-14"), None);
        assert_eq!(rfc3339_micros("2023-13-14T00:00:00Z"), None);
    }

    use super::*;

    #[test]
    fn json_round_trips_through_struct() {
        let doc = serde_json::json!({"a": 1, "b": [true, null, "x", 1.5], "c": {"d": {}}});
        let back = struct_to_json("f", json_to_struct(&doc)).unwrap();
        assert_eq!(back, doc);
    }

    #[test]
    fn non_finite_numbers_are_refused() {
        let v = prost_types::Value {
            kind: Some(Kind::NumberValue(f64::NAN)),
        };
        assert!(value_to_json("f", v, 0).is_err());
    }

    #[test]
    fn timestamps_round_trip() {
        let t = timestamp(1_700_000_000_123_456).unwrap();
        assert_eq!(micros("t", &t).unwrap(), 1_700_000_000_123_456);
    }
}
