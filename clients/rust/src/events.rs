//! Following a run's event log across disconnects.

use std::time::Duration;

use futures::{Stream, StreamExt};
use tonic::Code;

use crate::{Agentry, Error, pb};

fn is_terminal(event: &pb::RunEvent) -> bool {
    use pb::{RunStatus::*, run_event::Kind};
    match &event.kind {
        Some(Kind::StatusChanged(s)) => [Succeeded, Failed, Cancelled, TimedOut]
            .iter()
            .any(|t| *t as i32 == s.status),
        _ => false,
    }
}

/// The events of run `name` after `after_sequence`, ending after the terminal status
/// event. A dropped connection (UNAVAILABLE, or the stream breaking off) reconnects and
/// resumes after the last event seen, so nothing is lost or repeated; other errors end
/// the stream with that error.
pub fn run_events(
    client: &Agentry,
    name: String,
    after_sequence: i64,
) -> impl Stream<Item = Result<pb::RunEvent, Error>> + use<> {
    struct State {
        client: pb::execution_service_client::ExecutionServiceClient<crate::Svc>,
        name: String,
        cursor: i64,
        stream: Option<tonic::Streaming<pb::StreamRunEventsResponse>>,
        done: bool,
        retries: u32,
    }
    let state = State {
        client: client.execution.clone(),
        name,
        cursor: after_sequence,
        stream: None,
        done: false,
        retries: 0,
    };
    futures::stream::unfold(state, |mut s| async move {
        loop {
            if s.done {
                return None;
            }
            if s.stream.is_none() {
                let request = pb::StreamRunEventsRequest {
                    name: s.name.clone(),
                    after_sequence: s.cursor,
                };
                match s.client.stream_run_events(request).await {
                    Ok(response) => s.stream = Some(response.into_inner()),
                    Err(status) if status.code() == Code::Unavailable && s.retries < 30 => {
                        s.retries += 1;
                        tokio::time::sleep(Duration::from_millis(100 * u64::from(s.retries))).await;
                        continue;
                    }
                    Err(status) => {
                        s.done = true;
                        return Some((Err(status.into()), s));
                    }
                }
            }
            let stream = s.stream.as_mut().expect("opened above");
            match stream.next().await {
                Some(Ok(item)) => {
                    let Some(event) = item.event else { continue };
                    s.retries = 0;
                    s.cursor = event.sequence;
                    s.done = is_terminal(&event);
                    return Some((Ok(event), s));
                }
                // The connection dropped before the terminal event: resume.
                None => s.stream = None,
                Some(Err(status))
                    if matches!(status.code(), Code::Unavailable | Code::Unknown)
                        && s.retries < 30 =>
                {
                    s.retries += 1;
                    s.stream = None;
                }
                Some(Err(status)) => {
                    s.done = true;
                    return Some((Err(status.into()), s));
                }
            }
        }
    })
}
