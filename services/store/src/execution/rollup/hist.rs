//! Log-linear histograms of durations (micros), as the rollups store them.
//!
//! A value below [`EXACT`] (including a negative one, which clock skew between
//! replicas can produce) is its own key; a larger value `v` falls in key
//! `EXACT + floor(log_RATIO(v / EXACT))`, whose values lie within a factor of
//! [`RATIO`] of each other. The keys grow with the values, so the nearest-rank
//! percentile of a histogram is found by counting keys in order; it is reported as the
//! geometric middle of its key's range, within 1 % of the true value (exact below
//! [`EXACT`]). Stored as `key:count,key:count,…` in key order.

use std::collections::BTreeMap;

/// Values below this are kept exactly.
pub(crate) const EXACT: i64 = 128;
/// The ratio between a key's highest and lowest value.
pub(crate) const RATIO: f64 = 1.02;

/// Counts by key.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Histogram(BTreeMap<i64, i64>);

fn key(value: i64) -> i64 {
    if value < EXACT {
        return value;
    }
    let steps = ((value as f64 / EXACT as f64).ln() / RATIO.ln()).floor() as i64;
    EXACT + steps.max(0)
}

/// The value a key stands for: itself below [`EXACT`], else its range's geometric middle.
fn representative(key: i64) -> i64 {
    if key < EXACT {
        return key;
    }
    let low = EXACT as f64 * RATIO.powi((key - EXACT) as i32);
    (low * RATIO.sqrt()).round() as i64
}

impl Histogram {
    pub(crate) fn add(&mut self, value: i64) {
        *self.0.entry(key(value)).or_insert(0) += 1;
    }

    pub(crate) fn merge(&mut self, other: &Histogram) {
        for (key, count) in &other.0 {
            *self.0.entry(*key).or_insert(0) += count;
        }
    }

    pub(crate) fn count(&self) -> i64 {
        self.0.values().sum()
    }

    /// The value at nearest rank `rank` (1-based), 0 when empty.
    pub(crate) fn at_rank(&self, rank: i64) -> i64 {
        let mut seen = 0;
        for (key, count) in &self.0 {
            seen += count;
            if seen >= rank {
                return representative(*key);
            }
        }
        self.0.keys().next_back().map_or(0, |k| representative(*k))
    }

    pub(crate) fn encode(&self) -> String {
        let parts: Vec<String> = self.0.iter().map(|(k, c)| format!("{k}:{c}")).collect();
        parts.join(",")
    }

    /// Reads what [`Histogram::encode`] wrote; `None` when it is not that.
    #[cfg(test)]
    pub(crate) fn decode(text: &str) -> Option<Histogram> {
        let mut histogram = Histogram::default();
        histogram.merge_encoded(text)?;
        Some(histogram)
    }

    /// Adds the counts [`Histogram::encode`] wrote; `None` when `text` is not that.
    pub(crate) fn merge_encoded(&mut self, text: &str) -> Option<()> {
        for part in text.split(',').filter(|p| !p.is_empty()) {
            let (key, count) = part.split_once(':')?;
            *self.0.entry(key.parse().ok()?).or_insert(0) += count.parse::<i64>().ok()?;
        }
        Some(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_within_one_percent() {
        for value in [
            -5,
            0,
            1,
            127,
            128,
            129,
            1000,
            123_456,
            9_400_000,
            31_000_000_000_000,
        ] {
            let mut h = Histogram::default();
            h.add(value);
            let got = h.at_rank(1);
            let error = (got - value).abs() as f64 / value.abs().max(1) as f64;
            assert!(error <= 0.01, "{value} → {got}");
            if value < EXACT {
                assert_eq!(got, value);
            }
        }
    }

    #[test]
    fn keys_grow_with_values_and_round_trip() {
        let mut h = Histogram::default();
        let mut last = i64::MIN;
        for value in (0..2_000_000).step_by(997) {
            assert!(key(value) >= last);
            last = key(value);
            h.add(value);
        }
        assert_eq!(Histogram::decode(&h.encode()), Some(h.clone()));
        assert_eq!(h.count(), (0..2_000_000).step_by(997).count() as i64);
    }
}
