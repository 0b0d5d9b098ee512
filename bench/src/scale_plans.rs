//! The plan shapes of `scale-lists`' statements: EXPLAIN (FORMAT JSON) of the ListRuns
//! pages and of GetRunStats' two statements (the rollups read and the scan of the rest),
//! written here as the store sends them with the values in place, reduced to their node
//! types and index names, so that the figures before and after `ANALYZE runs` can be
//! told to come from the same plans.

use serde_json::Value;
use sqlx::PgConnection;

const DAY: i64 = 86_400_000_000;
const HOUR: i64 = 3_600_000_000;
const RUNS: &str = "SELECT * FROM runs WHERE workspace_id = 'bench' AND project_id = 'p'";
const PAGE: &str = "ORDER BY create_time DESC, run_id DESC LIMIT 51";

fn ceil(t: i64, size: i64) -> i64 {
    t.div_euclid(size) * size + if t.rem_euclid(size) == 0 { 0 } else { size }
}

/// GetRunStats' read of the rollups (`rollup/read.rs`) over `[start, end)`.
fn rollups((start, end): (i64, i64)) -> String {
    let (first, last) = (ceil(start, HOUR), end.div_euclid(HOUR) * HOUR);
    let (day_first, day_last) = (ceil(first, DAY), last.div_euclid(DAY) * DAY);
    let summed = format!(
        "r.bucket < m.daily_until AND (r.bucket / {DAY}) * {DAY} + {DAY} <= m.sealed_until"
    );
    let select = |table: &str, first: i64, last: i64| {
        format!(
            "SELECT r.bucket, r.agent_id, r.status, r.runs, r.input_tokens, r.output_tokens, \
             r.cost_usd, r.started, r.ended, r.queue_wait, r.run_time, m.sealed_until \
             FROM {table} AS r INNER JOIN run_rollup_marks AS m \
             ON m.workspace_id = r.workspace_id AND m.project_id = r.project_id \
             WHERE r.workspace_id = 'bench' AND r.project_id = 'p' AND r.bucket >= {first} \
             AND r.bucket < {last} AND r.bucket < m.sealed_until"
        )
    };
    format!(
        "{} AND NOT (r.bucket >= {day_first} AND r.bucket < {day_last} AND {summed}) \
         UNION ALL ({} AND {summed})",
        select("run_rollups", first, last),
        select("run_rollups_daily", day_first, day_last)
    )
}

/// GetRunStats' exact scan of the rest of `[start, end)`, the watermark at `sealed`.
fn rest((start, end): (i64, i64), sealed: i64) -> String {
    let first = ceil(start, HOUR);
    let sealed = sealed.min(end.div_euclid(HOUR) * HOUR);
    let range = |from: i64, until: i64| {
        format!(
            "SELECT agent_id, status, input_tokens, output_tokens, cost_usd, create_time, \
             start_time, end_time FROM runs WHERE workspace_id = 'bench' AND project_id = 'p' \
             AND create_time >= {from} AND create_time < {until}"
        )
    };
    format!("{} UNION ALL ({})", range(start, first), range(sealed, end))
}

/// Node types (with index names) of a plan, depth first.
fn shape(plan: &Value, out: &mut Vec<String>) {
    let node = plan["Node Type"].as_str().unwrap_or("?");
    match plan.get("Index Name").and_then(Value::as_str) {
        Some(index) => out.push(format!("{node} {index}")),
        None => out.push(node.to_owned()),
    }
    for child in plan["Plans"].as_array().into_iter().flatten() {
        shape(child, out);
    }
}

/// (what, plan shape) of each statement.
pub async fn shapes(
    db: &mut PgConnection,
    window: (i64, i64),
) -> anyhow::Result<Vec<(&'static str, String)>> {
    let (sealed,): (i64,) =
        sqlx::query_as("SELECT sealed_until FROM run_rollup_marks WHERE workspace_id = 'bench'")
            .fetch_one(&mut *db)
            .await?;
    let statements = [
        ("ListRuns page, depth 0", format!("{RUNS} {PAGE}")),
        (
            "ListRuns status=FAILED, first",
            format!("{RUNS} AND status = 'FAILED' {PAGE}"),
        ),
        ("GetRunStats, rollups", rollups(window)),
        ("GetRunStats, rest", rest(window, sealed)),
    ];
    let mut shapes = Vec::new();
    for (what, sql) in statements {
        let (plan,): (Value,) = sqlx::query_as(&format!("EXPLAIN (FORMAT JSON) {sql}"))
            .fetch_one(&mut *db)
            .await?;
        let mut nodes = Vec::new();
        shape(&plan[0]["Plan"], &mut nodes);
        shapes.push((what, nodes.join(" > ")));
    }
    Ok(shapes)
}
