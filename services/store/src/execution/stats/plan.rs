//! Which rows of the rollup, and which runs, answer a window of GetRunStats.

use agentry_core::time::Micros;
use sea_query::{Expr, SimpleExpr};

/// The rollup's periods (see migration 0005).
const HOUR: Micros = 3_600_000_000;
const DAY: Micros = 86_400_000_000;

/// Where the figures of a window are read: the rollup's whole periods, and the runs of
/// what is left at the ends.
pub(super) struct Plan {
    /// `span = s AND from <= period < to`, for each (s, from, to).
    pub periods: Vec<(Micros, Micros, Micros)>,
    /// Creation-time ranges [from, to) read from `runs`.
    pub edges: Vec<(Micros, Micros)>,
}

fn floor_to(t: Micros, span: Micros) -> Micros {
    t.div_euclid(span) * span
}

fn ceil_to(t: Micros, span: Micros) -> Micros {
    let floor = floor_to(t, span);
    if floor == t {
        t
    } else {
        floor.saturating_add(span)
    }
}

impl Plan {
    pub fn new(start: Micros, end: Micros) -> Plan {
        let (hours_from, hours_to) = (ceil_to(start, HOUR), floor_to(end, HOUR));
        if hours_from >= hours_to {
            return Plan {
                periods: Vec::new(),
                edges: vec![(start, end)],
            };
        }
        let (days_from, days_to) = (ceil_to(hours_from, DAY), floor_to(hours_to, DAY));
        let periods = if days_from < days_to {
            vec![
                (DAY, days_from, days_to),
                (HOUR, hours_from, days_from),
                (HOUR, days_to, hours_to),
            ]
        } else {
            vec![(HOUR, hours_from, hours_to)]
        };
        Plan {
            periods: periods.into_iter().filter(|p| p.1 < p.2).collect(),
            edges: [(start, hours_from), (hours_to, end)]
                .into_iter()
                .filter(|e| e.0 < e.1)
                .collect(),
        }
    }

    pub fn rollup(&self) -> SimpleExpr {
        any(self.periods.iter().map(|(span, from, to)| {
            format!("(span = {span} AND period >= {from} AND period < {to})")
        }))
    }

    pub fn runs(&self) -> SimpleExpr {
        any(self
            .edges
            .iter()
            .map(|(from, to)| format!("(create_time >= {from} AND create_time < {to})")))
    }
}

/// The disjunction of `terms` (false when there are none).
fn any(terms: impl Iterator<Item = String>) -> SimpleExpr {
    let terms: Vec<String> = terms.collect();
    if terms.is_empty() {
        Expr::cust("1 = 0")
    } else {
        Expr::cust(format!("({})", terms.join(" OR ")))
    }
}
