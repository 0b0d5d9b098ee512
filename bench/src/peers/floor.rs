//! The floors any Postgres-backed design pays, run through pgbench (`-M prepared`) on a
//! database of their own: a versioned write (one head UPDATE and one 1 KiB jsonb INSERT
//! in one transaction) and a run (the four transactions of the API's four calls on a
//! minimal queue with an event log).

use sqlx::{Connection, Executor, PgConnection};

use crate::server::with_database;

/// A database with the floor's tables, fresh for each call.
pub async fn database(admin_url: &str) -> anyhow::Result<String> {
    let name = format!("floor_{}", uuid::Uuid::now_v7().simple());
    let mut admin = PgConnection::connect(admin_url).await?;
    admin
        .execute(format!("CREATE DATABASE \"{name}\"").as_str())
        .await?;
    admin.close().await?;
    let url = with_database(admin_url, &name);
    let mut db = PgConnection::connect(&url).await?;
    db.execute(SCHEMA).await?;
    db.close().await?;
    Ok(url)
}

const SCHEMA: &str = r#"
CREATE TABLE heads (id int PRIMARY KEY, version bigint NOT NULL);
CREATE TABLE versions (id int, version bigint, data jsonb NOT NULL, PRIMARY KEY (id, version));
INSERT INTO heads SELECT g, 0 FROM generate_series(0, 63) g;
CREATE TABLE runs (id bigserial PRIMARY KEY, status text NOT NULL);
CREATE INDEX runs_queued ON runs (id) WHERE status = 'QUEUED';
CREATE TABLE events (run_id bigint, seq int, body jsonb NOT NULL, PRIMARY KEY (run_id, seq));
"#;

/// A versioned write: the head's version moves and the new version's document is stored,
/// in one transaction.
pub const WRITE: &str = concat!(
    "BEGIN;\n",
    "UPDATE heads SET version = version + 1 WHERE id = :client_id RETURNING version \\gset\n",
    "INSERT INTO versions VALUES (:client_id, :version, '{\"doc\": \"",
    include_str!("kib.txt"),
    "\"}');\n",
    "END;\n",
);

/// A run as the four calls of the API, each its own transaction: create; claim the
/// oldest queued run (SKIP LOCKED; a claim that finds every queued run locked by other
/// claimers takes none, as a poller would wait); append 3 events; complete.
pub const RUN: &str = r#"INSERT INTO runs (status) VALUES ('QUEUED');
WITH claimed AS (UPDATE runs SET status = 'RUNNING' WHERE id = (SELECT id FROM runs WHERE status = 'QUEUED' ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED) RETURNING id) SELECT COALESCE((SELECT id FROM claimed), 0) AS id \gset
\if :id > 0
INSERT INTO events VALUES (:id, 1, '{"delta": "Hel"}'), (:id, 2, '{"delta": "lo, "}'), (:id, 3, '{"delta": "world"}');
UPDATE runs SET status = 'SUCCEEDED' WHERE id = :id;
\endif
"#;
