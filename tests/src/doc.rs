//! JSON documents and well-known types: `serde_json::Value` ⇄ `google.protobuf.Struct`,
//! field masks, durations and timestamps.

use std::collections::BTreeMap;

use serde_json::{Value, json};

pub fn to_struct(value: Value) -> prost_types::Struct {
    match to_value(value).kind {
        Some(prost_types::value::Kind::StructValue(s)) => s,
        other => panic!("expected a JSON object, got {other:?}"),
    }
}

pub fn to_value(value: Value) -> prost_types::Value {
    use prost_types::value::Kind;
    let kind = match value {
        Value::Null => Kind::NullValue(0),
        Value::Bool(b) => Kind::BoolValue(b),
        Value::Number(n) => Kind::NumberValue(n.as_f64().expect("finite number")),
        Value::String(s) => Kind::StringValue(s),
        Value::Array(items) => Kind::ListValue(prost_types::ListValue {
            values: items.into_iter().map(to_value).collect(),
        }),
        Value::Object(map) => Kind::StructValue(prost_types::Struct {
            fields: map
                .into_iter()
                .map(|(k, v)| (k, to_value(v)))
                .collect::<BTreeMap<_, _>>(),
        }),
    };
    prost_types::Value { kind: Some(kind) }
}

/// JSON of a `Struct`; numbers come back as floats, so compare with float literals.
pub fn from_struct(s: &prost_types::Struct) -> Value {
    Value::Object(
        s.fields
            .iter()
            .map(|(k, v)| (k.clone(), from_value(v)))
            .collect(),
    )
}

pub fn from_value(value: &prost_types::Value) -> Value {
    use prost_types::value::Kind;
    match &value.kind {
        None | Some(Kind::NullValue(_)) => Value::Null,
        Some(Kind::BoolValue(b)) => Value::Bool(*b),
        Some(Kind::NumberValue(n)) => json!(*n),
        Some(Kind::StringValue(s)) => Value::String(s.clone()),
        Some(Kind::ListValue(list)) => Value::Array(list.values.iter().map(from_value).collect()),
        Some(Kind::StructValue(s)) => from_struct(s),
    }
}

pub fn field_mask(paths: &[&str]) -> Option<prost_types::FieldMask> {
    Some(prost_types::FieldMask {
        paths: paths.iter().map(|p| (*p).to_owned()).collect(),
    })
}

pub fn seconds(secs: i64) -> Option<prost_types::Duration> {
    Some(prost_types::Duration {
        seconds: secs,
        nanos: 0,
    })
}

/// A timestamp as nanoseconds since the epoch, for ordering; panics when absent.
#[track_caller]
pub fn nanos(timestamp: &Option<prost_types::Timestamp>) -> i128 {
    let t = timestamp.as_ref().expect("timestamp is set");
    i128::from(t.seconds) * 1_000_000_000 + i128::from(t.nanos)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_round_trips_through_struct() {
        let doc = json!({"a": 1.5, "b": [true, null, "x"], "c": {"d": {}}});
        assert_eq!(from_struct(&to_struct(doc.clone())), doc);
    }
}
