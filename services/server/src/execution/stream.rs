//! StreamRunEvents: replays stored events after the cursor, then follows new ones until
//! the terminal status event. The subscription to the run's wake key is taken before the
//! first read and storage is read again on every wake-up (and only then), so events
//! arrive in order and exactly once whatever the notifications do; a client resumes with the last
//! sequence it saw. Server shutdown ends an unfinished stream with UNAVAILABLE, never with
//! a clean end, which would read as the end of the run; so does a database outage longer
//! than `notify::STREAM_OUTAGE_LIMIT`. A client that leaves ends the task at once; a run
//! deleted with its project or workspace ends the stream with NOT_FOUND.

use std::sync::Arc;

use agentry_core::wake::WakeKey;
use agentry_core::{Error, Reason, Result, names::RunName};
use agentry_proto::v1 as pb;

use super::convert::event_to_proto;
use crate::{
    notify::{Follower, Read, Replies, follow},
    request::RequestCtx,
};

const BATCH: u64 = 500;

pub async fn stream_run_events(
    ctx: Arc<RequestCtx>,
    name: RunName,
    req: pb::StreamRunEventsRequest,
) -> Result<Replies<pb::StreamRunEventsResponse>> {
    if req.after_sequence < 0 {
        return Err(Error::invalid("after_sequence", "must not be negative"));
    }
    let changes = ctx.feed.subscribe(vec![WakeKey::run(
        &name.workspace,
        &name.project,
        &name.run,
    )]);
    let run = ctx.store.get_run(&name).await?;
    if req.after_sequence > run.last_sequence {
        return Err(Error::with_metadata(
            Reason::SequenceOutOfRange,
            format!(
                "after_sequence {} is past the run's last event ({})",
                req.after_sequence, run.last_sequence
            ),
            [("last_sequence", run.last_sequence.to_string())],
        ));
    }
    let mut cursor = req.after_sequence;
    let finished = run.status.is_terminal();
    let full_name = name.to_string();
    let stopping = ctx.stopping.clone();
    let serve = move |mut follower: Follower<pb::StreamRunEventsResponse>| async move {
        loop {
            let read = async {
                let read = ctx.store.run_events_after(&name, cursor, BATCH);
                // Its project or workspace was deleted: say which run is gone.
                read.await.map_err(|error| match error {
                    Error::NotFound { .. } => Error::not_found(full_name.clone()),
                    other => other,
                })
            };
            let batch = match follower.read(cursor, read).await {
                Read::Got(batch) => batch,
                Read::Again => continue,
                Read::Ended => return,
            };
            let full = batch.len() as u64 == BATCH;
            for event in batch {
                cursor = event.sequence;
                let terminal = event.body.is_terminal();
                let item = pb::StreamRunEventsResponse {
                    event: Some(event_to_proto(&full_name, event)),
                };
                if !follower.send(item).await {
                    return; // the client went away
                }
                if terminal {
                    return;
                }
            }
            if full {
                continue;
            }
            if finished && cursor >= run.last_sequence {
                return;
            }
            if !follower.wait(&changes, cursor).await {
                return;
            }
        }
    };
    Ok(follow(&stopping, "after_sequence", 256, serve))
}
