//! The values the variants send for the well-known types: durations and timestamps past
//! every bound, field masks that name nothing or too much, and documents (`Struct`,
//! `Value`) that are deep, wide, long, non-finite or hold U+0000.

use prost::Message as _;

use super::Expect;

/// Durations (`duration`) or timestamps worth sending: signs mixed, past every bound.
pub(super) fn times(duration: bool) -> Vec<(&'static str, i64, i32)> {
    let mut out = vec![
        ("zero", 0, 0),
        ("i64::MAX seconds", i64::MAX, 0),
        ("i64::MIN seconds", i64::MIN, 0),
        ("negative nanos", 0, -1),
        ("a second of nanos", 0, 1_000_000_000),
        ("mixed signs", 1, -1),
    ];
    if duration {
        out.extend([
            ("minus one second", -1, 0),
            ("past 10000 years", 315_576_000_001, 0),
        ]);
    } else {
        out.extend([
            ("before year 1", -62_135_596_801, 0),
            ("year 10000", 253_402_300_800, 0),
        ]);
    }
    out
}

pub(super) fn masks(shown: &str) -> Vec<(String, Vec<String>, Expect)> {
    vec![
        (
            "an empty path".into(),
            vec![String::new()],
            Expect::Anything,
        ),
        (
            "an unknown path".into(),
            vec!["nope".into()],
            Expect::Anything,
        ),
        (
            "a sub-path".into(),
            vec!["labels.x.y".into()],
            Expect::Anything,
        ),
        (
            "a quota path".into(),
            vec!["quotas.nope".into()],
            Expect::Anything,
        ),
        (
            "a duplicate".into(),
            vec!["display_name".into(), "display_name".into()],
            Expect::Anything,
        ),
        (
            "a 10000-byte path".into(),
            vec!["p".repeat(10_000)],
            Expect::Anything,
        ),
        (
            "U+0000".into(),
            vec!["display_name\0".into()],
            Expect::Refused {
                reason: "INVALID_ARGUMENT",
                field: format!("{shown}.paths[0]"),
                exact: true,
            },
        ),
        (
            "200 paths".into(),
            vec!["display_name".into(); 200],
            Expect::Anything,
        ),
    ]
}

/// Encoded `Struct`s (or `Value`s) worth sending.
pub(super) fn documents(shown: &str, is_value: bool) -> Vec<(String, Vec<u8>, Expect)> {
    use prost_types::{ListValue, Struct, Value as V, value::Kind as K};
    let text = |s: &str| V {
        kind: Some(K::StringValue(s.into())),
    };
    let number = |n: f64| V {
        kind: Some(K::NumberValue(n)),
    };
    let object = |entries: Vec<(String, V)>| Struct {
        fields: entries.into_iter().collect(),
    };
    let nested = |levels: usize| {
        let mut value = number(1.0);
        for _ in 0..levels {
            value = V {
                kind: Some(K::StructValue(object(vec![("k".into(), value)]))),
            };
        }
        match value.kind {
            Some(K::StructValue(s)) => s,
            _ => Struct::default(),
        }
    };
    let nul = |field: String| Expect::Refused {
        reason: "INVALID_ARGUMENT",
        field,
        exact: false,
    };
    let mut out: Vec<(String, Struct, Expect)> = vec![
        ("{}".into(), Struct::default(), Expect::Anything),
        (
            "a U+0000 key".into(),
            object(vec![("a\0".into(), number(1.0))]),
            nul(shown.into()),
        ),
        (
            "a U+0000 value".into(),
            object(vec![("k".into(), text("\0"))]),
            nul(format!("{shown}/k")),
        ),
        (
            "a control-character key".into(),
            object(vec![("\u{1}\u{1b}".into(), number(1.0))]),
            Expect::Anything,
        ),
        (
            "NaN".into(),
            object(vec![("k".into(), number(f64::NAN))]),
            Expect::Anything,
        ),
        (
            "-inf".into(),
            object(vec![("k".into(), number(f64::NEG_INFINITY))]),
            Expect::Anything,
        ),
        (
            "a 10000-character value".into(),
            object(vec![("k".into(), text(&"é".repeat(10_000)))]),
            Expect::Anything,
        ),
        (
            "2000 keys".into(),
            object(
                (0..2000)
                    .map(|i| (format!("k{i}"), number(i.into())))
                    .collect(),
            ),
            Expect::Anything,
        ),
        (
            "a 10000-element list".into(),
            object(vec![(
                "k".into(),
                V {
                    kind: Some(K::ListValue(ListValue {
                        values: (0..10_000).map(|i| number(i.into())).collect(),
                    })),
                },
            )]),
            Expect::Anything,
        ),
        ("32 levels".into(), nested(32), Expect::Anything),
        ("33 levels".into(), nested(33), Expect::Anything),
        ("40 levels".into(), nested(40), Expect::Anything),
        ("300 levels".into(), nested(300), Expect::Anything),
        (
            "a remote $ref schema".into(),
            object(vec![(
                "$ref".into(),
                text("http://127.0.0.1:9/schema.json"),
            )]),
            Expect::Anything,
        ),
    ];
    let wrap = |s: Struct| V {
        kind: Some(K::StructValue(s)),
    };
    let mut encoded: Vec<(String, Vec<u8>, Expect)> = out
        .drain(..)
        .map(|(what, doc, expect)| match is_value {
            true => (what, wrap(doc).encode_to_vec(), expect),
            false => (what, doc.encode_to_vec(), expect),
        })
        .collect();
    if is_value {
        for (what, value) in [
            (
                "null",
                V {
                    kind: Some(K::NullValue(0)),
                },
            ),
            ("no kind", V { kind: None }),
            ("a number", number(1.5)),
            ("a bare NaN", number(f64::NAN)),
            ("a string", text("text")),
            (
                "a list",
                V {
                    kind: Some(K::ListValue(ListValue {
                        values: vec![number(1.0)],
                    })),
                },
            ),
        ] {
            encoded.push((what.into(), value.encode_to_vec(), Expect::Anything));
        }
    }
    encoded
}
