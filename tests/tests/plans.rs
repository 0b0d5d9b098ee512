//! Query plans on Postgres do not depend on fresh statistics: on a new database whose
//! tables were never analyzed, with 100,000 runs and 100,000 contexts in one project,
//! the hot lookups by name take the primary (or unique) key of the name, and every
//! list page, at any depth and under each documented filter, is an index seek on the
//! index made for it; the same after ANALYZE.
//!
//! The statements are those the store sends (sea-query's output, with the parameters
//! written in), checked with `EXPLAIN (FORMAT JSON)`: no Seq Scan anywhere, and the
//! only indexes read are the expected ones.

use agentry_e2e::{Backend, FreshDatabase, fresh_database};
use agentry_store::Store;
use serde_json::Value;
use sqlx::{Connection, Executor, PgConnection};

/// Runs `r00000000` … one second apart, 1,000 sessions, 8 instances, 4 agents; one run
/// in 1,000 FAILED, on agent `rare` and instance `i-rare`; one context in 1,000 owned
/// by `i1`; 1,000 versions of context `c0000000`.
const LOAD: &str = "
INSERT INTO workspaces VALUES ('w', '', '', '{}', '{}', 1, 0, 0);
INSERT INTO projects VALUES ('w', 'p', '', '', '{}', 1, 0, 0);
INSERT INTO sessions SELECT 'w', 'p', 's' || lpad(i::text, 4, '0'), 'i' || (i % 8), '', '{}', '', 0, i, i
    FROM generate_series(0, 999) i;
INSERT INTO runs (workspace_id, run_id, project_id, session_id, instance_id, agent_id,
    agent_revision, status, stop_reason, ready, spec, attempt, error, input_tokens,
    output_tokens, cost_usd, last_sequence, cancel_requested, supersede, approval, output,
    next_attempt_time, lease_epoch, lease_duration, worker, create_time, start_time,
    end_time, update_time)
SELECT 'w', 'r' || lpad(i::text, 8, '0'), 'p', 's' || lpad((i % 1000)::text, 4, '0'),
    CASE WHEN i % 1000 = 7 THEN 'i-rare' ELSE 'i' || (i % 8) END,
    CASE WHEN i % 1000 = 7 THEN 'rare' ELSE 'a' || (i % 4) END, 1,
    CASE WHEN i % 1000 = 7 THEN 'FAILED' ELSE 'SUCCEEDED' END, 'END_TURN', 0, '{}', 1, '',
    10, 20, 0.001, 3, 0, 0, '', '[]', 0, 1, 0, '',
    1700000000000000 + i::bigint * 1000000, 1700000000000000 + i::bigint * 1000000 + 1000,
    1700000000000000 + i::bigint * 1000000 + 500000, 1700000000000000 + i::bigint * 1000000
FROM generate_series(0, 99999) i;
INSERT INTO contexts SELECT 'w', 'p', 'c' || lpad(i::text, 7, '0'),
    CASE WHEN i % 1000 = 1 THEN 'i1' ELSE '' END, '', 0, 1000, 1, '{}', i, i
    FROM generate_series(0, 99999) i;
INSERT INTO context_blobs VALUES ('w', 'p', 'c0000000', 'h', '{}', 2, 1000, 0);
INSERT INTO context_versions SELECT 'w', 'p', 'c0000000', v, 'PUT', 0, 'h', 2,
    CASE WHEN v % 100 = 0 THEN 'rare' ELSE 'author' END, '', '', v
    FROM generate_series(1, 1000) v;
";

const TABLES: [&str; 4] = ["runs", "sessions", "contexts", "context_versions"];

const RUN: &str = "SELECT * FROM runs WHERE workspace_id = 'w'";
const DEEP_RUN: &str =
    "(\"create_time\", \"run_id\") < (1700000000000000 + 1000 * 1000000::bigint, 'r00001000')";
const RUN_PAGE: &str = "ORDER BY \"create_time\" DESC, \"run_id\" DESC LIMIT 51";
const SESSION: &str = "SELECT * FROM sessions WHERE workspace_id = 'w' AND project_id = 'p'";
const CONTEXT: &str = "SELECT * FROM contexts WHERE workspace_id = 'w' AND project_id = 'p'";
const VERSION: &str = "SELECT * FROM context_versions \
     WHERE workspace_id = 'w' AND project_id = 'p' AND context_id = 'c0000000'";

/// (what, statement, the one index it must read).
type Case = (&'static str, String, &'static str);

/// Lookups by key: the key, at any size, analyzed or not (0013).
fn lookups() -> Vec<Case> {
    vec![
        (
            "GetRun",
            format!("{RUN} AND run_id = 'r00050000'"),
            "runs_pkey",
        ),
        (
            "a run locked by name",
            format!("{RUN} AND run_id = 'r00050000' FOR NO KEY UPDATE"),
            "runs_pkey",
        ),
        (
            "GetSession",
            format!("{SESSION} AND session_id = 's0500'"),
            "sessions_pkey",
        ),
        (
            "a session locked by name",
            format!("{SESSION} AND session_id = 's0500' FOR NO KEY UPDATE"),
            "sessions_pkey",
        ),
        (
            "GetContext",
            format!("{CONTEXT} AND context_id = 'c0050000'"),
            "contexts_pkey",
        ),
        (
            "a context locked by name",
            format!("{CONTEXT} AND context_id = 'c0050000' FOR UPDATE"),
            "contexts_pkey",
        ),
        (
            "the batched head lookup",
            "SELECT k.i, c.create_time, c.head_version, c.floor_version \
             FROM unnest(ARRAY['w', 'w']::text[], ARRAY['p', 'p']::text[], \
                         ARRAY['c0050000', 'c0070000']::text[]) WITH ORDINALITY AS k (w, p, c, i) \
             JOIN contexts c ON c.workspace_id = k.w AND c.project_id = k.p AND c.context_id = k.c"
                .to_owned(),
            "contexts_pkey",
        ),
        (
            "GetContextVersion",
            format!("{VERSION} AND version = 500"),
            "context_versions_pkey",
        ),
        (
            "a run changed by name",
            "UPDATE runs SET status = 'FAILED' WHERE workspace_id = 'w' AND run_id = 'r00050000'"
                .to_owned(),
            "runs_pkey",
        ),
    ]
}

/// Every case: the lookups and each list page.
fn cases() -> Vec<Case> {
    let project = format!("{RUN} AND project_id = 'p'");
    let mut cases = lookups();
    cases.extend([
        (
            "ListRuns, first page",
            format!("{project} {RUN_PAGE}"),
            "runs_by_project",
        ),
        (
            "ListRuns, 99,000 runs deep",
            format!("{project} AND {DEEP_RUN} {RUN_PAGE}"),
            "runs_by_project",
        ),
        (
            "ListRuns in a time window, deep",
            format!(
                "{project} AND create_time > 1700000000000000 AND create_time < 1700000000000000 + 50000 * 1000000::bigint \
                 AND {DEEP_RUN} {RUN_PAGE}"
            ),
            "runs_by_project",
        ),
        (
            "ListRuns by status, deep",
            format!("{project} AND status = 'FAILED' AND {DEEP_RUN} {RUN_PAGE}"),
            "runs_by_status",
        ),
        (
            "ListRuns by agent, deep",
            format!("{project} AND agent_id = 'rare' AND {DEEP_RUN} {RUN_PAGE}"),
            "runs_by_agent",
        ),
        (
            "ListRuns by instance, deep",
            format!("{project} AND instance_id = 'i-rare' AND {DEEP_RUN} {RUN_PAGE}"),
            "runs_by_instance",
        ),
        (
            "ListRuns of a session, deep",
            format!("{project} AND session_id = 's0007' AND {DEEP_RUN} {RUN_PAGE}"),
            "runs_by_session",
        ),
        (
            "ListSessions, deep",
            format!(
                "{SESSION} AND (\"create_time\", \"session_id\") < (10, 's0010') \
                 ORDER BY \"create_time\" DESC, \"session_id\" DESC LIMIT 51"
            ),
            "sessions_by_time",
        ),
        (
            "ListSessions by instance, deep",
            format!(
                "{SESSION} AND instance_id = 'i3' AND (\"create_time\", \"session_id\") < (11, 's0011') \
                 ORDER BY \"create_time\" DESC, \"session_id\" DESC LIMIT 51"
            ),
            "sessions_by_instance",
        ),
        (
            "ListContexts, deep",
            format!("{CONTEXT} AND context_id > 'c0099000' ORDER BY context_id LIMIT 51"),
            "contexts_pkey",
        ),
        (
            "ListContexts by owner, deep",
            format!(
                "{CONTEXT} AND owner = 'i1' AND context_id > 'c0099000' ORDER BY context_id LIMIT 51"
            ),
            "contexts_by_owner",
        ),
        (
            "ListContextVersions, deep",
            format!("{VERSION} AND version < 100 ORDER BY version DESC LIMIT 51"),
            "context_versions_pkey",
        ),
        (
            "ListContextVersions by author, deep",
            format!(
                "{VERSION} AND author = 'rare' AND version < 100 ORDER BY version DESC LIMIT 51"
            ),
            "context_versions_by_author",
        ),
    ]);
    cases
}

/// Every node of a plan (depth first).
fn nodes<'p>(plan: &'p Value, out: &mut Vec<&'p Value>) {
    out.push(plan);
    if let Some(children) = plan.get("Plans").and_then(Value::as_array) {
        for child in children {
            nodes(child, out);
        }
    }
}

async fn check_plans(conn: &mut PgConnection, when: &str, cases: Vec<Case>) {
    let mut failures = Vec::new();
    for (what, sql, index) in cases {
        let explain = format!("EXPLAIN (FORMAT JSON) {sql}");
        let (plan,): (Value,) = sqlx::query_as(&explain)
            .fetch_one(&mut *conn)
            .await
            .unwrap_or_else(|e| panic!("{what}: {e}\n{sql}"));
        let root = &plan[0]["Plan"];
        let mut all = Vec::new();
        nodes(root, &mut all);
        let seq = all
            .iter()
            .any(|n| n["Node Type"] == "Seq Scan" && n["Relation Name"] != Value::Null);
        let indexes: Vec<&str> = all
            .iter()
            .filter_map(|n| n.get("Index Name").and_then(Value::as_str))
            .collect();
        if seq || indexes.is_empty() || indexes.iter().any(|i| *i != index) {
            failures.push(format!(
                "{when}: {what}: expected an index scan on {index} only, got {}",
                serde_json::to_string_pretty(root).unwrap()
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

/// A new Postgres database with the schema, and a connection to it.
async fn migrated() -> (FreshDatabase, PgConnection) {
    let db = fresh_database(Backend::Postgres).await;
    let store = Store::connect(&db.url, 1).await.expect("connect the store");
    store.migrate().await.expect("migrate");
    store.close().await;
    let conn = PgConnection::connect(&db.url).await.expect("connect");
    (db, conn)
}

#[tokio::test]
async fn lookups_and_list_pages_seek_on_their_index_before_and_after_analyze() {
    let (db, mut conn) = migrated().await;
    for table in TABLES {
        conn.execute(format!("ALTER TABLE {table} SET (autovacuum_enabled = false)").as_str())
            .await
            .expect("keep autovacuum from analyzing the table");
    }
    conn.execute(LOAD).await.expect("load the rows");
    let analyzed: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM pg_stat_user_tables WHERE relname = ANY($1) \
         AND (last_analyze IS NOT NULL OR last_autoanalyze IS NOT NULL)",
    )
    .bind(TABLES)
    .fetch_one(&mut conn)
    .await
    .expect("read the statistics state");
    assert_eq!(analyzed, 0, "no table is analyzed yet");
    check_plans(&mut conn, "before ANALYZE", cases()).await;
    conn.execute("ANALYZE").await.expect("ANALYZE");
    check_plans(&mut conn, "after ANALYZE", cases()).await;
    let _ = conn.close().await;
    db.drop_database().await;
}

/// A new database: every table empty and never analyzed, as when a server first starts.
/// A lookup by key costs the same through the key as through any index leading with
/// `workspace_id`, and the planner keeps the newest; connections keep the plans they
/// make now for their prepared statements until the tables are analyzed, so a wrong
/// choice here lasts while the tables grow. The keys of runs and sessions are the
/// newest of their tables (0013); those of contexts, versions and instances are not
/// (their filtered lists must win the same tie, see the migration).
#[tokio::test]
async fn run_and_session_lookups_take_the_key_on_an_empty_database() {
    let (db, mut conn) = migrated().await;
    let keys = ["runs_pkey", "sessions_pkey"];
    let lookups: Vec<Case> = lookups()
        .into_iter()
        .filter(|(_, _, index)| keys.contains(index))
        .collect();
    assert_eq!(lookups.len(), 5, "the run and session lookups");
    check_plans(&mut conn, "empty, never analyzed", lookups).await;
    // The generic plan of a prepared statement, as a pooled connection caches it.
    conn.execute("SET plan_cache_mode = force_generic_plan")
        .await
        .expect("generic plans");
    let prepared = [
        (
            "SELECT * FROM runs WHERE workspace_id = $1 AND run_id = $2 FOR NO KEY UPDATE",
            "runs_pkey",
        ),
        (
            "UPDATE runs SET status = $3 WHERE workspace_id = $1 AND run_id = $2",
            "runs_pkey",
        ),
        (
            "SELECT * FROM sessions WHERE workspace_id = $1 AND project_id = $2 \
             AND session_id = $3 FOR UPDATE",
            "sessions_pkey",
        ),
    ];
    for (i, (sql, index)) in prepared.into_iter().enumerate() {
        conn.execute(format!("PREPARE lookup{i} AS {sql}").as_str())
            .await
            .expect("prepare");
        let args = vec!["'w'"; sql.matches('$').count()].join(", ");
        let (plan,): (Value,) =
            sqlx::query_as(&format!("EXPLAIN (FORMAT JSON) EXECUTE lookup{i}({args})"))
                .fetch_one(&mut conn)
                .await
                .expect("explain");
        let mut all = Vec::new();
        nodes(&plan[0]["Plan"], &mut all);
        let indexes: Vec<&str> = all
            .iter()
            .filter_map(|n| n.get("Index Name").and_then(Value::as_str))
            .collect();
        assert_eq!(indexes, [index], "{sql}: {plan}");
    }
    let _ = conn.close().await;
    db.drop_database().await;
}
