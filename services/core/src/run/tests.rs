use super::*;
use crate::time::UnixMicros;

#[test]
fn backoff_grows_and_is_capped() {
    let p = RetryPolicy {
        initial_interval: 100,
        backoff_coefficient: 2.0,
        max_interval: 1000,
        max_attempts: 10,
        non_retryable_error_types: vec!["Fatal".into()],
    };
    assert_eq!(p.backoff(1), 100);
    assert_eq!(p.backoff(2), 200);
    assert_eq!(p.backoff(4), 800);
    assert_eq!(p.backoff(5), 1000);
    assert_eq!(p.backoff(i32::MAX), 1000);
    assert!(p.retries(9, "Transient"));
    assert!(!p.retries(10, "Transient"));
    assert!(!p.retries(1, "Fatal"));
}

#[test]
fn autonomy_matrix() {
    use ToolRisk::*;
    let cases = [
        (0, [false, false, false]),
        (1, [true, false, false]),
        (2, [true, true, false]),
        (3, [true, true, true]),
    ];
    for (level, expected) in cases {
        let got = [ReadOnly, Write, Destructive].map(|r| AutonomyLevel(level).allows(r));
        assert_eq!(got, expected, "L{level}");
    }
}

#[test]
fn state_machine() {
    use RunStatus::*;
    assert!(Queued.can_become(Running));
    assert!(Running.can_become(RequiresAction));
    assert!(RequiresAction.can_become(Queued));
    assert!(Cancelling.can_become(Cancelled));
    assert!(!Cancelling.can_become(Succeeded));
    for terminal in [Succeeded, Failed, Cancelled, TimedOut] {
        for to in RunStatus::ALL {
            assert!(!terminal.can_become(*to), "{terminal:?} → {to:?}");
        }
    }
    assert!(!Queued.can_become(Succeeded));
}

// ----- fixtures -----

use std::collections::HashMap;

use crate::{
    model::{Instance, ToolRisk as Risk},
    names::{RunName, SessionName},
    status::InstanceStatus,
    wake::WakeKey,
};

const NOW: UnixMicros = 1_000_000_000;

fn session(active_run: &str) -> Session {
    Session::new(
        &NewSession {
            name: SessionName {
                workspace: "w".into(),
                project: "p".into(),
                session: "s".into(),
            },
            instance: "i".into(),
            description: String::new(),
            labels: Default::default(),
        },
        NOW - 10,
    )
    .with_active(active_run)
}

impl Session {
    fn with_active(mut self, run: &str) -> Self {
        self.active_run = crate::absent::non_empty(run);
        self
    }
}

fn instance(status: InstanceStatus) -> Instance {
    Instance {
        workspace: "w".into(),
        project: "p".into(),
        id: "i".into(),
        display_name: String::new(),
        agent: "a".into(),
        agent_revision: 3,
        config: serde_json::json!({}),
        effective_config: serde_json::json!({}),
        status,
        status_message: String::new(),
        heartbeat_ttl_ms: 0,
        last_heartbeat_time: None,
        labels: Default::default(),
        create_time: 0,
        update_time: 0,
        etag: 1,
    }
}

fn new_run(strategy: MultitaskStrategy) -> NewRun {
    NewRun {
        session: session("").name(),
        spec: RunSpec {
            autonomy: AutonomyLevel(1),
            timeout: 0,
            retry_policy: RetryPolicy::default(),
            strategy,
            input: vec![user("hello")],
            contexts: Vec::new(),
            labels: Default::default(),
            approval_timeout: 60,
        },
    }
}

fn user(text: &str) -> MessageBody {
    MessageBody {
        role: MessageRole::User,
        content: text.into(),
        tool_call: None,
    }
}

fn run_in(status: RunStatus) -> Run {
    let mut run = Run::queued(
        &new_run(MultitaskStrategy::Reject),
        &session(""),
        &instance(InstanceStatus::Active),
        "r".into(),
        true,
        NOW - 100,
    );
    run.status = status;
    run.last_sequence = 5;
    if status.is_leased() {
        run.attempt = 1;
        run.lease_epoch = 1;
        run.lease_expire_time = Some(NOW + 50);
        run.lease_duration = 30;
    }
    run
}

fn change(status: RunStatus, active: &str) -> RunChange {
    RunChange::new(run_in(status), Some(&session(active).with_count(2)), NOW)
}

impl Session {
    fn with_count(mut self, count: i64) -> Self {
        self.message_count = count;
        self
    }
}

fn run_name() -> RunName {
    RunName {
        workspace: "w".into(),
        project: "p".into(),
        session: "s".into(),
        run: "r".into(),
    }
}

fn lease(run: &Run) -> Lease {
    run.lease()
}

fn statuses(c: &RunChange) -> Vec<(RunStatus, StopReason)> {
    c.events
        .iter()
        .filter_map(|e| match &e.body {
            EventBody::StatusChanged {
                status,
                stop_reason,
                ..
            } => Some((*status, *stop_reason)),
            _ => None,
        })
        .collect()
}

fn call(id: &str, tool: &str) -> ToolCall {
    ToolCall {
        id: id.into(),
        tool: tool.into(),
        arguments: None,
        result: None,
        is_error: false,
    }
}

fn usage(input_tokens: i64, output_tokens: i64, cost_usd: f64) -> Usage {
    Usage {
        input_tokens,
        output_tokens,
        cost_usd,
    }
}

fn run_key() -> WakeKey {
    WakeKey::run("w", "p", "r")
}

// ----- the run aggregate -----

#[test]
fn events_get_gapless_sequences_and_the_attempt() {
    let mut c = change(RunStatus::Running, "r");
    c.event(EventBody::Custom {
        name: "x".into(),
        data: serde_json::json!(1),
    });
    c.status(RunStatus::Succeeded, StopReason::EndTurn, "")
        .unwrap();
    let seqs: Vec<_> = c.events.iter().map(|e| (e.sequence, e.attempt)).collect();
    assert_eq!(seqs, [(6, 1), (7, 1)]);
    assert_eq!(c.run.last_sequence, 7);
    assert_eq!(c.run.end_time, Some(NOW));
    assert_eq!(c.run.lease_expire_time, None);
    assert!(!c.run.ready);
}

#[test]
fn an_illegal_transition_is_an_internal_error() {
    let mut c = change(RunStatus::Succeeded, "");
    let err = c
        .status(RunStatus::Running, StopReason::Unspecified, "")
        .unwrap_err();
    assert_eq!(err.reason(), "INTERNAL");
    assert!(c.events.is_empty());
}

#[test]
fn transcript_appends_number_on_from_the_session() {
    let mut c = change(RunStatus::Running, "r");
    assert_eq!(c.append(user("a")).unwrap(), 3);
    assert_eq!(c.append(user("b")).unwrap(), 4);
    let (first, bodies) = c.take_transcript();
    assert_eq!((first, bodies.len()), (3, 2));
    assert_eq!(c.append(user("c")).unwrap(), 5);
}

#[test]
fn a_transcript_change_needs_the_session() {
    let mut c = RunChange::new(run_in(RunStatus::Running), None, NOW);
    assert_eq!(c.append(user("a")).unwrap_err().reason(), "INTERNAL");
}

#[test]
fn finishing_a_leased_run_frees_a_slot_and_closes_open_calls() {
    let mut c = change(RunStatus::Running, "r");
    let ending = Ending::finish(RunStatus::Failed, StopReason::Error, "boom");
    let open = vec![OpenCall {
        id: "c1".into(),
        tool: "t".into(),
    }];
    c.close_calls(open, ending.synthetic_status()).unwrap();
    c.end(&ending).unwrap();
    assert!(c.calls.close_all);
    assert_eq!(c.transcript.len(), 1);
    let synthetic = &c.transcript[0].tool_call.as_ref().unwrap().result;
    assert_eq!(synthetic, &Some(serde_json::json!({"status": "failed"})));
    assert!(c.events.last().unwrap().body.is_terminal());
    assert!(c.wakes.contains(&WakeKey::any_queue("w")));
    assert!(c.wakes.contains(&run_key()));
    assert!(c.hands_off(&ending, &session("r")));
    assert!(!c.hands_off(&ending, &session("other")));
}

#[test]
fn cancelled_and_timed_out_calls_read_cancelled() {
    for to in [RunStatus::Cancelled, RunStatus::TimedOut] {
        let e = Ending::finish(to, StopReason::Cancelled, "");
        assert_eq!(e.synthetic_status(), "cancelled");
    }
    let requeue = Ending::Requeue {
        reason: StopReason::Error,
        message: String::new(),
        delay: 1,
    };
    assert_eq!(requeue.synthetic_status(), "failed");
    assert!(!requeue.is_finish());
}

#[test]
fn finishing_a_queued_run_frees_no_slot() {
    let mut c = change(RunStatus::Queued, "r");
    c.end(&Ending::finish(
        RunStatus::Cancelled,
        StopReason::Cancelled,
        "",
    ))
    .unwrap();
    assert!(!c.wakes.contains(&WakeKey::any_queue("w")));
    assert!(c.calls.is_empty());
}

#[test]
fn a_requeue_is_the_next_attempt_after_the_delay() {
    let mut c = change(RunStatus::Running, "r");
    let ending = Ending::Requeue {
        reason: StopReason::Error,
        message: "x".into(),
        delay: 500,
    };
    c.end(&ending).unwrap();
    assert_eq!(c.run.status, RunStatus::Queued);
    assert_eq!(c.run.attempt, 2);
    assert_eq!(c.run.next_attempt_time, NOW + 500);
    assert!(c.wakes.contains(&WakeKey::queue("w", "a")));
    assert!(!c.hands_off(&ending, &session("r")));
}

#[test]
fn the_session_goes_to_the_next_run_or_to_nobody() {
    let mut s = session("r");
    let mut next = run_in(RunStatus::Queued);
    next.id = "n".into();
    next.ready = false;
    let key = s.hand_to(Some(&mut next), NOW);
    assert_eq!(key, Some(WakeKey::queue("w", "a")));
    assert!(next.ready);
    assert_eq!(s.active_run.as_deref(), Some("n"));
    assert_eq!(s.hand_to(None, NOW), None);
    assert_eq!(s.active_run, None);
}

// ----- leases -----

#[test]
fn the_lease_that_holds_passes() {
    let run = run_in(RunStatus::Running);
    lease(&run).check(&run, NOW).unwrap();
}

#[test]
fn a_stale_lease_is_refused_with_the_reason() {
    let run = run_in(RunStatus::Running);
    let mut cases: Vec<(Run, Lease, &str)> = Vec::new();
    let mut other = lease(&run);
    other.attempt = 2;
    cases.push((run.clone(), other, "superseded"));
    let mut other = lease(&run);
    other.epoch = 7;
    cases.push((run.clone(), other, "superseded"));
    let mut other = lease(&run);
    other.session = "x".into();
    cases.push((run.clone(), other, "no longer exists"));
    let mut done = run.clone();
    done.status = RunStatus::Succeeded;
    cases.push((done, lease(&run), "already finished"));
    let mut waiting = run.clone();
    waiting.status = RunStatus::RequiresAction;
    cases.push((waiting, lease(&run), "no longer leased"));
    let mut lapsed = run.clone();
    lapsed.lease_expire_time = Some(NOW);
    cases.push((lapsed, lease(&run), "expired"));
    for (run, lease, what) in cases {
        let err = lease.check(&run, NOW).unwrap_err();
        assert_eq!(err.reason(), "STALE_TASK");
        assert!(err.to_string().contains(what), "{err} ∌ {what}");
    }
}

#[test]
fn a_heartbeat_extends_the_lease_by_the_wait_and_the_duration() {
    let mut c = change(RunStatus::Running, "r");
    c.heartbeat(100);
    assert_eq!(c.run.lease_expire_time, Some(NOW + 130));
}

// ----- CreateRun and the multitask strategies -----

#[test]
fn an_idle_session_admits_any_strategy() {
    for s in MultitaskStrategy::ALL {
        assert_eq!(admit(*s, &session("")).unwrap(), Admission::Start);
    }
}

#[test]
fn a_busy_session_applies_the_strategy() {
    let busy = session("r0");
    let err = admit(MultitaskStrategy::Reject, &busy).unwrap_err();
    assert_eq!(err.reason(), "SESSION_BUSY");
    assert!(
        err.to_string()
            .contains("workspaces/w/projects/p/sessions/s")
    );
    assert_eq!(
        admit(MultitaskStrategy::Enqueue, &busy).unwrap(),
        Admission::Enqueue
    );
    assert_eq!(
        admit(MultitaskStrategy::Interrupt, &busy).unwrap(),
        Admission::Interrupt { rollback: false }
    );
    assert_eq!(
        admit(MultitaskStrategy::Rollback, &busy).unwrap(),
        Admission::Interrupt { rollback: true }
    );
}

#[test]
fn a_run_on_an_idle_session_owns_it_and_its_input_joins_the_transcript() {
    let mut s = session("").with_count(4);
    let i = instance(InstanceStatus::Active);
    let new = new_run(MultitaskStrategy::Reject);
    let c = RunChange::created(&new, &mut s, &i, "r".into(), NOW).unwrap();
    assert!(c.run.ready);
    assert_eq!(s.active_run.as_deref(), Some("r"));
    assert_eq!(c.transcript, new.spec.input);
    assert_eq!(c.next_message(), 6);
    assert_eq!(c.run.agent_revision, 3);
    assert_eq!(c.run.last_sequence, 1);
    assert!(matches!(
        c.events[0].body,
        EventBody::StatusChanged {
            previous: None,
            status: RunStatus::Queued,
            ..
        }
    ));
    assert!(c.wakes.contains(&WakeKey::queue("w", "a")));
}

#[test]
fn an_enqueued_run_waits_without_touching_the_transcript() {
    let mut s = session("r0");
    let i = instance(InstanceStatus::Active);
    let new = new_run(MultitaskStrategy::Enqueue);
    let c = RunChange::created(&new, &mut s, &i, "r".into(), NOW).unwrap();
    assert!(!c.run.ready);
    assert_eq!(s.active_run.as_deref(), Some("r0"));
    assert!(c.transcript.is_empty());
    assert_eq!(c.wakes, [run_key()]);
}

#[test]
fn interrupting_cancels_waiting_runs_and_asks_running_ones_to_stop() {
    for status in [RunStatus::Queued, RunStatus::RequiresAction] {
        let mut c = change(status, "r");
        let ending = c.interrupt(false).unwrap().unwrap();
        assert_eq!(
            ending,
            Ending::finish(
                RunStatus::Cancelled,
                StopReason::Interrupted,
                "interrupted by a new run"
            )
        );
        assert!(!c.run.supersede);
    }
    let mut c = change(RunStatus::Running, "r");
    assert_eq!(c.interrupt(true).unwrap(), None);
    assert_eq!(c.run.status, RunStatus::Cancelling);
    assert!(c.run.cancel_requested && c.run.supersede);
    let mut c = change(RunStatus::Cancelling, "r");
    assert_eq!(c.interrupt(false).unwrap(), None);
    assert!(c.events.is_empty());
}

#[test]
fn interrupts_reach_the_active_run_last() {
    let s = session("b");
    let mut runs: Vec<Run> = ["a", "b", "c"]
        .iter()
        .map(|id| Run {
            id: (*id).into(),
            ..run_in(RunStatus::Queued)
        })
        .collect();
    interrupt_order(&mut runs, &s);
    let ids: Vec<_> = runs.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(ids, ["a", "c", "b"]);
}

#[test]
fn a_terminated_instance_takes_no_work() {
    check_takes_work(&instance(InstanceStatus::Active)).unwrap();
    check_takes_work(&instance(InstanceStatus::Offline)).unwrap();
    let err = check_takes_work(&instance(InstanceStatus::Terminated)).unwrap_err();
    assert_eq!(err.reason(), "INSTANCE_TERMINATED");
    assert!(
        err.to_string()
            .contains("workspaces/w/projects/p/instances/i")
    );
}

// ----- sessions -----

#[test]
fn a_new_session_is_idle_and_empty() {
    let s = session("");
    assert_eq!((s.message_count, s.active_run.as_deref()), (0, None));
    assert_eq!(s.create_time, s.update_time);
    assert_eq!(s.name().to_string(), "workspaces/w/projects/p/sessions/s");
}

#[test]
fn only_an_idle_session_may_be_deleted() {
    session("").check_deletable().unwrap();
    let err = session("r").check_deletable().unwrap_err();
    assert_eq!(err.reason(), "SESSION_BUSY");
    assert!(err.to_string().contains("sessions/s/runs/r"));
}

// ----- cancel -----

#[test]
fn cancel_by_status() {
    let name = run_name();
    for status in [RunStatus::Queued, RunStatus::RequiresAction] {
        let mut c = change(status, "r");
        let got = c.cancel(&name, "stop").unwrap();
        assert_eq!(
            got,
            Cancel::End(Ending::finish(
                RunStatus::Cancelled,
                StopReason::Cancelled,
                "stop"
            ))
        );
        assert!(c.run.cancel_requested);
    }
    let mut c = change(RunStatus::Running, "r");
    assert_eq!(c.cancel(&name, "stop").unwrap(), Cancel::Requested);
    assert_eq!(
        statuses(&c),
        [(RunStatus::Cancelling, StopReason::Unspecified)]
    );
    assert!(c.wakes.contains(&run_key()));
    for status in [RunStatus::Cancelling, RunStatus::Cancelled] {
        assert_eq!(
            change(status, "").cancel(&name, "").unwrap(),
            Cancel::Unchanged
        );
    }
    for status in [RunStatus::Succeeded, RunStatus::Failed, RunStatus::TimedOut] {
        let err = change(status, "").cancel(&name, "").unwrap_err();
        assert_eq!(err.reason(), "RUN_FINISHED");
    }
}

// ----- completion and failure -----

#[test]
fn completion_appends_the_output_and_succeeds() {
    let mut c = change(RunStatus::Running, "r");
    let usage = usage(3, 4, 0.5);
    let out = [user("answer")];
    let ending = c.complete(&out, &usage, StopReason::EndTurn).unwrap();
    assert_eq!(
        ending,
        Ending::finish(RunStatus::Succeeded, StopReason::EndTurn, "")
    );
    assert_eq!(c.run.output, out);
    assert_eq!(c.run.usage, usage);
    assert!(matches!(
        c.events[0].body,
        EventBody::MessageCompleted { sequence: 3, .. }
    ));
    assert_eq!(c.events.len(), 2);
}

#[test]
fn completion_without_usage_adds_no_usage_event() {
    let mut c = change(RunStatus::Running, "r");
    c.complete(&[], &Usage::default(), StopReason::EndTurn)
        .unwrap();
    assert!(c.events.is_empty());
}

#[test]
fn completion_of_a_cancelling_run_confirms_the_cancel() {
    let mut c = change(RunStatus::Cancelling, "r");
    let ending = c
        .complete(&[user("x")], &Usage::default(), StopReason::EndTurn)
        .unwrap();
    assert!(matches!(
        ending,
        Ending::Finish {
            to: RunStatus::Cancelled,
            reason: StopReason::Cancelled,
            ..
        }
    ));
    assert!(c.transcript.is_empty());
}

fn error(kind: &str) -> RunError {
    RunError {
        error_type: kind.into(),
        message: "it broke".into(),
        details: None,
    }
}

#[test]
fn a_retryable_failure_requeues_with_the_policy_backoff() {
    let mut c = change(RunStatus::Running, "r");
    let ending = c.fail(&error("Transient"), true, None);
    assert_eq!(
        ending,
        Ending::Requeue {
            reason: StopReason::Error,
            message: "it broke".into(),
            delay: RetryPolicy::DEFAULT_INITIAL,
        }
    );
    assert_eq!(c.run.error, Some(error("Transient")));
    assert!(matches!(c.events[0].body, EventBody::Error { .. }));
}

#[test]
fn the_worker_may_choose_the_retry_delay() {
    let mut c = change(RunStatus::Running, "r");
    let ending = c.fail(&error("Transient"), true, Some(7));
    assert!(matches!(ending, Ending::Requeue { delay: 7, .. }));
}

#[test]
fn failures_that_may_not_retry_fail_the_run() {
    let mut last = change(RunStatus::Running, "r");
    last.run.attempt = RetryPolicy::DEFAULT_MAX_ATTEMPTS;
    let mut fatal = change(RunStatus::Running, "r");
    fatal.run.spec.retry_policy.non_retryable_error_types = vec!["Fatal".into()];
    let cases = [
        (change(RunStatus::Running, "r"), "Transient", false),
        (last, "Transient", true),
        (fatal, "Fatal", true),
    ];
    for (mut c, kind, retryable) in cases {
        let ending = c.fail(&error(kind), retryable, None);
        assert_eq!(
            ending,
            Ending::finish(RunStatus::Failed, StopReason::Error, "it broke")
        );
    }
}

#[test]
fn failure_of_a_cancelling_run_confirms_the_cancel() {
    let mut c = change(RunStatus::Cancelling, "r");
    let ending = c.fail(&error("Transient"), true, None);
    assert!(matches!(
        ending,
        Ending::Finish {
            to: RunStatus::Cancelled,
            ..
        }
    ));
}

// ----- the tool-call machine -----

fn batch(c: &mut RunChange, inputs: &[EventInput]) -> crate::Result<()> {
    c.append_events(inputs, HashMap::new())
}

#[test]
fn a_call_started_and_completed_in_one_batch_is_stored_closed() {
    let mut c = change(RunStatus::Running, "r");
    let mut done = call("c1", "");
    done.result = Some(serde_json::json!(42));
    batch(
        &mut c,
        &[
            EventInput::ToolStarted(call("c1", "search")),
            EventInput::ToolCompleted(done),
        ],
    )
    .unwrap();
    assert_eq!(c.calls.inserted, [("c1".into(), "search".into(), false)]);
    assert!(c.calls.closed.is_empty());
    assert_eq!(c.transcript.len(), 2);
    assert_eq!(c.transcript[0].role, MessageRole::Assistant);
    assert_eq!(c.transcript[1].role, MessageRole::Tool);
    // The completion names the tool it was started for.
    let EventBody::ToolCallCompleted { call, synthetic } = &c.events[1].body else {
        panic!("{:?}", c.events[1]);
    };
    assert_eq!((call.tool.as_str(), *synthetic), ("search", false));
}

#[test]
fn a_started_call_drops_any_result_it_carries() {
    let mut c = change(RunStatus::Running, "r");
    let mut started = call("c1", "t");
    started.result = Some(serde_json::json!(1));
    started.is_error = true;
    batch(&mut c, &[EventInput::ToolStarted(started)]).unwrap();
    let EventBody::ToolCallStarted { call } = &c.events[0].body else {
        panic!();
    };
    assert_eq!((call.result.clone(), call.is_error), (None, false));
    assert_eq!(c.calls.inserted, [("c1".into(), "t".into(), true)]);
}

/// Call `id` of tool `t` as an earlier batch stored it.
fn stored_call(id: &str, open: bool) -> HashMap<String, KnownCall> {
    let call = KnownCall {
        tool: "t".into(),
        open,
    };
    HashMap::from([(id.to_string(), call)])
}

#[test]
fn a_stored_open_call_completes_in_a_later_batch() {
    let mut c = change(RunStatus::Running, "r");
    let known = stored_call("c1", true);
    c.append_events(&[EventInput::ToolCompleted(call("c1", "t"))], known)
        .unwrap();
    assert_eq!(c.calls.closed, ["c1"]);
    assert!(c.calls.inserted.is_empty());
}

#[test]
fn a_call_id_is_used_once_per_run() {
    let mut c = change(RunStatus::Running, "r");
    let known = stored_call("c1", false);
    let err = c
        .append_events(&[EventInput::ToolStarted(call("c1", "t"))], known)
        .unwrap_err();
    assert!(err.to_string().contains("already used"), "{err}");
    let mut c = change(RunStatus::Running, "r");
    let twice = [
        EventInput::ToolStarted(call("c1", "t")),
        EventInput::ToolStarted(call("c1", "t")),
    ];
    assert_eq!(
        batch(&mut c, &twice).unwrap_err().reason(),
        "INVALID_ARGUMENT"
    );
}

#[test]
fn only_an_open_call_completes_and_only_by_its_tool() {
    let mut c = change(RunStatus::Running, "r");
    let err = batch(&mut c, &[EventInput::ToolCompleted(call("nope", ""))]).unwrap_err();
    assert!(err.to_string().contains("no open tool call"), "{err}");
    let mut c = change(RunStatus::Running, "r");
    let twice = [
        EventInput::ToolStarted(call("c1", "t")),
        EventInput::ToolCompleted(call("c1", "t")),
        EventInput::ToolCompleted(call("c1", "t")),
    ];
    assert!(batch(&mut c, &twice).is_err());
    let mut c = change(RunStatus::Running, "r");
    let wrong = [
        EventInput::ToolStarted(call("c1", "t")),
        EventInput::ToolCompleted(call("c1", "u")),
    ];
    let err = batch(&mut c, &wrong).unwrap_err();
    assert!(err.to_string().contains("started for tool"), "{err}");
}

#[test]
fn a_batch_numbers_its_messages_and_adds_usage() {
    let mut c = change(RunStatus::Running, "r");
    let usage = usage(1, 2, 0.0);
    let inputs = [
        EventInput::Delta {
            message_id: "m".into(),
            text: "he".into(),
        },
        EventInput::Message(user("hello")),
        EventInput::Usage(usage.clone()),
        EventInput::Message(user("again")),
        EventInput::Custom {
            name: "n".into(),
            data: serde_json::json!(null),
        },
        EventInput::Error(error("E")),
    ];
    batch(&mut c, &inputs).unwrap();
    let kinds: Vec<_> = c.events.iter().map(|e| e.body.kind()).collect();
    assert_eq!(
        kinds,
        [
            "message_delta",
            "message_completed",
            "usage",
            "message_completed",
            "custom",
            "error"
        ]
    );
    let seqs: Vec<_> = c
        .events
        .iter()
        .filter_map(|e| match e.body {
            EventBody::MessageCompleted { sequence, .. } => Some(sequence),
            _ => None,
        })
        .collect();
    assert_eq!(seqs, [3, 4]);
    assert_eq!(c.run.usage, usage);
    assert_eq!(c.run.update_time, NOW);
    assert!(c.wakes.contains(&run_key()));
    assert!(inputs[1].touches_transcript() && !inputs[0].touches_transcript());
}

// ----- plans and approvals -----

fn step(risk: Risk) -> PlanStep {
    PlanStep {
        tool: "t".into(),
        arguments: None,
        description: String::new(),
        risk,
    }
}

#[test]
fn a_plan_within_the_autonomy_is_approved_automatically() {
    let mut c = change(RunStatus::Running, "r");
    let (auto, approval) = c.propose("ap".into(), &[step(Risk::ReadOnly)]).unwrap();
    assert!(auto);
    assert_eq!(approval.decision, Some(Decision::Approve));
    assert_eq!(approval.decided_by.as_deref(), Some("auto"));
    assert_eq!(c.run.status, RunStatus::Running);
    let kinds: Vec<_> = c.events.iter().map(|e| e.body.kind()).collect();
    assert_eq!(kinds, ["plan_proposed", "approval_decided"]);
}

#[test]
fn a_plan_beyond_the_autonomy_waits_for_a_human() {
    let mut c = change(RunStatus::Running, "r");
    let (auto, approval) = c
        .propose("ap".into(), &[step(Risk::ReadOnly), step(Risk::Write)])
        .unwrap();
    assert!(!auto);
    assert_eq!(approval.expire_time, NOW + 60);
    assert_eq!(c.run.status, RunStatus::RequiresAction);
    assert_eq!(c.run.lease_epoch, 2);
    assert_eq!(c.run.lease_expire_time, None);
    assert!(c.wakes.contains(&WakeKey::any_queue("w")));
    assert!(c.pending("ap") && !c.pending("other"));
}

#[test]
fn a_cancelling_run_proposes_nothing() {
    let mut c = change(RunStatus::Cancelling, "r");
    let err = c.propose("ap".into(), &[]).unwrap_err();
    assert_eq!(err.reason(), "CANCEL_REQUESTED");
}

fn waiting() -> RunChange {
    let mut c = change(RunStatus::Running, "r");
    c.propose("ap".into(), &[step(Risk::Destructive)]).unwrap();
    RunChange::new(c.run, None, NOW + 1)
}

#[test]
fn a_decision_requeues_the_run_either_way() {
    for (decision, message) in [
        (Decision::Approve, "plan approved"),
        (Decision::Reject, "plan rejected"),
    ] {
        let mut c = waiting();
        c.decide(&run_name(), "ap", decision, Some("ok"), "keys/k")
            .unwrap();
        let approval = c.run.approval.clone().unwrap();
        assert_eq!(approval.decision, Some(decision));
        assert_eq!(
            (approval.comment.as_deref(), approval.decided_by.as_deref()),
            (Some("ok"), Some("keys/k"))
        );
        assert_eq!(c.run.status, RunStatus::Queued);
        assert_eq!(c.run.next_attempt_time, NOW + 1);
        let EventBody::StatusChanged { message: got, .. } = &c.events[1].body else {
            panic!();
        };
        assert_eq!(got, message);
        assert!(c.wakes.contains(&WakeKey::queue("w", "a")));
    }
}

#[test]
fn only_a_pending_approval_is_decided() {
    let mut c = waiting();
    let err = c
        .decide(&run_name(), "other", Decision::Approve, None, "k")
        .unwrap_err();
    assert_eq!(err.reason(), "APPROVAL_NOT_PENDING");
    c.decide(&run_name(), "ap", Decision::Approve, None, "k")
        .unwrap();
    let err = c
        .decide(&run_name(), "ap", Decision::Approve, None, "k")
        .unwrap_err();
    assert_eq!(err.reason(), "APPROVAL_NOT_PENDING");
    let mut running = change(RunStatus::Running, "r");
    assert!(
        running
            .decide(&run_name(), "ap", Decision::Approve, None, "k")
            .is_err()
    );
}

// ----- the reaper's timers -----

fn at(mut c: RunChange, now: UnixMicros) -> RunChange {
    c.now = now;
    c
}

#[test]
fn a_lapsed_lease_is_retried_as_worker_lost_fails_the_last_attempt_or_cancels() {
    type Ends = fn(&Option<Ending>) -> bool;
    let requeued: Ends = |ending| {
        matches!(
            ending,
            Some(Ending::Requeue {
                reason: StopReason::WorkerLost,
                delay: RetryPolicy::DEFAULT_INITIAL,
                ..
            })
        )
    };
    let failed: Ends = |ending| {
        matches!(
            ending,
            Some(Ending::Finish {
                to: RunStatus::Failed,
                reason: StopReason::WorkerLost,
                ..
            })
        )
    };
    let cancelled: Ends = |ending| {
        matches!(
            ending,
            Some(Ending::Finish {
                to: RunStatus::Cancelled,
                ..
            })
        )
    };
    let last = Some(RetryPolicy::DEFAULT_MAX_ATTEMPTS);
    // The run's status (and attempt), what fires, the ending, the run's error after.
    let cases = [
        (
            RunStatus::Running,
            None,
            Fired::LeaseRequeued,
            requeued,
            Some(Some(worker_lost())),
        ),
        (RunStatus::Running, last, Fired::LeaseFailed, failed, None),
        (
            RunStatus::Cancelling,
            None,
            Fired::LeaseCancelled,
            cancelled,
            Some(None),
        ),
    ];
    for (status, attempt, expected, ends, error) in cases {
        let mut c = at(change(status, "r"), NOW + 51);
        if let Some(attempt) = attempt {
            c.run.attempt = attempt;
        }
        let (fired, ending) = c.fire(Timer::Lease).unwrap();
        assert_eq!(fired, expected, "{status:?}");
        assert!(ends(&ending), "{status:?}: {ending:?}");
        if let Some(error) = error {
            assert_eq!(c.run.error, error, "{status:?}");
        }
    }
}

#[test]
fn a_lease_not_lapsed_or_not_held_fires_nothing() {
    let cases = [
        at(change(RunStatus::Running, "r"), NOW + 50),
        at(change(RunStatus::Queued, "r"), NOW + 51),
        at(change(RunStatus::RequiresAction, "r"), NOW + 1_000),
    ];
    for mut c in cases {
        assert_eq!(c.fire(Timer::Lease).unwrap(), (Fired::Nothing, None));
        assert!(c.events.is_empty() && c.run.error.is_none());
    }
}

#[test]
fn a_run_past_its_timeout_times_out() {
    let mut c = change(RunStatus::Queued, "r");
    c.run.spec.timeout = 50;
    let deadline = c.run.deadline().unwrap();
    assert_eq!(deadline, NOW - 50);
    let (fired, ending) = c.fire(Timer::Deadline).unwrap();
    assert_eq!(fired, Fired::TimedOut);
    assert_eq!(
        ending,
        Some(Ending::finish(
            RunStatus::TimedOut,
            StopReason::Timeout,
            "the run timed out"
        ))
    );
    let mut c = at(c, deadline);
    assert_eq!(c.fire(Timer::Deadline).unwrap().0, Fired::Nothing);
}

#[test]
fn a_run_without_timeout_or_finished_never_times_out() {
    let mut c = at(change(RunStatus::Running, "r"), i64::MAX);
    assert_eq!(c.run.deadline(), None);
    assert_eq!(c.fire(Timer::Deadline).unwrap().0, Fired::Nothing);
    let mut c = at(change(RunStatus::Succeeded, ""), i64::MAX);
    c.run.spec.timeout = 1;
    assert_eq!(c.fire(Timer::Deadline).unwrap().0, Fired::Nothing);
}

#[test]
fn an_expired_approval_is_rejected_by_expired() {
    let c = waiting();
    let mut c = at(c, NOW + 61);
    assert!(c.approval_expired());
    let (fired, ending) = c.fire(Timer::Approval).unwrap();
    assert_eq!((fired, ending), (Fired::ApprovalExpired, None));
    let approval = c.run.approval.clone().unwrap();
    assert_eq!(approval.decision, Some(Decision::Reject));
    assert_eq!(approval.decided_by.as_deref(), Some("expired"));
    assert_eq!(c.run.status, RunStatus::Queued);
    assert_eq!(c.run.next_attempt_time, NOW + 61);
}

#[test]
fn an_approval_before_its_expiry_or_decided_fires_nothing() {
    let mut c = at(waiting(), NOW + 60);
    assert_eq!(c.fire(Timer::Approval).unwrap().0, Fired::Nothing);
    let mut c = waiting();
    c.decide(&run_name(), "ap", Decision::Approve, None, "k")
        .unwrap();
    let mut c = at(c, NOW + 1_000);
    assert_eq!(c.fire(Timer::Approval).unwrap().0, Fired::Nothing);
}
