//! Where a context read lands (`context_read_target`): on Postgres concurrent reads
//! share one head lookup, which must never answer a read with a head older than a write
//! that finished before the read began, nor strand a read whose batch's leader went away.

use std::{sync::Arc, time::Duration};

use agentry_core::port::{ContextReads, ContextStore, ContextWrites, ProjectStore};
use agentry_core::{Error, names::ContextName};
use agentry_store::{ContextChange, ContextWrite, NewContext, Store};
use serde_json::json;

use super::*;

pub(super) fn context_name(id: &str) -> ContextName {
    ContextName {
        workspace: "acme".into(),
        project: "web".into(),
        context: id.into(),
    }
}

/// Workspace `acme`, project `web`, and contexts with the given ids, each at version 1.
pub(super) async fn setup(store: &Store, ids: &[&str], keep_last: i32) {
    workspace(store, "acme", Quotas::default()).await;
    store
        .create_project(
            &mutation("acme", "CreateProject", "web", "", b""),
            new_project("acme", "web"),
        )
        .await
        .expect("project");
    for id in ids {
        create(store, id, keep_last, Some(json!({"n": 0}))).await;
    }
}

async fn create(store: &Store, id: &str, keep_last: i32, data: Option<serde_json::Value>) {
    store
        .create_context(
            &mutation("acme", "CreateContext", id, "", b""),
            NewContext {
                name: context_name(id),
                owner: None,
                description: String::new(),
                keep_last,
                labels: Default::default(),
                data,
            },
        )
        .await
        .expect("context");
}

async fn write(store: &Store, id: &str, n: i64) -> i64 {
    store
        .write_context(
            &mutation("acme", "WriteContext", id, "", b""),
            &context_name(id),
            ContextWrite {
                change: ContextChange::Replace(json!({ "n": n })),
                expected_version: None,
                description: String::new(),
            },
        )
        .await
        .expect("write")
        .version
        .version
}

conformance!(read_targets_resolve_or_fail_as_reads_do, |store, _db| {
    setup(&store, &["kept"], 2).await;
    create(&store, "blank", 2, None).await;
    for n in 1..=4 {
        write(&store, "kept", n).await;
    }
    // Versions 1..=5 written, keep_last 2: 4 and 5 remain.
    let (head, version) = store
        .context_read_target(&context_name("kept"), None)
        .await
        .unwrap();
    assert_eq!((head.head_version, head.floor_version, version), (5, 4, 5));
    let (_, version) = store
        .context_read_target(&context_name("kept"), Some(4))
        .await
        .unwrap();
    assert_eq!(version, 4);
    let compacted = store
        .context_read_target(&context_name("kept"), Some(3))
        .await
        .unwrap_err();
    assert_eq!(compacted.reason(), "VERSION_COMPACTED");
    let beyond = store
        .context_read_target(&context_name("kept"), Some(6))
        .await
        .unwrap_err();
    assert!(matches!(beyond, Error::NotFound { .. }), "{beyond:?}");
    let empty = store
        .context_read_target(&context_name("blank"), None)
        .await
        .unwrap_err();
    assert_eq!(empty.reason(), "CONTEXT_EMPTY");
    let missing = store
        .context_read_target(&context_name("nope"), None)
        .await
        .unwrap_err();
    assert!(matches!(missing, Error::NotFound { .. }), "{missing:?}");
});

conformance!(
    a_read_that_starts_after_a_write_returned_sees_it,
    |store, _db| {
        let ids = ["a", "b", "c", "d"];
        setup(&store, &ids, 1000).await;
        let store = Arc::new(store);
        // Readers on every context keep lookups batched while one writer per context
        // checks its own writes; every reader checks that heads never go backwards.
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let mut readers = Vec::new();
        for r in 0..16 {
            let (store, stop) = (store.clone(), stop.clone());
            readers.push(tokio::spawn(async move {
                let name = context_name(ids[r % ids.len()]);
                let mut last = 0;
                let mut reads = 0;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let (head, _) = store.context_read_target(&name, None).await.unwrap();
                    assert!(head.head_version >= last, "head went back from {last}");
                    last = head.head_version;
                    reads += 1;
                }
                reads
            }));
        }
        let mut writers = Vec::new();
        for id in ids {
            let store = store.clone();
            writers.push(tokio::spawn(async move {
                for n in 1..=60 {
                    let written = write(&store, id, n).await;
                    let (head, version) = store
                        .context_read_target(&context_name(id), None)
                        .await
                        .unwrap();
                    assert_eq!(version, written, "{id}: a read after write {n} missed it");
                    assert_eq!(head.head_version, written);
                }
            }));
        }
        // A stranded lookup fails the test instead of hanging it.
        // A stranded lookup fails the test instead of hanging it.
        for writer in writers {
            tokio::time::timeout(Duration::from_secs(60), writer)
                .await
                .expect("a writer's read was stranded")
                .unwrap();
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let mut reads = 0;
        for reader in readers {
            reads += tokio::time::timeout(Duration::from_secs(60), reader)
                .await
                .expect("a read was stranded")
                .unwrap();
        }
        assert!(reads > 0);
    }
);

conformance!(
    reads_whose_leader_goes_away_are_still_answered,
    |store, _db| {
        let ids = ["a", "b"];
        setup(&store, &ids, 10).await;
        let store = Arc::new(store);
        for round in 0..20 {
            let mut kept = Vec::new();
            for i in 0..24 {
                let store = store.clone();
                let task = tokio::spawn(async move {
                    store
                        .context_read_target(&context_name(ids[i % 2]), None)
                        .await
                });
                if i % 3 == 0 {
                    // Gone mid-lookup (or before it began): possibly the batch's leader.
                    tokio::task::yield_now().await;
                    task.abort();
                } else {
                    kept.push(task);
                }
            }
            for task in kept {
                let answered = tokio::time::timeout(Duration::from_secs(10), task)
                    .await
                    .unwrap_or_else(|_| panic!("round {round}: a read was stranded"))
                    .unwrap()
                    .unwrap();
                assert_eq!(answered.1, 1);
            }
        }
    }
);

conformance!(
    reads_and_writes_survive_postgres_dropping_every_connection,
    |store, db| {
        setup(&store, &["c"], 10).await;
        store
            .context_read_target(&context_name("c"), None)
            .await
            .unwrap();
        if db.backend == Backend::Postgres {
            // As after a Postgres restart: every connection of the store is gone.
            db.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
                 WHERE datname = current_database() AND pid <> pg_backend_pid()",
            )
            .await
            .unwrap();
            // Long enough that both the pool and the head lookups ping before use.
            tokio::time::sleep(Duration::from_millis(1100)).await;
        }
        let (head, _) = store
            .context_read_target(&context_name("c"), None)
            .await
            .expect("the head lookup reconnects");
        assert_eq!(head.head_version, 1);
        assert_eq!(
            write(&store, "c", 7).await,
            2,
            "the pool replaces its connections"
        );
        let (head, _) = store
            .context_read_target(&context_name("c"), None)
            .await
            .unwrap();
        assert_eq!(head.head_version, 2);
    }
);

conformance!(
    a_forced_project_delete_leaves_no_document_of_a_write_it_waited_for,
    |store, db| {
        if db.backend != Backend::Postgres {
            return; // SQLite runs one writer at a time: no write commits in between.
        }
        setup(&store, &["c"], 2).await;
        // A write in flight: it holds the context's row lock and has stored its
        // document, but not committed yet.
        use sqlx::Connection as _;
        let mut writer = sqlx::PgConnection::connect(&db.url).await.unwrap();
        for sql in [
            "BEGIN",
            "SELECT 1 FROM contexts WHERE context_id = 'c' FOR UPDATE",
            "INSERT INTO context_blobs (workspace_id, project_id, context_id, sha256, data, \
             size_bytes, refs, create_time) VALUES ('acme', 'web', 'c', 'late', '{}', 2, 1, 0)",
        ] {
            sqlx::query(sql).execute(&mut writer).await.unwrap();
        }
        let project = agentry_core::names::ProjectName {
            workspace: "acme".into(),
            project: "web".into(),
        };
        let guard = agentry_core::port::DeleteGuard {
            force: true,
            ..Default::default()
        };
        let m = mutation("acme", "DeleteProject", "web", "", b"");
        let (deleted, ()) = tokio::join!(store.delete_project(&m, &project, &guard), async {
            // Long enough for the delete to reach the context and wait for its lock.
            tokio::time::sleep(Duration::from_millis(300)).await;
            sqlx::query("COMMIT").execute(&mut writer).await.unwrap();
        });
        deleted.expect("deleted");
        assert_eq!(db.count("contexts").await, 0);
        assert_eq!(
            db.count("context_blobs").await,
            0,
            "a document outlived its project"
        );
    }
);

conformance!(
    versions_stay_immutable_and_go_with_their_context,
    |store, db| {
        // Postgres checks compaction's deletes once per statement and cascades a deleted
        // context to its versions by trigger (migration 0014); SQLite per row and by
        // foreign key. Either way: no version changes, none at or above the retention
        // floor goes, all go with their context.
        setup(&store, &["c", "d"], 2).await;
        for n in 1..=20 {
            write(&store, "c", n).await;
            write(&store, "d", n).await;
        }
        // keep_last 2 of 21 versions: compaction removed the first ones below the floor
        // (20), in a batch when the floor crossed 16; 16 to 19 still wait below it.
        let kept = |id: &str| format!("context_versions WHERE context_id = '{id}'");
        let (c_kept, d_kept) = (db.count(&kept("c")).await, db.count(&kept("d")).await);
        assert!((2..21).contains(&c_kept), "c keeps {c_kept} versions");
        assert_eq!(c_kept, d_kept);
        for sql in [
            "UPDATE context_versions SET description = 'x' WHERE context_id = 'c'",
            "DELETE FROM context_versions WHERE context_id = 'c' AND version = 21",
            // Rows below the floor, which compaction may delete, with the two above it:
            // the statement fails whole.
            "DELETE FROM context_versions WHERE context_id = 'd'",
        ] {
            let refused = db.execute(sql).await;
            assert!(refused.is_err(), "{sql} was allowed");
        }
        assert_eq!(db.count(&kept("c")).await, c_kept, "nothing of c changed");
        assert_eq!(db.count(&kept("d")).await, d_kept, "nothing of d changed");
        store
            .delete_context(
                &mutation("acme", "DeleteContext", "c", "", b""),
                &context_name("c"),
            )
            .await
            .expect("delete c");
        assert_eq!(db.count(&kept("c")).await, 0, "c's versions went with it");
        assert_eq!(db.count(&kept("d")).await, d_kept, "d is untouched");
        assert_eq!(write(&store, "d", 99).await, 22, "d is still written");
    }
);
