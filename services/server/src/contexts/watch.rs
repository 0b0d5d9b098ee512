//! WatchContext: replays retained versions after the cursor from storage, then follows
//! new ones. The subscription to the context's wake key is taken before the first read,
//! so a version committed between a read and the wait still wakes the stream; storage is
//! read again on every wake-up (and only then), so versions arrive in order and exactly
//! once whatever the notifications do. Compaction past the cursor ends the stream with OUT_OF_RANGE
//! rather than skipping; deleting the context ends it with NOT_FOUND; server shutdown ends
//! it with UNAVAILABLE (resume elsewhere: the history did not end), and so does a database
//! outage longer than `notify::STREAM_OUTAGE_LIMIT`; a client cancel ends it quietly and
//! at once, whatever the task was waiting for.

use std::sync::Arc;

use agentry_core::{Error, Result, names::ContextName, port::VersionsAfter, wake::WakeKey};
use agentry_proto::v1 as pb;

use super::convert::version_to_proto;
use crate::{
    notify::{Follower, Read, Replies, follow},
    request::RequestCtx,
};

const BATCH: u64 = 100;

/// The next batch of versions after `after`.
fn batch(after: i64, full: bool) -> VersionsAfter {
    VersionsAfter {
        after,
        limit: BATCH,
        full,
    }
}

pub async fn watch_context(
    ctx: Arc<RequestCtx>,
    name: ContextName,
    req: pb::WatchContextRequest,
) -> Result<Replies<pb::WatchContextResponse>> {
    let full = match pb::ContextVersionView::try_from(req.view) {
        Ok(pb::ContextVersionView::Basic) => false,
        Ok(_) => true,
        Err(_) => return Err(Error::invalid("view", "BASIC or FULL")),
    };
    let changes = ctx.feed.subscribe(vec![WakeKey::context(
        &name.workspace,
        &name.project,
        &name.context,
    )]);
    let mut cursor = match req.after_version {
        -1 => ctx.store.get_context(&name).await?.head_version,
        v if v < -1 => {
            return Err(Error::invalid(
                "after_version",
                "a version, 0 for all retained ones, or -1 for new ones only",
            ));
        }
        v => v,
    };
    // Fail the call itself (not the stream) when the start is already compacted or gone.
    let mut pending = ctx
        .store
        .context_versions_after(&name, batch(cursor, full))
        .await?;
    let stopping = ctx.stopping.clone();
    let serve = move |mut follower: Follower<pb::WatchContextResponse>| async move {
        loop {
            for version in pending.drain(..) {
                cursor = version.version;
                let item = pb::WatchContextResponse {
                    version: Some(version_to_proto(&name, version)),
                };
                if !follower.send(item).await {
                    return; // the client went away
                }
            }
            let read = ctx.store.context_versions_after(&name, batch(cursor, full));
            match follower.read(cursor, read).await {
                Read::Got(batch) if batch.is_empty() => {}
                Read::Got(batch) => {
                    pending = batch;
                    continue;
                }
                Read::Again => continue,
                Read::Ended => return,
            }
            // Caught up: wait for a wake-up about this context, the poll timer, shutdown
            // or the client leaving.
            if !follower.wait(&changes, cursor).await {
                return;
            }
        }
    };
    Ok(follow(&stopping, "after_version", 64, serve))
}
