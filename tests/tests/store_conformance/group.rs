//! Concurrent context writes, which on Postgres share transactions (group commit): each
//! keeps its own CAS, its own failure, its own request id, audit record and wake-up.

use agentry_core::port::{ChangeFeed, ContextWrites};
use agentry_core::{Error, wake::WakeKey};
use agentry_store::{ContextChange, ContextWrite, Store};
use futures::future::join_all;
use serde_json::json;

use super::contexts::{context_name, setup};
use super::*;

fn replace(n: i64, expected: Option<i64>) -> ContextWrite {
    ContextWrite {
        change: ContextChange::Replace(json!({ "n": n })),
        expected_version: expected,
        description: String::new(),
    }
}

async fn write_as(
    store: &Store,
    id: &str,
    request_id: &str,
    hash: &[u8],
    write: ContextWrite,
) -> Result<i64, Error> {
    store
        .write_context(
            &mutation("acme", "WriteContext", id, request_id, hash),
            &context_name(id),
            write,
        )
        .await
        .map(|outcome| outcome.version.version)
}

/// Versions 1..=head of `id` are stored, each once (keep_last covers them all).
async fn assert_gapless(db: &agentry_e2e::FreshDatabase, id: &str, head: i64) {
    let stored = db
        .count(&format!(
            "context_versions WHERE context_id = '{id}' AND version BETWEEN 1 AND {head}"
        ))
        .await;
    assert_eq!(stored, head, "{id}: versions 1..={head}");
    let beyond = db
        .count(&format!(
            "context_versions WHERE context_id = '{id}' AND version > {head}"
        ))
        .await;
    assert_eq!(beyond, 0, "{id}: nothing beyond {head}");
}

fn conflict_at(e: &Error) -> Option<String> {
    match e {
        Error::Aborted {
            reason: "VERSION_CONFLICT",
            metadata,
            ..
        } => metadata.get("current_version").cloned(),
        _ => None,
    }
}

conformance!(concurrent_cas_writers_keep_versions_gapless, |store, db| {
    let own: Vec<String> = (0..12).map(|i| format!("own{i}")).collect();
    let mut ids: Vec<&str> = own.iter().map(String::as_str).collect();
    ids.push("shared");
    setup(&store, &ids, 1000).await;
    // Each writer on its own context: every CAS write wins.
    let writers = own.iter().map(|id| {
        let store = store.clone();
        async move {
            for n in 1..=10 {
                write_as(&store, id, "", b"", replace(n, Some(n))).await?;
            }
            Ok::<_, Error>(())
        }
    });
    for done in join_all(writers).await {
        done.expect("a CAS write on its own context");
    }
    for id in &own {
        assert_gapless(&db, id, 11).await;
    }
    // Many writers on one context, all expecting the same head: one winner per round.
    for round in 1..=5i64 {
        let attempts = (0..16).map(|n| {
            write_as(
                &store,
                "shared",
                "",
                b"",
                replace(round * 100 + n, Some(round)),
            )
        });
        let results = join_all(attempts).await;
        let won: Vec<i64> = results
            .iter()
            .filter_map(|r| r.as_ref().ok().copied())
            .collect();
        assert_eq!(won, vec![round + 1], "round {round}: {results:?}");
        for lost in results.iter().filter_map(|r| r.as_ref().err()) {
            assert_eq!(
                conflict_at(lost).as_deref(),
                Some((round + 1).to_string().as_str()),
                "{lost:?}"
            );
        }
    }
    assert_gapless(&db, "shared", 6).await;
    // 12 × 10 + 5 writes, each audited once.
    assert_eq!(
        db.count("audit_log WHERE method = 'WriteContext'").await,
        125
    );
});

conformance!(a_failing_write_fails_alone, |store, db| {
    setup(&store, &["a", "b", "c", "patched", "stale", "big"], 100).await;
    let bad_patch: Vec<agentry_core::document::PatchOp> =
        serde_json::from_value(json!([{"op": "test", "path": "/n", "value": 99}])).unwrap();
    let huge = json!({ "x": "y".repeat(1_100_000) });
    let patch = |ops| ContextWrite {
        change: ContextChange::JsonPatch(ops),
        expected_version: None,
        description: String::new(),
    };
    let to_big = ContextWrite {
        change: ContextChange::Replace(huge),
        expected_version: None,
        description: String::new(),
    };
    let results = join_all([
        write_as(&store, "a", "", b"", replace(1, Some(1))),
        write_as(&store, "patched", "", b"", patch(bad_patch)),
        write_as(&store, "b", "", b"", replace(1, None)),
        write_as(&store, "stale", "", b"", replace(1, Some(7))),
        write_as(&store, "missing", "", b"", replace(1, None)),
        write_as(&store, "big", "", b"", to_big),
        write_as(&store, "c", "", b"", replace(0, Some(1))),
    ])
    .await;
    assert_eq!(results[0].as_ref().ok(), Some(&2), "{results:?}");
    assert!(
        matches!(
            results[1],
            Err(Error::FailedPrecondition { .. } | Error::InvalidArgument { .. })
        ),
        "{:?}",
        results[1]
    );
    assert_eq!(results[2].as_ref().ok(), Some(&2), "{results:?}");
    assert_eq!(
        conflict_at(results[3].as_ref().unwrap_err()).as_deref(),
        Some("1")
    );
    assert!(
        matches!(results[4], Err(Error::NotFound { .. })),
        "{:?}",
        results[4]
    );
    assert!(
        matches!(results[5], Err(Error::InvalidArgument { .. })),
        "{:?}",
        results[5]
    );
    // The same document as the head: a no-op, answered with the head.
    assert_eq!(results[6].as_ref().ok(), Some(&1), "{results:?}");
    for (id, head) in [
        ("a", 2),
        ("b", 2),
        ("c", 1),
        ("patched", 1),
        ("stale", 1),
        ("big", 1),
    ] {
        assert_gapless(&db, id, head).await;
    }
    // Audited: the two writes and the no-op.
    assert_eq!(db.count("audit_log WHERE method = 'WriteContext'").await, 3);
});

conformance!(request_ids_replay_within_and_across_batches, |store, db| {
    setup(&store, &["a", "b"], 100).await;
    let first = write_as(&store, "a", "r-1", b"h1", replace(1, Some(1))).await;
    assert_eq!(first.as_ref().ok(), Some(&2));
    let results = join_all([
        // The same request again (a retry), twice at once, beside fresh ones.
        write_as(&store, "a", "r-1", b"h1", replace(1, Some(1))),
        write_as(&store, "a", "r-1", b"h1", replace(1, Some(1))),
        write_as(&store, "b", "r-2", b"h2", replace(5, None)),
        write_as(&store, "b", "r-2", b"h2", replace(5, None)),
        // A request id reused for another request.
        write_as(&store, "b", "r-1", b"other", replace(6, None)),
    ])
    .await;
    assert_eq!(results[0].as_ref().ok(), Some(&2), "{results:?}");
    assert_eq!(results[1].as_ref().ok(), Some(&2), "{results:?}");
    assert_eq!(results[2].as_ref().ok(), Some(&2), "{results:?}");
    assert_eq!(results[3].as_ref().ok(), Some(&2), "{results:?}");
    assert!(
        matches!(&results[4], Err(Error::InvalidArgument { .. })),
        "{:?}",
        results[4]
    );
    assert_gapless(&db, "a", 2).await;
    assert_gapless(&db, "b", 2).await;
    assert_eq!(db.count("idempotency_keys").await, 2);
    assert_eq!(db.count("audit_log WHERE method = 'WriteContext'").await, 2);
});

conformance!(batched_writes_wake_their_watchers, |store, _db| {
    setup(&store, &["a", "b", "quiet"], 100).await;
    let watch = |id: &str| store.subscribe(vec![WakeKey::context("acme", "web", id)]);
    let (a, b, quiet) = (watch("a"), watch("b"), watch("quiet"));
    let results = join_all([
        write_as(&store, "a", "", b"", replace(1, None)),
        write_as(&store, "b", "", b"", replace(1, None)),
        // A no-op wakes no one.
        write_as(&store, "quiet", "", b"", replace(0, None)),
    ])
    .await;
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    let woken = |s: agentry_core::port::Subscription| async move {
        tokio::time::timeout(std::time::Duration::from_millis(500), s.changed())
            .await
            .is_ok()
    };
    assert!(woken(a).await);
    assert!(woken(b).await);
    assert!(!woken(quiet).await);
});

/// A statement of a batch that fails (here a trigger refusing one context's version)
/// rolls the batch back; every write then runs alone, and only the bad one fails.
#[tokio::test]
async fn a_failed_batch_statement_reruns_each_write_alone() {
    let (db, store) = open(Backend::Postgres).await;
    setup(&store, &["a", "b", "poison", "c"], 100).await;
    db.execute(
        "CREATE FUNCTION refuse_poison() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN \
         IF NEW.context_id = 'poison' THEN RAISE EXCEPTION 'poisoned'; END IF; RETURN NEW; END $$",
    )
    .await
    .unwrap();
    db.execute(
        "CREATE TRIGGER refuse_poison BEFORE INSERT ON context_versions \
         FOR EACH ROW EXECUTE FUNCTION refuse_poison()",
    )
    .await
    .unwrap();
    let results = join_all([
        write_as(&store, "a", "", b"", replace(1, Some(1))),
        write_as(&store, "poison", "", b"", replace(1, Some(1))),
        write_as(&store, "b", "r-b", b"hb", replace(1, None)),
        write_as(&store, "c", "", b"", replace(1, Some(1))),
    ])
    .await;
    assert_eq!(results[0].as_ref().ok(), Some(&2), "{results:?}");
    assert!(matches!(results[1], Err(Error::Internal(_))), "{results:?}");
    assert_eq!(results[2].as_ref().ok(), Some(&2), "{results:?}");
    assert_eq!(results[3].as_ref().ok(), Some(&2), "{results:?}");
    for (id, head) in [("a", 2), ("b", 2), ("c", 2), ("poison", 1)] {
        assert_gapless(&db, id, head).await;
    }
    assert_eq!(db.count("audit_log WHERE method = 'WriteContext'").await, 3);
    assert_eq!(db.count("idempotency_keys").await, 1);
}
