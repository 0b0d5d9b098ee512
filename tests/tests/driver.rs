//! The Postgres driver's changes (`vendor/README.md`): a transaction's BEGIN goes out
//! with its first statement when that statement is prepared already, its COMMIT can go
//! out behind its last statement, and a ping of a connection that answered just now
//! costs no round trip. What must not change: the
//! statements run inside the transaction, commit and rollback mean what they meant, a
//! failure or a dropped transaction leaves the connection clean, and a ping of a
//! connection that has been quiet still asks the server. And the pool (sqlx-core's
//! copy) hands out the connection released last, first, and still closes the ones that
//! sat idle too long.

use std::time::Duration;

use agentry_e2e::{Backend, FreshDatabase, fresh_database};
use sqlx::{Connection, Executor, PgConnection, PgPool, postgres::PgPoolOptions};

const INSERT: &str = "INSERT INTO t (x) VALUES ($1)";
const COUNT: &str = "SELECT count(*) FROM t WHERE x = $1";

/// A fresh database with `t (x int, x < 100)` and a pool of one connection on which
/// [`INSERT`] and [`COUNT`] are prepared already (so a transaction's first statement
/// goes out with its BEGIN).
async fn one_connection() -> (FreshDatabase, PgPool) {
    let database = fresh_database(Backend::Postgres).await;
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .connect(&database.url)
        .await
        .expect("connect");
    pool.execute("CREATE TABLE t (x int CHECK (x < 100))")
        .await
        .expect("create the table");
    sqlx::query(INSERT)
        .bind(0)
        .execute(&pool)
        .await
        .expect("prepare the insert");
    count(&pool, 0).await;
    (database, pool)
}

async fn count(pool: &PgPool, x: i32) -> i64 {
    sqlx::query_scalar(COUNT)
        .bind(x)
        .fetch_one(pool)
        .await
        .expect("count")
}

/// Whether `conn` is inside a transaction block (a SAVEPOINT is refused outside one).
async fn in_transaction(conn: &mut PgConnection) -> bool {
    let inside = conn.execute("SAVEPOINT probe").await.is_ok();
    if inside {
        conn.execute("RELEASE SAVEPOINT probe")
            .await
            .expect("release");
    }
    inside
}

/// Inserts `x` with `sql` as a transaction's first statement, checks that it runs inside
/// the transaction, and commits or rolls back.
async fn insert_then(pool: &PgPool, sql: &'static str, x: i32, commit: bool) {
    let mut tx = pool.begin().await.expect("begin");
    sqlx::query(sql)
        .bind(x)
        .execute(&mut *tx)
        .await
        .expect("insert");
    assert!(in_transaction(&mut tx).await);
    if commit {
        tx.commit().await.expect("commit");
    } else {
        tx.rollback().await.expect("rollback");
    }
}

#[tokio::test]
async fn a_first_statement_sent_with_its_begin_is_inside_the_transaction() {
    let (database, pool) = one_connection().await;
    insert_then(&pool, INSERT, 1, false).await;
    assert_eq!(count(&pool, 1).await, 0, "rolled back");
    insert_then(&pool, INSERT, 2, true).await;
    assert_eq!(count(&pool, 2).await, 1, "committed");
    // A first statement not prepared yet: the BEGIN goes alone first, as before.
    insert_then(&pool, "INSERT INTO t (x) VALUES ($1 + 0)", 3, false).await;
    assert_eq!(count(&pool, 3).await, 0, "rolled back");
    pool.close().await;
    database.drop_database().await;
}

#[tokio::test]
async fn a_failed_first_statement_or_a_dropped_transaction_leaves_the_connection_clean() {
    let (database, pool) = one_connection().await;

    let mut tx = pool.begin().await.expect("begin");
    let refused = sqlx::query(INSERT).bind(1000).execute(&mut *tx).await;
    assert!(refused.is_err(), "the check refuses 1000");
    drop(tx);
    assert_eq!(count(&pool, 1000).await, 0);

    let mut tx = pool.begin().await.expect("begin");
    sqlx::query(INSERT)
        .bind(4)
        .execute(&mut *tx)
        .await
        .expect("insert");
    drop(tx);
    assert_eq!(count(&pool, 4).await, 0, "a dropped transaction rolls back");

    // Begun and dropped before any statement; begun and committed with none.
    drop(pool.begin().await.expect("begin"));
    pool.begin()
        .await
        .expect("begin")
        .commit()
        .await
        .expect("commit");
    let mut conn = pool.acquire().await.expect("acquire");
    assert!(!in_transaction(&mut conn).await, "nothing left open");
    drop(conn);

    pool.close().await;
    database.drop_database().await;
}

#[tokio::test]
async fn a_ping_asks_the_server_unless_the_connection_answered_just_now() {
    let database = fresh_database(Backend::Postgres).await;
    let mut conn = PgConnection::connect(&database.url).await.expect("connect");
    let pid: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
        .fetch_one(&mut conn)
        .await
        .expect("pid");
    let mut admin = PgConnection::connect(&database.url).await.expect("connect");
    sqlx::query("SELECT pg_terminate_backend($1)")
        .bind(pid)
        .execute(&mut admin)
        .await
        .expect("terminate");
    // Whether this one notices depends on how fast the server closed the connection;
    // one 200 ms later, past "just now", must.
    let _ = conn.ping().await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        conn.ping().await.is_err(),
        "a ping of a dead connection fails"
    );
    let _ = admin.close().await;
    database.drop_database().await;
}

/// Inserts `x` as a transaction's only statement with the COMMIT sent behind it (and
/// the BEGIN before it: one round trip), then commits, rolls back or drops it.
async fn insert_with_commit_behind(pool: &PgPool, x: i32, end: &str) -> Result<(), sqlx::Error> {
    let mut tx = pool.begin().await.expect("begin");
    tx.commit_behind_next_query();
    let inserted = sqlx::query(INSERT)
        .bind(x)
        .execute(&mut *tx)
        .await
        .map(drop);
    match end {
        "commit" => tx.commit().await?,
        "rollback" => tx.rollback().await?,
        _ => drop(tx),
    }
    inserted
}

#[tokio::test]
async fn a_commit_sent_behind_the_last_statement_commits_it_or_rolls_a_failure_back() {
    let (database, pool) = one_connection().await;
    insert_with_commit_behind(&pool, 5, "commit")
        .await
        .expect("committed");
    assert_eq!(count(&pool, 5).await, 1, "committed");

    let refused = insert_with_commit_behind(&pool, 1000, "rollback").await;
    assert!(refused.is_err(), "the check refuses 1000");
    assert_eq!(count(&pool, 1000).await, 0);

    // Committing after a failed last statement says so.
    let mut tx = pool.begin().await.expect("begin");
    tx.commit_behind_next_query();
    assert!(
        sqlx::query(INSERT)
            .bind(1001)
            .execute(&mut *tx)
            .await
            .is_err()
    );
    assert!(tx.commit().await.is_err(), "not committed");

    // Sent is sent: a transaction dropped after its COMMIT went out committed.
    insert_with_commit_behind(&pool, 6, "drop")
        .await
        .expect("inserted");
    assert_eq!(count(&pool, 6).await, 1);

    let mut conn = pool.acquire().await.expect("acquire");
    assert!(!in_transaction(&mut conn).await, "nothing left open");
    drop(conn);
    pool.close().await;
    database.drop_database().await;
}

/// Drops `conn` and waits until the pool has it back (it returns from a task of its own).
async fn give_back(pool: &PgPool, conn: sqlx::pool::PoolConnection<sqlx::Postgres>) {
    let idle = pool.num_idle();
    drop(conn);
    while pool.num_idle() <= idle {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

async fn backend_pid(conn: &mut PgConnection) -> i32 {
    sqlx::query_scalar("SELECT pg_backend_pid()")
        .fetch_one(conn)
        .await
        .expect("backend pid")
}

#[tokio::test]
async fn the_pool_hands_out_the_connection_released_last_and_reaps_the_idle_ones() {
    let database = fresh_database(Backend::Postgres).await;
    let pool = PgPoolOptions::new()
        .max_connections(3)
        .idle_timeout(Duration::from_millis(500))
        .connect(&database.url)
        .await
        .expect("connect");
    // Three connections open at once, given back in the order a, b, c.
    let mut held = Vec::new();
    for _ in 0..3 {
        let mut conn = pool.acquire().await.expect("acquire");
        let pid = backend_pid(&mut conn).await;
        held.push((pid, conn));
    }
    let pids: Vec<i32> = held.iter().map(|(pid, _)| *pid).collect();
    for (_, conn) in held {
        give_back(&pool, conn).await;
    }
    assert_eq!(pool.num_idle(), 3);
    // One client at a time: always the connection given back last (FIFO would take
    // a, b, c in turn).
    for _ in 0..5 {
        let mut conn = pool.acquire().await.expect("acquire");
        assert_eq!(backend_pid(&mut conn).await, pids[2]);
        give_back(&pool, conn).await;
    }
    // Two at once: the two given back last.
    let mut first = pool.acquire().await.expect("acquire");
    let mut second = pool.acquire().await.expect("acquire");
    assert_eq!(backend_pid(&mut first).await, pids[2]);
    assert_eq!(backend_pid(&mut second).await, pids[1]);
    give_back(&pool, second).await;
    give_back(&pool, first).await;
    // The connection nobody took (a) and then the others go once idle for longer than
    // idle_timeout: the reaper takes them from the bottom of the stack.
    let mut left = pool.acquire().await.expect("acquire");
    let kept = backend_pid(&mut left).await;
    assert_eq!(kept, pids[2]);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while pool.size() > 1 {
        assert!(
            std::time::Instant::now() < deadline,
            "idle connections not reaped: {} open",
            pool.size()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        backend_pid(&mut left).await,
        kept,
        "the connection in use stays"
    );
    give_back(&pool, left).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while pool.size() > 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the last idle connection not reaped"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    pool.close().await;
}
