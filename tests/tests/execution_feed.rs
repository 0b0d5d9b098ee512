//! PollTask waiters are woken per agent queue and only as many as there is work for: a
//! new run wakes one of many idle pollers, the rest go on waiting without a look at
//! storage; a poller that leaves before it looked hands its wake-up on.

mod execution_support;

use std::time::Duration;

use agentry_e2e::*;
use execution_support::*;

const POLLERS: usize = 8;

async fn settle(feed: &dyn agentry_store::ChangeFeed, waiters: usize) {
    let settled = eventually(Duration::from_secs(5), || async {
        (feed.waiting() == waiters).then_some(())
    })
    .await;
    assert!(
        settled.is_some(),
        "{} waiters, not {waiters}",
        feed.waiting()
    );
}

#[tokio::test]
async fn a_new_run_wakes_one_of_many_waiting_pollers() {
    let database = fresh_database(Backend::Postgres).await;
    let root_key = new_root_key();
    let server = agentry_server::start(config(&database.url, &root_key))
        .await
        .expect("the server starts");
    let w = World::setup_on(server.local_addr, &root_key).await;
    let session = w.session("s").await;
    let feed = server.change_feed();
    let polls: Vec<_> = (0..POLLERS)
        .map(|_| {
            let worker = w.worker.clone();
            tokio::spawn(async move {
                worker
                    .try_poll(Duration::from_secs(20), Duration::from_secs(30))
                    .await
            })
        })
        .collect();
    settle(feed.as_ref(), POLLERS).await;

    let before = feed.wakeups();
    let run = w.run(&session.name, "one").await;
    let claimed = eventually(Duration::from_secs(5), || async {
        polls.iter().any(|p| p.is_finished()).then_some(())
    })
    .await;
    assert!(claimed.is_some(), "no poller got the run");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let finished: Vec<_> = polls.iter().filter(|p| p.is_finished()).collect();
    assert_eq!(finished.len(), 1, "one run, one poller answered");
    assert_eq!(
        feed.wakeups() - before,
        1,
        "one run woke one poller (of {POLLERS})"
    );
    let (mut done, waiting): (Vec<_>, Vec<_>) = polls.into_iter().partition(|p| p.is_finished());
    let task = done
        .pop()
        .unwrap()
        .await
        .unwrap()
        .expect("PollTask")
        .expect("a task");
    assert_eq!(task.run.unwrap().name, run.name);
    settle(feed.as_ref(), POLLERS - 1).await;

    // The next runs go to the pollers still waiting, one each.
    let before = feed.wakeups();
    for i in 0..3 {
        let session = w.session(&format!("s{i}")).await;
        w.run(&session.name, "more").await;
    }
    settle(feed.as_ref(), POLLERS - 4).await;
    // A poller still claiming counts as idle: woken for the next run, it hands that
    // wake-up on when it returns with another (at most once per run).
    let woken = feed.wakeups() - before;
    assert!(
        (3..=6).contains(&woken),
        "three runs woke {woken} of {} waiting pollers",
        POLLERS - 1
    );
    for poll in waiting {
        poll.abort();
    }
    settle(feed.as_ref(), 0).await;
    server.shutdown().await.expect("the server stops");
    database.drop_database().await;
}
