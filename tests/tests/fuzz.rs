//! Every method of the three services, every field of its request, fed hostile values
//! generated from the proto descriptors (see `fuzz_support::mutate`), against a real
//! server on each back end. Every answer must:
//!
//! - never be INTERNAL, UNKNOWN, UNIMPLEMENTED or DATA_LOSS;
//! - fit in what every gRPC client accepts: the status's metadata (message, encoded
//!   details) under 8 KiB;
//! - if it refuses the request, leave every table of the database as it was;
//! - for U+0000 in any text, be INVALID_ARGUMENT naming the field; for invalid UTF-8,
//!   MALFORMED_REQUEST naming the field.
//!
//! And the server (in this process) must not panic, whatever its client saw.
//!
//! The fuzzed server runs with its reaper idle, so that nothing but requests changes the
//! database while it is compared. Afterwards a server with a working reaper takes over
//! the same database, and another workspace's lapsed lease must be re-queued and its
//! timed-out run must time out; the fuzzed workspace must still run a run end to end.
//!
//! The run is deterministic and prints
//! `fuzz: <backend>: N requests, M methods, K fields, F failures (S s)`.

mod fuzz_support;

use std::{
    collections::BTreeSet,
    time::{Duration, Instant},
};

use agentry_e2e::{Backend, fresh_database, json, pb};
use fuzz_support::{
    Fingerprinter, Outcome, Server, call_raw,
    mutate::{Expect, variants},
    status_wire_bytes,
    world::{ACME, REAPER_WAIT, World},
};
use prost_reflect::{DescriptorPool, DynamicMessage};
use tonic::{Code, Status};
use tonic_types::StatusExt;

/// A status any client can read is well under this (gRPC's C core: 8 KiB soft limit).
const MAX_STATUS_BYTES: usize = 8 * 1024;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fuzz_every_method_on_sqlite() {
    fuzz(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fuzz_every_method_on_postgres() {
    fuzz(Backend::Postgres).await;
}

/// Panics anywhere in this process (the server runs in it), with where they happened.
fn count_panics() -> &'static std::sync::Mutex<Vec<String>> {
    static PANICS: std::sync::OnceLock<std::sync::Mutex<Vec<String>>> = std::sync::OnceLock::new();
    PANICS.get_or_init(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if let Some(panics) = PANICS.get() {
                panics.lock().expect("panics").push(info.to_string());
            }
            default(info);
        }));
        Default::default()
    })
}

async fn fuzz(backend: Backend) {
    let started = Instant::now();
    let panics = count_panics();
    let database = fresh_database(backend).await;
    let root = format!("agk_root_{}", uuid::Uuid::now_v7().simple());
    // The reaper's first pass runs at start, before anything exists; then it idles.
    let server = Server::start(&database.url, &root, Duration::from_secs(3600)).await;
    let mut world = World::setup(&server, &root).await;
    let other = Other::setup(&server, &root).await;
    let mut fingerprints = Fingerprinter::connect(&database).await;
    // The fingerprint sees a committed write, or the comparisons below prove nothing.
    let unwritten = fingerprints.take().await;
    let _: pb::Project = Server::must(
        server
            .call(
                "RegistryService/CreateProject",
                &world.admin,
                pb::CreateProjectRequest {
                    parent: ACME.into(),
                    project_id: "probe".into(),
                    project: Some(pb::Project::default()),
                    request_id: String::new(),
                },
            )
            .await,
        "a probe write",
    );
    let written = unwritten.changed(&fingerprints.take().await);
    assert!(
        !written.is_empty(),
        "the fingerprint misses a committed write"
    );

    let pool = DescriptorPool::decode(agentry_proto::FILE_DESCRIPTOR_SET).expect("descriptors");
    let mut failures: Vec<String> = Vec::new();
    let (mut requests, mut methods, mut fields) = (0usize, 0usize, BTreeSet::new());
    let mut answers: std::collections::BTreeMap<String, usize> = Default::default();
    let mut largest_status = 0;
    let mut before = fingerprints.take().await;
    for service in pool.services().filter(|s| s.package_name() == "agentry.v1") {
        for method in service.methods() {
            methods += 1;
            let name = method.name().to_owned();
            let path = format!("/{}/{}", service.full_name(), name);
            let streaming = method.is_server_streaming();
            let original = world.baseline(&server, &name).await;
            let baseline = DynamicMessage::decode(method.input(), original.as_slice())
                .expect("the baseline decodes");
            // The baseline itself must be accepted, or its variants test little.
            let key = world.key(&name).to_owned();
            let answer = call_raw(&server.channel, &path, &key, original.clone(), streaming).await;
            if let Outcome::Refused(status) = &answer {
                failures.push(format!("{name}: the baseline is refused: {status:?}"));
            } else {
                world.accepted(&name);
            }
            let mut current = Vec::new();
            for variant in variants(&baseline, &world.page_token) {
                // A victim or a lease used up by an accepted request is replaced (which
                // writes), and the variant is moved onto the replacement.
                let fresh = world.baseline(&server, &name).await;
                if fresh != current {
                    before = fingerprints.take().await;
                    current = fresh.clone();
                }
                let bytes = match fresh == original {
                    true => variant.bytes,
                    false => rebase(&method.input(), &baseline, &fresh, variant.bytes),
                };
                requests += 1;
                fields.insert(format!("{name}.{}", variant.field));
                let answer = call_raw(&server.channel, &path, &key, bytes, streaming).await;
                let context = format!("{name} {} = {}", variant.field, variant.what);
                let code = match &answer {
                    Outcome::Ok | Outcome::Open => "OK".to_owned(),
                    Outcome::Refused(status) => format!("{:?}", status.code()),
                };
                *answers.entry(code).or_default() += 1;
                match answer {
                    Outcome::Ok | Outcome::Open => {
                        if variant.expect != Expect::Anything {
                            failures.push(format!(
                                "{context}: accepted, expected {:?}",
                                variant.expect
                            ));
                        }
                        world.accepted(&name);
                        before = fingerprints.take().await;
                    }
                    Outcome::Refused(status) => {
                        largest_status = largest_status.max(status_wire_bytes(&status));
                        check_status(&context, &status, &variant.expect, &mut failures);
                        let after = fingerprints.take().await;
                        let changed = before.changed(&after);
                        // A call cut short by its deadline may have done its work.
                        let cut_short =
                            matches!(status.code(), Code::DeadlineExceeded | Code::Cancelled);
                        if !changed.is_empty() && !cut_short {
                            failures.push(format!(
                                "{context}: refused with {:?} but changed {changed:?}",
                                status.code()
                            ));
                        }
                        before = after;
                    }
                }
            }
        }
    }
    let fuzz_time = started.elapsed();
    failures.extend(
        panics
            .lock()
            .expect("panics")
            .drain(..)
            .map(|p| format!("a panic: {p}")),
    );

    // A server with a working reaper takes over the database.
    let live_lease = world.live_lease();
    server.stop().await;
    let server = Server::start(&database.url, &root, Duration::from_millis(100)).await;
    if let Err(failure) = other.reaper_serves_it(&server).await {
        failures.push(failure);
    }
    if let Err(failure) = acme_still_runs(&server, &world, live_lease).await {
        failures.push(failure);
    }
    server.stop().await;
    database.drop_database().await;

    let backend = format!("{backend:?}").to_lowercase();
    println!(
        "fuzz: {backend}: {requests} requests, {methods} methods, {} fields, {} failures ({:.1} s fuzzing, {:.1} s in all)",
        fields.len(),
        failures.len(),
        fuzz_time.as_secs_f64(),
        started.elapsed().as_secs_f64(),
    );
    println!("fuzz: {backend}: answers {answers:?}; the largest status {largest_status} bytes");
    for failure in failures.iter().take(40) {
        println!("  {failure}");
    }
    assert!(
        failures.is_empty(),
        "{} failures (the first are above)",
        failures.len()
    );
    assert!(
        methods >= 50,
        "every method of the three services: {methods}"
    );
}

/// `variant` was generated from `old`; the world now offers `fresh` (a new victim or
/// lease). Fields the variant did not touch take their value from `fresh`: only the
/// victim's name or the task token differ, and those are top-level strings.
fn rebase(
    desc: &prost_reflect::MessageDescriptor,
    old: &DynamicMessage,
    fresh: &[u8],
    variant: Vec<u8>,
) -> Vec<u8> {
    use prost::Message as _;
    let fresh = DynamicMessage::decode(desc.clone(), fresh).expect("the fresh baseline decodes");
    let Ok(mut mutated) = DynamicMessage::decode(desc.clone(), variant.as_slice()) else {
        // Deliberately undecodable (invalid UTF-8): sent as generated.
        return variant;
    };
    for field in desc.fields() {
        let (was, now) = (old.get_field(&field), fresh.get_field(&field));
        if was != now && mutated.get_field(&field) == was {
            mutated.set_field(&field, now.into_owned());
        }
    }
    mutated.encode_to_vec()
}

fn check_status(context: &str, status: &Status, expect: &Expect, failures: &mut Vec<String>) {
    if matches!(
        status.code(),
        Code::Internal | Code::Unknown | Code::Unimplemented | Code::DataLoss
    ) {
        failures.push(format!(
            "{context}: {:?} {:?}",
            status.code(),
            status.message()
        ));
    }
    let size = status_wire_bytes(status);
    if size >= MAX_STATUS_BYTES {
        failures.push(format!("{context}: a {size}-byte status"));
    }
    if let Expect::Refused {
        reason,
        field,
        exact,
    } = expect
    {
        let info = status.get_details_error_info().map(|i| i.reason);
        let fields: Vec<String> = status
            .get_details_bad_request()
            .map(|b| b.field_violations.into_iter().map(|v| v.field).collect())
            .unwrap_or_default();
        let named = fields.iter().any(|f| {
            if *exact {
                f == field
            } else {
                f.starts_with(field.as_str())
            }
        });
        if status.code() != Code::InvalidArgument || info.as_deref() != Some(reason) || !named {
            failures.push(format!(
                "{context}: expected INVALID_ARGUMENT {reason} on {field}, got {:?} {info:?} {fields:?}: {}",
                status.code(),
                status.message()
            ));
        }
    }
}

/// Another workspace, set up before the fuzz; after it, the reaper must serve its
/// timers.
struct Other {
    admin: String,
    worker: String,
    sessions: [String; 2],
}

const OTHER: &str = "workspaces/other";

impl Other {
    async fn setup(server: &Server, root: &str) -> Self {
        let _: pb::Workspace = Server::must(
            server
                .call(
                    "RegistryService/CreateWorkspace",
                    root,
                    pb::CreateWorkspaceRequest {
                        workspace_id: "other".into(),
                        workspace: Some(pb::Workspace::default()),
                        request_id: String::new(),
                    },
                )
                .await,
            "create other",
        );
        let mut keys = Vec::new();
        for role in [pb::Role::Admin, pb::Role::Worker] {
            let created: pb::CreateApiKeyResponse = Server::must(
                server
                    .call(
                        "RegistryService/CreateApiKey",
                        root,
                        pb::CreateApiKeyRequest {
                            parent: OTHER.into(),
                            api_key: Some(pb::ApiKey {
                                role: role as i32,
                                ..Default::default()
                            }),
                            request_id: String::new(),
                        },
                    )
                    .await,
                "a key of other",
            );
            keys.push(created.secret);
        }
        let (admin, worker) = (keys[0].clone(), keys[1].clone());
        let _: pb::Project = Server::must(
            server
                .call(
                    "RegistryService/CreateProject",
                    &admin,
                    pb::CreateProjectRequest {
                        parent: OTHER.into(),
                        project_id: "p".into(),
                        project: Some(pb::Project::default()),
                        request_id: String::new(),
                    },
                )
                .await,
            "other's project",
        );
        let _: pb::Agent = Server::must(
            server
                .call(
                    "RegistryService/CreateAgent",
                    &admin,
                    pb::CreateAgentRequest {
                        parent: OTHER.into(),
                        agent_id: "a".into(),
                        agent: Some(pb::Agent {
                            enabled: Some(true),
                            ..Default::default()
                        }),
                        request_id: String::new(),
                    },
                )
                .await,
            "other's agent",
        );
        let _: pb::Instance = Server::must(
            server
                .call(
                    "RegistryService/CreateInstance",
                    &admin,
                    pb::CreateInstanceRequest {
                        parent: format!("{OTHER}/projects/p"),
                        instance_id: "i".into(),
                        instance: Some(pb::Instance {
                            agent: format!("{OTHER}/agents/a"),
                            ..Default::default()
                        }),
                        request_id: String::new(),
                    },
                )
                .await,
            "other's instance",
        );
        let mut sessions = Vec::new();
        for id in ["lapsed", "late"] {
            let created: pb::Session = Server::must(
                server
                    .call(
                        "ExecutionService/CreateSession",
                        &admin,
                        pb::CreateSessionRequest {
                            parent: format!("{OTHER}/projects/p"),
                            session_id: id.into(),
                            session: Some(pb::Session {
                                instance: format!("{OTHER}/projects/p/instances/i"),
                                ..Default::default()
                            }),
                            request_id: String::new(),
                        },
                    )
                    .await,
                "other's session",
            );
            sessions.push(created.name);
        }
        Self {
            admin,
            worker,
            sessions: [sessions[0].clone(), sessions[1].clone()],
        }
    }

    /// A lease that lapses is re-queued (attempt 2); a run past its timeout times out.
    async fn reaper_serves_it(&self, server: &Server) -> Result<(), String> {
        let run = |session: &str, timeout: Option<prost_types::Duration>| pb::CreateRunRequest {
            parent: session.into(),
            run: Some(pb::Run {
                input: vec![pb::Message {
                    role: pb::MessageRole::User as i32,
                    content: "hi".into(),
                    ..Default::default()
                }],
                timeout,
                ..Default::default()
            }),
            request_id: String::new(),
            approval_timeout: None,
        };
        let lapsing: pb::Run = server
            .call(
                "ExecutionService/CreateRun",
                &self.admin,
                run(&self.sessions[0], None),
            )
            .await
            .map_err(|s| format!("other: create a run: {s:?}"))?;
        let polled: pb::PollTaskResponse = server
            .call(
                "ExecutionService/PollTask",
                &self.worker,
                pb::PollTaskRequest {
                    parent: OTHER.into(),
                    agents: vec![format!("{OTHER}/agents/a")],
                    wait: Some(prost_types::Duration {
                        seconds: 1,
                        nanos: 0,
                    }),
                    lease_duration: Some(prost_types::Duration {
                        seconds: 1,
                        nanos: 0,
                    }),
                    ..Default::default()
                },
            )
            .await
            .map_err(|s| format!("other: poll: {s:?}"))?;
        if polled.task.is_none() {
            return Err("other: the worker found nothing to claim".into());
        }
        let timeout = Some(prost_types::Duration {
            seconds: 1,
            nanos: 0,
        });
        let late: pb::Run = server
            .call(
                "ExecutionService/CreateRun",
                &self.admin,
                run(&self.sessions[1], timeout),
            )
            .await
            .map_err(|s| format!("other: create a run with a timeout: {s:?}"))?;
        let deadline = Instant::now() + REAPER_WAIT;
        loop {
            let get = |name: String| pb::GetRunRequest { name };
            let lapsing: pb::Run = server
                .call(
                    "ExecutionService/GetRun",
                    &self.admin,
                    get(lapsing.name.clone()),
                )
                .await
                .map_err(|s| format!("other: get a run: {s:?}"))?;
            let late: pb::Run = server
                .call(
                    "ExecutionService/GetRun",
                    &self.admin,
                    get(late.name.clone()),
                )
                .await
                .map_err(|s| format!("other: get a run: {s:?}"))?;
            let requeued = lapsing.attempt >= 2;
            let timed_out = late.status == pb::RunStatus::TimedOut as i32;
            if requeued && timed_out {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "the reaper did not serve another workspace after the fuzz: lapsed lease \
                     at attempt {} ({:?}), timed-out run {:?}",
                    lapsing.attempt,
                    pb::RunStatus::try_from(lapsing.status),
                    pb::RunStatus::try_from(late.status)
                ));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// The fuzzed workspace still works: the attempt the fuzz left open completes, and a new
/// agent's run goes from creation to SUCCEEDED.
async fn acme_still_runs(
    server: &Server,
    world: &World,
    lease: Option<String>,
) -> Result<(), String> {
    let complete = |task_token: String| pb::CompleteTaskRequest {
        task_token,
        output: vec![pb::Message {
            role: pb::MessageRole::Assistant as i32,
            content: "done".into(),
            ..Default::default()
        }],
        ..Default::default()
    };
    if let Some(token) = lease {
        let _: pb::Run = server
            .call(
                "ExecutionService/CompleteTask",
                &world.worker,
                complete(token),
            )
            .await
            .map_err(|s| format!("acme: the fuzz's open attempt does not complete: {s:?}"))?;
    }
    let admin = &world.admin;
    let web = format!("{ACME}/projects/web");
    let _: pb::Agent = server
        .call(
            "RegistryService/CreateAgent",
            admin,
            pb::CreateAgentRequest {
                parent: ACME.into(),
                agent_id: "after".into(),
                agent: Some(pb::Agent {
                    enabled: Some(true),
                    ..Default::default()
                }),
                request_id: String::new(),
            },
        )
        .await
        .map_err(|s| format!("acme: create an agent: {s:?}"))?;
    let _: pb::Instance = server
        .call(
            "RegistryService/CreateInstance",
            admin,
            pb::CreateInstanceRequest {
                parent: web.clone(),
                instance_id: "after".into(),
                instance: Some(pb::Instance {
                    agent: format!("{ACME}/agents/after"),
                    ..Default::default()
                }),
                request_id: String::new(),
            },
        )
        .await
        .map_err(|s| format!("acme: create an instance: {s:?}"))?;
    let session: pb::Session = server
        .call(
            "ExecutionService/CreateSession",
            admin,
            pb::CreateSessionRequest {
                parent: web.clone(),
                session_id: "after".into(),
                session: Some(pb::Session {
                    instance: format!("{web}/instances/after"),
                    ..Default::default()
                }),
                request_id: String::new(),
            },
        )
        .await
        .map_err(|s| format!("acme: create a session: {s:?}"))?;
    let run: pb::Run = server
        .call(
            "ExecutionService/CreateRun",
            admin,
            pb::CreateRunRequest {
                parent: session.name,
                run: Some(pb::Run {
                    input: vec![pb::Message {
                        role: pb::MessageRole::User as i32,
                        content: "still there?".into(),
                        ..Default::default()
                    }],
                    ..Default::default()
                }),
                ..Default::default()
            },
        )
        .await
        .map_err(|s| format!("acme: create a run: {s:?}"))?;
    let polled: pb::PollTaskResponse = server
        .call(
            "ExecutionService/PollTask",
            &world.worker,
            pb::PollTaskRequest {
                parent: ACME.into(),
                agents: vec![format!("{ACME}/agents/after")],
                wait: Some(prost_types::Duration {
                    seconds: 1,
                    nanos: 0,
                }),
                ..Default::default()
            },
        )
        .await
        .map_err(|s| format!("acme: poll: {s:?}"))?;
    let task = polled.task.ok_or("acme: nothing to claim")?;
    let _: pb::AppendRunEventsResponse = server
        .call(
            "ExecutionService/AppendRunEvents",
            &world.worker,
            pb::AppendRunEventsRequest {
                task_token: task.task_token.clone(),
                events: vec![pb::RunEventInput {
                    kind: Some(pb::run_event_input::Kind::Custom(pb::CustomEvent {
                        name: "still".into(),
                        data: Some(agentry_e2e::to_struct(json!({"ok": true}))),
                    })),
                }],
                request_id: String::new(),
            },
        )
        .await
        .map_err(|s| format!("acme: append: {s:?}"))?;
    let done: pb::Run = server
        .call(
            "ExecutionService/CompleteTask",
            &world.worker,
            complete(task.task_token),
        )
        .await
        .map_err(|s| format!("acme: complete: {s:?}"))?;
    if done.status != pb::RunStatus::Succeeded as i32 || done.name != run.name {
        return Err(format!(
            "acme: the run ended {:?}",
            pb::RunStatus::try_from(done.status)
        ));
    }
    Ok(())
}
