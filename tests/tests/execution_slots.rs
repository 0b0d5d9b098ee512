//! The workspace's `max_concurrent_runs` under claims that do not take turns: many
//! pollers of one workspace never hold more runs than the quota at any moment, and
//! every way a run lets go of its slot (completion, a retried failure, a lapsed lease,
//! deletion with its project) lets the next run in. Changing the quota moves the limit
//! at once: lowered, nothing is claimed until the held runs drop below it; raised,
//! more runs are claimed side by side.

mod execution_support;

use std::{
    collections::BTreeSet,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering::SeqCst},
    },
    time::Duration,
};

use agentry_e2e::*;
use execution_support::*;
use pb::RunStatus;
use tokio::task::JoinHandle;

/// Long enough for a poll to have found a run if one could be claimed.
const NOT_YET: Duration = Duration::from_millis(800);

fn slots(n: i32) -> pb::Quotas {
    pb::Quotas {
        max_concurrent_runs: n,
        ..Default::default()
    }
}

/// Sets the workspace's `max_concurrent_runs` (as ROOT).
async fn set_limit(app: &TestApp, w: &World, n: i32) {
    let change = pb::Workspace {
        name: w.acme.name.clone(),
        quotas: Some(slots(n)),
        ..Default::default()
    };
    let request = req::update_workspace(change, &["quotas.max_concurrent_runs"]);
    let updated = app.root().await.update_workspace(request).await.must();
    assert_eq!(updated.quotas.unwrap().max_concurrent_runs, n);
}

/// Runs of the database RUNNING or CANCELLING now.
async fn leased_in_db(app: &TestApp) -> i64 {
    app.database()
        .count("runs WHERE status IN ('RUNNING', 'CANCELLING')")
        .await
}

/// Slot rows of the database, and how many of them a run holds.
async fn slot_rows(app: &TestApp) -> (i64, i64) {
    let db = app.database();
    (
        db.count("run_slots").await,
        db.count("run_slots WHERE run_id IS NOT NULL").await,
    )
}

/// `n` runs, each on its own session.
async fn queue_runs(w: &World, n: usize) -> Vec<String> {
    let mut created = Vec::new();
    for i in 0..n {
        let session = w.session(&format!("s{i}")).await;
        created.push(w.run(&session.name, &format!("work {i}")).await.name);
    }
    created
}

fn run_of(task: &pb::Task) -> String {
    task.run
        .as_ref()
        .expect("a task carries its run")
        .name
        .clone()
}

/// Claims runs and completes each after `hold` until a 3 s poll finds none; the runs
/// served, with their attempts.
async fn serve_until_idle(worker: Worker, hold: Duration) -> Vec<(String, i32)> {
    let mut served = Vec::new();
    while let Some(task) = worker
        .poll(Duration::from_secs(3), Duration::from_secs(30))
        .await
    {
        served.push((run_of(&task), task.attempt));
        tokio::time::sleep(hold).await;
        worker.complete(&task.task_token, "ok").await;
    }
    served
}

/// `n` workers of `w`, each serving runs until idle, holding each for `hold`.
fn spawn_workers(w: &World, n: usize, hold: Duration) -> Vec<JoinHandle<Vec<(String, i32)>>> {
    (0..n)
        .map(|_| tokio::spawn(serve_until_idle(w.worker.clone(), hold)))
        .collect()
}

backend_tests!(
    sixteen_pollers_on_one_workspace_stay_within_three_slots,
    |app| async move {
        let w = World::setup_with_quotas(&app, slots(3)).await;
        let created = queue_runs(&w, 30).await;
        let done = Arc::new(AtomicBool::new(false));
        let workers = spawn_workers(&w, 16, Duration::from_millis(60));
        // Sample what the server holds while the workers go: through ListRuns and in
        // the database, running runs and held slots.
        let sampler = {
            let done = done.clone();
            let every_session = format!("{}/sessions/-", w.project);
            let client = w.client.clone();
            let app = &app;
            async move {
                let (mut peak_listed, mut peak_db, mut peak_slots, mut samples) = (0, 0, 0, 0);
                while !done.load(SeqCst) {
                    let listed = client
                        .clone()
                        .list_runs(list_runs(&every_session, "status = RUNNING", 100, ""))
                        .await
                        .must()
                        .runs
                        .len();
                    peak_listed = peak_listed.max(listed);
                    peak_db = peak_db.max(leased_in_db(app).await);
                    peak_slots = peak_slots.max(slot_rows(app).await.1);
                    samples += 1;
                    tokio::time::sleep(Duration::from_millis(15)).await;
                }
                (peak_listed, peak_db, peak_slots, samples)
            }
        };
        let served = async {
            let mut claimed = Vec::new();
            for worker in workers {
                claimed.extend(worker.await.unwrap());
            }
            done.store(true, SeqCst);
            claimed
        };
        let (claimed, (peak_listed, peak_db, peak_slots, samples)) = tokio::join!(served, sampler);
        println!(
            "{samples} samples: peak {peak_listed} listed RUNNING, {peak_db} in the database, \
             {peak_slots} slots held"
        );
        assert!(samples > 5, "the sampler ran while the workers did");
        assert!(
            peak_listed <= 3,
            "{peak_listed} runs listed RUNNING at once"
        );
        assert!(
            peak_db <= 3,
            "{peak_db} runs RUNNING at once in the database"
        );
        assert!(peak_slots <= 3, "{peak_slots} slots held at once");
        assert_eq!(claimed.len(), 30, "every run claimed once: {claimed:?}");
        let distinct: BTreeSet<_> = claimed.iter().map(|(name, _)| name.clone()).collect();
        assert_eq!(distinct.len(), 30, "a run was claimed twice: {claimed:?}");
        assert!(claimed.iter().all(|(_, attempt)| *attempt == 1));
        assert_eq!(distinct, created.into_iter().collect());
        for name in &distinct {
            assert_eq!(w.get_run(name).await.status, RunStatus::Succeeded as i32);
        }
        assert_eq!(slot_rows(&app).await, (3, 0), "three slots, all free again");
    }
);

backend_tests!(
    lowering_the_limit_waits_for_held_runs_and_raising_it_admits_more,
    |app| async move {
        let w = World::setup_with_quotas(&app, slots(3)).await;
        let created = queue_runs(&w, 6).await;
        let mut held = Vec::new();
        for _ in 0..3 {
            held.push(w.worker.claim().await);
        }
        w.worker.expect_nothing(NOT_YET).await;

        // Lowered under three held runs: they keep their slots, nothing new starts
        // until fewer than one run holds a slot.
        set_limit(&app, &w, 1).await;
        assert_eq!(slot_rows(&app).await, (3, 3));
        for (i, task) in held.drain(..).enumerate() {
            w.worker.expect_nothing(NOT_YET).await;
            w.worker.complete(&task.task_token, "done").await;
            // Two slots above the limit go with the first two runs that let go of
            // one; the last is freed.
            let held = 2 - i as i64;
            assert_eq!(slot_rows(&app).await, (held.max(1), held));
        }
        let fourth = w.worker.claim().await;
        assert_eq!(run_of(&fourth), created[3]);
        w.worker.expect_nothing(NOT_YET).await;

        // Raised: two more runs start beside the fourth, and then no more.
        set_limit(&app, &w, 3).await;
        let fifth = w.worker.claim().await;
        let sixth = w.worker.claim().await;
        assert_eq!(
            BTreeSet::from([run_of(&fifth), run_of(&sixth)]),
            BTreeSet::from([created[4].clone(), created[5].clone()])
        );
        assert_eq!(leased_in_db(&app).await, 3);
        let more = w.session("more").await;
        let seventh = w.run(&more.name, "more").await;
        w.worker.expect_nothing(NOT_YET).await;
        assert_eq!(slot_rows(&app).await, (3, 3));
        for task in [fourth, fifth, sixth] {
            w.worker.complete(&task.task_token, "done").await;
        }
        let last = w.worker.claim().await;
        assert_eq!(run_of(&last), seventh.name);
        w.worker.complete(&last.task_token, "done").await;
        assert_eq!(slot_rows(&app).await, (3, 0));
    }
);

backend_tests!(a_retried_failure_gives_its_slot_back, |app| async move {
    let w = World::setup_with_quotas(&app, slots(1)).await;
    let created = queue_runs(&w, 2).await;
    let first = w.worker.claim().await;
    assert_eq!(run_of(&first), created[0]);
    w.worker.expect_nothing(NOT_YET).await;
    let failed = w
        .worker
        .fail(&first.task_token, "Flaky", true)
        .await
        .expect("FailTask");
    assert_eq!(
        failed.status,
        RunStatus::Queued as i32,
        "re-queued for a retry"
    );
    // The first run waits out its backoff; the slot it held serves the second.
    let second = w.worker.claim().await;
    assert_eq!(run_of(&second), created[1]);
    w.worker.complete(&second.task_token, "done").await;
    let retry = w.worker.claim().await;
    assert_eq!(run_of(&retry), created[0]);
    assert_eq!(retry.attempt, 2);
    w.worker.complete(&retry.task_token, "done").await;
    assert_eq!(slot_rows(&app).await, (1, 0));
});

backend_tests!(a_lapsed_lease_gives_its_slot_back, |app| async move {
    let w = World::setup_with_quotas(&app, slots(1)).await;
    let created = queue_runs(&w, 2).await;
    // The worker takes the first run and dies: no heartbeat, no answer.
    let lost = w.worker.claim_with_lease(Duration::from_secs(1)).await;
    assert_eq!(run_of(&lost), created[0]);
    // The reaper re-queues it when the lease lapses, and the slot serves the second run
    // (the first waits out its backoff).
    let second = w.worker.claim().await;
    assert_eq!(run_of(&second), created[1]);
    let first = w.get_run(&created[0]).await;
    assert_eq!(first.status, RunStatus::Queued as i32);
    assert_eq!(first.attempt, 2, "the lost attempt counts");
    w.worker.complete(&second.task_token, "done").await;
    let retry = w.worker.claim().await;
    assert_eq!(run_of(&retry), created[0]);
    w.worker.complete(&retry.task_token, "done").await;
    assert_eq!(slot_rows(&app).await, (1, 0));
});

backend_tests!(
    a_run_deleted_with_its_project_gives_its_slot_back,
    |app| async move {
        let w = World::setup_with_quotas(&app, slots(1)).await;
        // A project of its own, whose agent the worker serves too.
        let bot = w.acme.instance_with_agent("doomed", "doomed", "bot").await;
        let mut worker = w.worker.clone();
        worker.agents.push(bot.agent.clone());
        let request = create_session(&w.acme.project_name("doomed"), "s", &bot.name);
        let doomed = w.client.clone().create_session(request).await.must();
        let gone = w.run(&doomed.name, "doomed").await;
        let held = worker.claim().await;
        assert_eq!(run_of(&held), gone.name);
        let kept = w.session("kept").await;
        let next = w.run(&kept.name, "next").await;
        worker.expect_nothing(NOT_YET).await;
        let mut delete = req::delete_project(&w.acme.project_name("doomed"));
        delete.force = true;
        w.acme.admin.clone().delete_project(delete).await.must();
        assert_eq!(slot_rows(&app).await, (1, 0));
        let task = worker.claim().await;
        assert_eq!(run_of(&task), next.name);
        assert!(
            worker
                .try_complete(&held.task_token, vec![assistant("late")], None)
                .await
                .is_err(),
            "the deleted run's token is stale"
        );
        w.worker.complete(&task.task_token, "done").await;
    }
);

backend_tests!(
    changing_the_limit_while_runs_come_and_go_keeps_the_books,
    |app| async move {
        let done = Arc::new(AtomicBool::new(false));
        let w = World::setup_with_quotas(&app, slots(3)).await;
        let created = queue_runs(&w, 40).await;
        let workers = spawn_workers(&w, 8, Duration::from_millis(20));
        // No slot is ever free while held slots are still to be dropped.
        let free_with_surplus = "run_slots s WHERE s.run_id IS NULL AND EXISTS \
             (SELECT 1 FROM run_slot_surplus p WHERE p.workspace_id = s.workspace_id \
             AND p.surplus > 0)";
        let churn = async {
            let mut checks = 0;
            for limit in [1, 4, 2, 5, 1, 3, 2, 4].into_iter().cycle() {
                if done.load(SeqCst) {
                    break;
                }
                set_limit(&app, &w, limit).await;
                assert_eq!(app.database().count(free_with_surplus).await, 0);
                checks += 1;
                tokio::time::sleep(Duration::from_millis(40)).await;
            }
            checks
        };
        let served = async {
            let mut served = 0;
            for worker in workers {
                served += worker.await.unwrap().len();
            }
            done.store(true, SeqCst);
            served
        };
        let (served, checks) = tokio::join!(served, churn);
        println!("{checks} limit changes while the runs went");
        assert_eq!(served, 40, "every run served once");
        for name in &created {
            assert_eq!(w.get_run(name).await.status, RunStatus::Succeeded as i32);
        }
        // Settled: as many slots as the limit, all free, nothing left to drop.
        set_limit(&app, &w, 3).await;
        assert_eq!(slot_rows(&app).await, (3, 0));
        assert_eq!(
            app.database()
                .count("run_slot_surplus WHERE surplus <> 0")
                .await,
            0
        );
    }
);
