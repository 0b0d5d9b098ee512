//! Upgrades: a database written under earlier migrations keeps its data through the
//! later ones, on both back ends.

use std::{borrow::Cow, path::Path, str::FromStr};

use agentry_e2e::{Backend, fresh_database};
use agentry_store::Store;
use sqlx::{
    Connection, Executor, PgConnection, SqliteConnection, migrate::Migrator,
    sqlite::SqliteConnectOptions,
};

/// The migrations of `backend` up to and including `last`.
async fn migrations_up_to(backend: Backend, last: i64) -> Migrator {
    let dir = match backend {
        Backend::Postgres => "postgres",
        Backend::Sqlite => "sqlite",
    };
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../migrations")
        .join(dir);
    let mut migrator = Migrator::new(path).await.expect("read the migrations");
    let kept: Vec<_> = migrator
        .iter()
        .filter(|m| m.version <= last)
        .cloned()
        .collect();
    migrator.migrations = Cow::Owned(kept);
    migrator
}

/// Two contexts of one workspace sharing one document, as migration 0004 stored them:
/// one blob row per workspace and document, counting the versions of every context.
const SHARED_BLOBS: &str = "\
INSERT INTO workspaces (workspace_id, display_name, description, quotas, labels, etag, \
create_time, update_time) VALUES ('w', '', '', '{}', '{}', 1, 0, 0);
INSERT INTO projects (workspace_id, project_id, display_name, description, labels, etag, \
create_time, update_time) VALUES ('w', 'p', '', '', '{}', 1, 0, 0);
INSERT INTO contexts (workspace_id, project_id, context_id, owner, description, keep_last, \
head_version, floor_version, labels, create_time, update_time) VALUES \
('w', 'p', 'a', '', '', 50, 3, 1, '{}', 0, 0), ('w', 'p', 'b', '', '', 50, 1, 1, '{}', 0, 0), \
('w', 'p', 'c', '', '', 50, 0, 0, '{}', 0, 0);
INSERT INTO context_versions (workspace_id, project_id, context_id, version, op, rollback_of, \
sha256, size_bytes, author, description, request_id, create_time) VALUES \
('w', 'p', 'a', 1, 'REPLACE', 0, 's1', 2, '', '', '', 1), \
('w', 'p', 'a', 2, 'REPLACE', 0, 's2', 7, '', '', '', 2), \
('w', 'p', 'a', 3, 'ROLLBACK', 1, 's1', 2, '', '', '', 3), \
('w', 'p', 'b', 1, 'REPLACE', 0, 's1', 2, '', '', '', 4);
INSERT INTO context_blobs (workspace_id, sha256, data, size_bytes, refs, create_time) VALUES \
('w', 's1', '{}', 2, 3, 1), ('w', 's2', '{\"x\":1}', 7, 1, 2);";

const BLOBS: &str = "SELECT context_id, sha256, data, size_bytes, refs FROM context_blobs \
ORDER BY context_id, sha256";

type BlobRow = (String, String, String, i64, i64);

const HEADS: &str = "SELECT context_id, head_sha256 FROM contexts ORDER BY context_id";

/// Migrations 1-4 on `$conn`, the old rows, then the store's own migrations (all of
/// them, as a server start runs them); answers the blob rows and the contexts' head
/// hashes as they are then.
macro_rules! upgrade {
    ($conn:expr, $old:expr, $url:expr) => {{
        let mut conn = $conn.await.expect("connect");
        $old.run(&mut conn).await.expect("migrations 1-4");
        conn.execute(SHARED_BLOBS)
            .await
            .expect("write the old rows");
        let store = Store::connect($url, 2).await.expect("connect the store");
        store
            .migrate()
            .await
            .expect("migrate to the current schema");
        store.close().await;
        let blobs: Vec<BlobRow> = sqlx::query_as(BLOBS)
            .fetch_all(&mut conn)
            .await
            .expect("read");
        let heads: Vec<(String, String)> = sqlx::query_as(HEADS)
            .fetch_all(&mut conn)
            .await
            .expect("read");
        (blobs, heads)
    }};
}

async fn upgrade_story(backend: Backend) {
    let db = fresh_database(backend).await;
    let old = migrations_up_to(backend, 4).await;
    let (blobs, heads) = match backend {
        Backend::Postgres => upgrade!(PgConnection::connect(&db.url), old, &db.url),
        Backend::Sqlite => {
            let options = SqliteConnectOptions::from_str(&db.url)
                .expect("sqlite url")
                .create_if_missing(true);
            upgrade!(SqliteConnection::connect_with(&options), old, &db.url)
        }
    };
    let row = |c: &str, s: &str, d: &str, size: i64, refs: i64| -> BlobRow {
        (c.into(), s.into(), d.into(), size, refs)
    };
    assert_eq!(
        blobs,
        vec![
            row("a", "s1", "{}", 2, 2),
            row("a", "s2", "{\"x\":1}", 7, 1),
            row("b", "s1", "{}", 2, 1),
        ],
        "0005 gives each context its own blobs, counting only its own versions"
    );
    let head = |c: &str, s: &str| (c.to_owned(), s.to_owned());
    assert_eq!(
        heads,
        vec![head("a", "s1"), head("b", "s1"), head("c", "")],
        "0012 records each context's head hash on its row (none without versions)"
    );
}

#[tokio::test]
async fn blobs_shared_across_contexts_become_one_per_context_on_postgres() {
    upgrade_story(Backend::Postgres).await;
}

#[tokio::test]
async fn blobs_shared_across_contexts_become_one_per_context_on_sqlite() {
    upgrade_story(Backend::Sqlite).await;
}
