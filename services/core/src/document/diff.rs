//! Diffs between two documents as RFC 6902 patches (see [`diff`]).

use std::collections::HashMap;

use serde_json::{Map, Value};

use super::{PatchOp, canonical_json, escape_token};

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
