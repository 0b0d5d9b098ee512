//! Canonical JSON (RFC 8785, JCS) and the SHA-256 of a document.

use std::fmt::Write as _;

use serde_json::{Number, Value};
use sha2::{Digest, Sha256};

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

pub(super) fn write_canonical(out: &mut String, value: &Value) {
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
pub(super) fn write_string(out: &mut String, text: &str) {
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
pub(super) fn shortest_digits(value: f64) -> (String, i32) {
    let scientific = format!("{value:e}");
    let (digits, exponent) = split_scientific(&scientific);
    match even_tie_neighbour(value, &digits, exponent) {
        Some(even) => (even, exponent),
        None => (digits, exponent),
    }
}

/// Splits Rust's `{:e}` output into its significant digits and decimal exponent.
pub(super) fn split_scientific(scientific: &str) -> (String, i32) {
    let (mantissa, exponent) = scientific
        .split_once('e')
        .expect("{:e} always prints an exponent");
    let digits = mantissa.chars().filter(|c| *c != '.').collect();
    let exponent = exponent.parse().expect("{:e} prints a decimal exponent");
    (digits, exponent)
}

/// The even candidate when `digits` (odd in the last place) ties with a neighbour: both
/// read back as `value` and `value` lies exactly halfway between them.
pub(super) fn even_tie_neighbour(value: f64, digits: &str, exponent: i32) -> Option<String> {
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
pub(super) fn powers_of_two(value: f64) -> i32 {
    let bits = value.to_bits();
    let biased_exponent = ((bits >> 52) & 0x7ff) as i32;
    let fraction = bits & ((1 << 52) - 1);
    let (mantissa, exponent) = match biased_exponent {
        0 => (fraction, -1074),
        _ => (fraction | (1 << 52), biased_exponent - 1075),
    };
    exponent + mantissa.trailing_zeros() as i32
}

pub(super) fn write_number(out: &mut String, number: &Number) {
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
pub(super) fn write_es_double(out: &mut String, value: f64) {
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
