//! Starts a run on an instance and prints its events until the run ends (a worker serving
//! the instance's agent executes it, e.g. clients/python/examples/echo_worker.py).
//!
//!     AGENTRY_URL=http://127.0.0.1:50051 AGENTRY_API_KEY=agk_… \
//!       cargo run -p agentry-client --example start_run -- workspaces/acme/projects/web/instances/echo-1

use agentry_client::{Error, connect, pb, run_events};
use futures::StreamExt;

#[tokio::main]
async fn main() -> Result<(), Error> {
    let url = std::env::var("AGENTRY_URL").unwrap_or_else(|_| "http://127.0.0.1:50051".into());
    let key = std::env::var("AGENTRY_API_KEY").expect("AGENTRY_API_KEY");
    let instance = std::env::args().nth(1).expect("an instance name");

    // Connect: one HTTP/2 connection, `authorization: Bearer <key>` on every call.
    let mut agentry = connect(url, &key).await?;

    // One call. A failure converts into agentry_client::Error with the status details.
    let found = agentry
        .registry
        .get_instance(pb::GetInstanceRequest {
            name: instance.clone(),
        })
        .await?
        .into_inner();
    println!(
        "{} runs {} (revision {})",
        found.name, found.agent, found.agent_revision
    );

    // Stream a run: stored events, then live ones, resuming after a dropped connection,
    // until the terminal status.
    let project = &instance[..instance.find("/instances/").expect("an instance name")];
    let session = agentry
        .execution
        .create_session(pb::CreateSessionRequest {
            parent: project.into(),
            session: Some(pb::Session {
                instance,
                ..Default::default()
            }),
            ..Default::default()
        })
        .await?
        .into_inner();
    let run = agentry
        .execution
        .create_run(pb::CreateRunRequest {
            parent: session.name,
            run: Some(pb::Run {
                input: vec![pb::Message {
                    role: pb::MessageRole::User as i32,
                    content: "hello there".into(),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            ..Default::default()
        })
        .await?
        .into_inner();
    let mut events = std::pin::pin!(run_events(&agentry, run.name, 0));
    while let Some(event) = events.next().await {
        let event = event?;
        println!("#{} {:?}", event.sequence, event.kind);
    }
    Ok(())
}
