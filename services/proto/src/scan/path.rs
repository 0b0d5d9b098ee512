//! The path that names a fault: one segment per field, as a client wrote it
//! (`run.input[0].content`, `labels.key`) or, inside a document, as a JSON pointer
//! (`data/notes/0`).

use super::{Field, LEN, Shape, ShapeKind, delimited, key, skip};

/// The path segment of `field` of a message of `shape`, whose key starts at `start`.
pub(super) fn segment(shape: &Shape, field: &Field, buf: &[u8], start: usize) -> String {
    let entry_key = || {
        let mut pos = start;
        key(buf, &mut pos)
            .ok()
            .and_then(|_| delimited(buf, &mut pos).ok())
            .and_then(map_key)
            .unwrap_or_default()
    };
    let index = || occurrences(buf, start, field.number);
    match shape.kind {
        ShapeKind::MapEntry | ShapeKind::Value => String::new(),
        ShapeKind::Struct if field.map => format!("/{}", pointer_token(&entry_key())),
        ShapeKind::ListValue if field.repeated => format!("/{}", index()),
        ShapeKind::Struct | ShapeKind::ListValue => format!(".{}", field.name),
        ShapeKind::Plain if field.map => format!(".{}.{}", field.name, entry_key()),
        ShapeKind::Plain if field.repeated => format!(".{}[{}]", field.name, index()),
        ShapeKind::Plain => format!(".{}", field.name),
    }
}

/// How many times field `number` occurs in `buf` before the key at `end`.
pub(super) fn occurrences(buf: &[u8], end: usize, number: u32) -> usize {
    let mut pos = 0;
    let mut count = 0;
    while pos < end {
        let Ok((n, wire)) = key(buf, &mut pos) else {
            break;
        };
        if n == number {
            count += 1;
        }
        if skip(buf, &mut pos, n, wire, 0).is_err() {
            break;
        }
    }
    count
}

/// The key (field 1) of a map entry, shown short and with control characters escaped.
pub(super) fn map_key(entry: &[u8]) -> Option<String> {
    let mut pos = 0;
    while pos < entry.len() {
        let (number, wire) = key(entry, &mut pos).ok()?;
        if number == 1 && wire == LEN {
            let raw = delimited(entry, &mut pos).ok()?;
            return Some(printable(&String::from_utf8_lossy(raw)));
        }
        skip(entry, &mut pos, number, wire, 0).ok()?;
    }
    Some(String::new())
}

/// At most 64 characters of `text`, control characters escaped (`\u{0}`), so that a path
/// naming a hostile key stays short and readable.
pub fn printable(text: &str) -> String {
    const MAX_CHARS: usize = 64;
    let mut out = String::new();
    for (i, ch) in text.chars().enumerate() {
        if i == MAX_CHARS {
            out.push('…');
            break;
        }
        if ch.is_control() {
            out.push_str(&format!("\\u{{{:x}}}", ch as u32));
        } else {
            out.push(ch);
        }
    }
    out
}

/// A path of at most about 200 bytes: its start and its end, which say where the
/// fault is, around an ellipsis (a document nested 30 levels deep has a long path).
pub(super) fn shorten_path(path: &str) -> String {
    const HEAD: usize = 80;
    const TAIL: usize = 120;
    if path.len() <= HEAD + TAIL {
        return path.to_owned();
    }
    let head_end = (0..=HEAD)
        .rev()
        .find(|&i| path.is_char_boundary(i))
        .unwrap_or(0);
    let tail_start = (path.len() - TAIL..path.len())
        .find(|&i| path.is_char_boundary(i))
        .unwrap_or(path.len());
    format!("{}…{}", &path[..head_end], &path[tail_start..])
}

/// RFC 6901 escaping of one reference token.
pub(super) fn pointer_token(token: &str) -> String {
    token.replace('~', "~0").replace('/', "~1")
}
