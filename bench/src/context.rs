//! The ContextService benchmark (issue: ContextService). Setup: one workspace, one
//! project, 32 contexts pre-filled past their retention (keep_last 50) so that every
//! measured write also raises the retention floor (and every 16th compacts), as in
//! steady state.
//!
//! Ceilings, measured in the same run:
//! - writes: pgbench running the statements the server runs for one WriteContext (key
//!   lookup, the locked transaction with head check, blob upsert, version insert, head
//!   update, compaction of one version, NOTIFY, audit record), at the same concurrency;
//! - reads: an empty gRPC call (`grpc.health.v1.Health/Check`) at the same concurrency,
//!   measured in alternating one-second slices with the reads (see `load::alternate`).
//!
//! Also printed, as a reference: pgbench running the head lookup a read waits for, once
//! per read (the server shares one lookup among concurrent reads), and for each gRPC
//! measurement the CPU time per call of the server, Postgres and this load generator.

use std::time::Duration;

use agentry_proto::v1 as pb;
use serde_json::json;
use sqlx::{Connection, PgConnection, Row};

use crate::{
    Cli, cpu,
    load::{alternate, drive},
    pgbench,
    server::{self, channel},
    stats::{Summary, ratio, report},
};

const CONCURRENCY: [usize; 2] = [1, 32];
pub(crate) const CHANNELS: usize = 4;
const KEEP_LAST: i32 = 50;
/// The store's `COMPACTION_BATCH`: the floor crossing a multiple of it compacts.
const COMPACTION_BATCH: i64 = 16;
/// The empty call and the reads are measured in alternating slices this long.
pub(crate) const SLICE: Duration = Duration::from_secs(1);

struct Measured {
    concurrency: usize,
    empty: (Summary, cpu::Times),
    reads: (Summary, cpu::Times),
    writes: (Summary, cpu::Times),
    pgbench_writes: f64,
    pgbench_lookups: f64,
}

fn cpu_line((summary, times): &(Summary, cpu::Times)) {
    println!("    CPU per call: {}", times.per_call(summary.ops));
}

fn value(v: serde_json::Value) -> prost_types::Value {
    use prost_types::value::Kind;
    let kind = match v {
        serde_json::Value::Null => Kind::NullValue(0),
        serde_json::Value::Bool(b) => Kind::BoolValue(b),
        serde_json::Value::Number(n) => Kind::NumberValue(n.as_f64().unwrap_or_default()),
        serde_json::Value::String(s) => Kind::StringValue(s),
        serde_json::Value::Array(a) => Kind::ListValue(prost_types::ListValue {
            values: a.into_iter().map(value).collect(),
        }),
        serde_json::Value::Object(o) => Kind::StructValue(prost_types::Struct {
            fields: o.into_iter().map(|(k, v)| (k, value(v))).collect(),
        }),
    };
    prost_types::Value { kind: Some(kind) }
}

/// A document of about `bytes` of canonical JSON whose `n` field varies. Field values
/// are pseudo-random hex, so that Postgres' compression does not flatter the storage
/// figures.
pub(crate) fn document(n: u64, bytes: usize) -> prost_types::Value {
    let fields = bytes / 64;
    let mut doc = serde_json::Map::new();
    doc.insert("n".into(), json!(n));
    let mut state = 0x9E37_79B9_7F4A_7C15_u64;
    for i in 0..fields {
        let text: String = (0..3)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                format!("{state:016x}")
            })
            .collect();
        doc.insert(format!("field_{i:03}"), json!(text));
    }
    value(serde_json::Value::Object(doc))
}

pub(crate) fn context_name(i: usize) -> String {
    format!("workspaces/bench/projects/p/contexts/c{i}")
}

pub async fn run(cli: &Cli) -> anyhow::Result<()> {
    let root = format!("bench-root-{}", uuid::Uuid::now_v7().simple());
    let server = server::start(&cli.binary, &cli.database_url, &root).await?;
    let duration = Duration::from_secs(cli.seconds);
    let channels: Vec<_> =
        futures::future::try_join_all((0..CHANNELS).map(|_| channel(&server.addr))).await?;

    let (key, key_name) = prepare_contexts(&server).await?;
    let clients: Vec<_> = channels
        .iter()
        .map(|c| server::contexts(c.clone(), &key))
        .collect();
    println!(
        "context benchmark: {} s per measurement, server {} on Postgres, 1 KiB documents, keep_last {KEEP_LAST}\n",
        cli.seconds, server.addr
    );

    let meter = cpu::Meter::new(server.pid())
        .for_cluster(&server.database_url)
        .await?;
    let mut results = Vec::new();
    for concurrency in CONCURRENCY {
        settle(&server.database_url).await?;
        let health: Vec<_> = channels
            .iter()
            .map(|c| tonic_health::pb::health_client::HealthClient::new(c.clone()))
            .collect();
        let readers = clients.clone();
        let ([empty, reads], _) = alternate(
            concurrency,
            duration,
            SLICE,
            &meter,
            move |worker, _| {
                let mut client = health[worker % CHANNELS].clone();
                async move {
                    client
                        .check(tonic_health::pb::HealthCheckRequest::default())
                        .await?;
                    Ok(())
                }
            },
            move |worker, _| {
                let mut client = readers[worker % CHANNELS].clone();
                async move {
                    client
                        .read_context(pb::ReadContextRequest {
                            name: context_name(worker),
                            version: 0,
                        })
                        .await?;
                    Ok(())
                }
            },
        )
        .await?;
        settle(&server.database_url).await?;
        let writers = clients.clone();
        let before = meter.now();
        let writes = drive(concurrency, duration, move |worker, i| {
            let mut client = writers[worker % CHANNELS].clone();
            async move { write(&mut client, worker, 1_000_000 + i).await }
        })
        .await?;
        let write_cpu = meter.now().since(&before);
        let key_id = key_name.rsplit('/').next().unwrap_or_default();
        let write_sql = pgbench_script(key_id, &key_name);
        settle(&server.database_url).await?;
        let pgbench_writes =
            pgbench::reference(cli, &server.database_url, &write_sql, &[], concurrency);
        settle(&server.database_url).await?;
        let pgbench_lookups = pgbench::reference(
            cli,
            &server.database_url,
            HEAD_LOOKUP_SCRIPT,
            &[],
            concurrency,
        );
        results.push(Measured {
            concurrency,
            empty,
            reads,
            writes: (writes, write_cpu),
            pgbench_writes,
            pgbench_lookups,
        });
    }

    for m in &results {
        println!("— {} concurrent client(s)", m.concurrency);
        report("  empty gRPC call (health Check) [ceiling]", &m.empty.0);
        cpu_line(&m.empty);
        report("  ReadContext head", &m.reads.0);
        cpu_line(&m.reads);
        println!(
            "  {:<42} {:>9.0} tx/s   (pgbench -M prepared, one per read) [reference]",
            "pgbench: the head lookup", m.pgbench_lookups
        );
        report("  WriteContext replace 1 KiB", &m.writes.0);
        cpu_line(&m.writes);
        println!(
            "  {:<42} {:>9.0} tx/s   (pgbench -M prepared, same statements) [ceiling]",
            "pgbench: the WriteContext transaction", m.pgbench_writes
        );
        ratio(
            "  reads / empty call",
            m.reads.0.per_second,
            m.empty.0.per_second,
            0.4,
        );
        ratio(
            "  writes / pgbench",
            m.writes.0.per_second,
            m.pgbench_writes,
            0.5,
        );
        println!();
    }
    storage(&clients[0], &server.database_url).await
}

/// A workspace `bench`, an ADMIN key, and 32 contexts of 1 KiB documents with
/// `KEEP_LAST` versions each, made through the API as a real caller would. Returns the
/// key's secret and its resource name.
pub(crate) async fn prepare_contexts(server: &server::Server) -> anyhow::Result<(String, String)> {
    let root = &server.root_key;
    // Setup through the API, with an ADMIN key as a real caller would use.
    let mut registry = server::registry(channel(&server.addr).await?, root);
    registry
        .create_workspace(pb::CreateWorkspaceRequest {
            workspace_id: "bench".into(),
            workspace: Some(pb::Workspace::default()),
            request_id: String::new(),
        })
        .await?;
    registry
        .create_project(pb::CreateProjectRequest {
            parent: "workspaces/bench".into(),
            project_id: "p".into(),
            project: Some(pb::Project::default()),
            request_id: String::new(),
        })
        .await?;
    let created = registry
        .create_api_key(pb::CreateApiKeyRequest {
            parent: "workspaces/bench".into(),
            api_key: Some(pb::ApiKey {
                role: pb::Role::Admin as i32,
                ..Default::default()
            }),
            request_id: String::new(),
        })
        .await?
        .into_inner();
    let key = created.secret;
    let key_name = created.api_key.map(|k| k.name).unwrap_or_default();
    let mut setup = server::contexts(channel(&server.addr).await?, &key);
    for i in 0..32 {
        setup
            .create_context(pb::CreateContextRequest {
                parent: "workspaces/bench/projects/p".into(),
                context_id: format!("c{i}"),
                context: Some(pb::Context {
                    keep_last: KEEP_LAST,
                    ..Default::default()
                }),
                data: Some(document(0, 1024)),
                request_id: String::new(),
            })
            .await?;
        for n in 1..=KEEP_LAST as u64 {
            write(&mut setup, i, n).await?;
        }
    }
    Ok((key, key_name))
}

async fn write(client: &mut server::Contexts, context: usize, n: u64) -> anyhow::Result<()> {
    client
        .write_context(pb::WriteContextRequest {
            name: context_name(context),
            change: Some(pb::write_context_request::Change::Data(document(n, 1024))),
            ..Default::default()
        })
        .await?;
    Ok(())
}

/// The SQL the server runs for one WriteContext (no request_id, so no idempotency
/// lookup), in steady state where each write raises the floor by one version and every
/// `COMPACTION_BATCH`-th deletes what lies below it (`contexts/write.rs`).
/// The server's wake-up for other replicas is sent after commit, batched across
/// writers, so it is not part of a write's transaction.
fn pgbench_script(key_id: &str, author: &str) -> String {
    // A JSON object, like a real document: reads that follow find these versions at
    // the head.
    let doc = format!(r#"{{"x":"{}"}}"#, "x".repeat(1016));
    format!(
        r#"\set r random(1, 9000000000000000000)
SELECT workspace_id, key_id, display_name, role, secret_hash, create_time, expire_time, revoke_time FROM api_keys WHERE workspace_id = 'bench' AND key_id = '{key_id}';
BEGIN;
SELECT c.workspace_id, c.project_id, c.context_id, c.owner, c.description, c.keep_last, c.head_version, c.floor_version, c.labels, c.create_time, c.update_time, (SELECT w.quotas FROM workspaces w WHERE w.workspace_id = c.workspace_id) AS quotas, (SELECT v.version || ' ' || v.sha256 || CASE WHEN false THEN ' ' || b.data ELSE '' END FROM context_versions v LEFT JOIN context_blobs b ON false AND b.workspace_id = v.workspace_id AND b.project_id = v.project_id AND b.context_id = v.context_id AND b.sha256 = v.sha256 WHERE v.workspace_id = c.workspace_id AND v.project_id = c.project_id AND v.context_id = c.context_id AND v.version = c.head_version) AS head FROM contexts c WHERE c.workspace_id = 'bench' AND c.project_id = 'p' AND c.context_id = 'c' || :client_id FOR UPDATE OF c \gset ctx_
\set next :ctx_head_version + 1
\set floor greatest(:next - {keep}, :ctx_floor_version)
WITH blob AS (INSERT INTO context_blobs (workspace_id, project_id, context_id, sha256, data, size_bytes, refs, create_time) VALUES ('bench', 'p', 'c' || :client_id, 'pgbench-' || :r, '{doc}', 1024, 1, 0) ON CONFLICT (workspace_id, project_id, context_id, sha256) DO UPDATE SET refs = context_blobs.refs + 1), version AS (INSERT INTO context_versions (workspace_id, project_id, context_id, version, op, rollback_of, sha256, size_bytes, author, description, request_id, create_time) VALUES ('bench', 'p', 'c' || :client_id, :next, 'REPLACE', 0, 'pgbench-' || :r, 1024, '{author}', '', '', 0)), head AS (UPDATE contexts SET head_version = :next, floor_version = :floor, update_time = 0 WHERE workspace_id = 'bench' AND project_id = 'p' AND context_id = 'c' || :client_id) INSERT INTO audit_log (workspace_id, audit_id, create_time, principal, method, resource, request_id, outcome) SELECT 'bench', 'pgbench-' || :r, 0, '{author}', 'WriteContext', 'workspaces/bench/projects/p/contexts/c', '', 'OK' WHERE true;
\if :floor / {batch} > :ctx_floor_version / {batch}
WITH gone AS (DELETE FROM context_versions WHERE workspace_id = 'bench' AND project_id = 'p' AND context_id = 'c' || :client_id AND version < :floor RETURNING sha256), released AS (SELECT b.sha256, b.refs - count(*) AS refs FROM gone g JOIN context_blobs b ON b.workspace_id = 'bench' AND b.project_id = 'p' AND b.context_id = 'c' || :client_id AND b.sha256 = g.sha256 GROUP BY b.sha256, b.refs), kept AS (UPDATE context_blobs b SET refs = r.refs FROM released r WHERE b.workspace_id = 'bench' AND b.project_id = 'p' AND b.context_id = 'c' || :client_id AND b.sha256 = r.sha256 AND r.refs > 0) DELETE FROM context_blobs b USING released r WHERE b.workspace_id = 'bench' AND b.project_id = 'p' AND b.context_id = 'c' || :client_id AND b.sha256 = r.sha256 AND r.refs <= 0;
\endif
COMMIT;
"#,
        keep = KEEP_LAST - 1,
        batch = COMPACTION_BATCH,
    )
}

/// The statement a ReadContext of the head waits for (`contexts/heads.rs`), one per
/// read: the server shares one among concurrent reads, pgbench runs it for each.
const HEAD_LOOKUP_SCRIPT: &str = r#"\set i random(0, 31)
SELECT 1::bigint, create_time, head_version, floor_version FROM contexts WHERE workspace_id = 'bench' AND project_id = 'p' AND context_id = 'c' || :i;
"#;

/// Starts the next measurement from a vacuumed database, as pgbench does by default:
/// otherwise the dead rows of the phase before (thousands of updates to 32 context rows,
/// versions inserted and compacted) are vacuumed during the next one, which then pays
/// for them (seen as one-client reads at 1.9–2.1k/s after the write phase, 2.5–2.6k/s
/// without it).
async fn settle(database_url: &str) -> anyhow::Result<()> {
    let mut db = PgConnection::connect(database_url).await?;
    sqlx::query("VACUUM (ANALYZE) contexts, context_versions, context_blobs, audit_log")
        .execute(&mut db)
        .await?;
    db.close().await?;
    Ok(())
}

/// Storage per version for 1000 small edits of a 10 KiB document: the canonical bytes
/// of the distinct documents, and what Postgres stores for them and for the version rows
/// (`pg_column_size`, after TOAST compression).
async fn storage(client: &server::Contexts, database_url: &str) -> anyhow::Result<()> {
    let mut client = client.clone();
    let mut db = PgConnection::connect(database_url).await?;
    client
        .create_context(pb::CreateContextRequest {
            parent: "workspaces/bench/projects/p".into(),
            context_id: "storage".into(),
            context: Some(pb::Context {
                keep_last: 2000,
                ..Default::default()
            }),
            data: Some(document(0, 10 * 1024)),
            request_id: String::new(),
        })
        .await?;
    for n in 1..=1000u64 {
        client
            .write_context(pb::WriteContextRequest {
                name: "workspaces/bench/projects/p/contexts/storage".into(),
                change: Some(pb::write_context_request::Change::MergePatch(value(
                    json!({"n": n}),
                ))),
                ..Default::default()
            })
            .await?;
    }
    let row = sqlx::query(
        "WITH used AS (SELECT DISTINCT sha256 FROM context_versions WHERE workspace_id = 'bench' AND context_id = 'storage') \
         SELECT COALESCE(SUM(b.size_bytes), 0)::BIGINT, COALESCE(SUM(pg_column_size(b.data)), 0)::BIGINT, \
                (SELECT COALESCE(SUM(pg_column_size(v.*)), 0)::BIGINT FROM context_versions v \
                 WHERE v.workspace_id = 'bench' AND v.context_id = 'storage') \
         FROM context_blobs b JOIN used USING (sha256) WHERE b.workspace_id = 'bench' AND b.context_id = 'storage'",
    )
    .fetch_one(&mut db)
    .await?;
    let (canonical, stored, versions): (i64, i64, i64) = (row.get(0), row.get(1), row.get(2));
    let per = |bytes: i64| bytes as f64 / 1001.0;
    println!("— storage, 1000 merge-patch edits of one field of a 10 KiB document (1001 versions)");
    println!(
        "  canonical document bytes per version  {:>9.0} B (one blob per distinct document)",
        per(canonical)
    );
    println!(
        "  stored document bytes per version     {:>9.0} B (pg_column_size, after TOAST compression)",
        per(stored)
    );
    println!(
        "  version row bytes per version         {:>9.0} B",
        per(versions)
    );
    Ok(())
}
