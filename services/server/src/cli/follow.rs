//! Following a server stream across dropped connections (`runs follow`, `contexts
//! watch`): both streams resume after a cursor (a run's event sequence, a context's
//! version), so a broken connection or a restarting server is met by opening the stream
//! again after the last item seen, with a growing pause, for up to [`GIVE_UP`].

use std::{future::Future, time::Duration};

use tokio_stream::StreamExt as _;
use tonic::{Code, Response, Status, Streaming};

use super::{Failure, status::describe};

/// How long to keep trying to reconnect without receiving anything.
const GIVE_UP: Duration = Duration::from_secs(120);

/// Whether a stream that failed so can be resumed (the server went away, the connection
/// broke) rather than reported.
fn resumable(status: &Status) -> bool {
    matches!(
        status.code(),
        Code::Unavailable | Code::Unknown | Code::Cancelled | Code::DeadlineExceeded
    ) || (status.code() == Code::Internal && status.message().contains("h2"))
}

/// Opens the stream after `cursor` and hands every item to `on_item`, which returns the
/// new cursor; reopens it after a resumable failure once the stream had been opened.
/// Returns when the stream ends cleanly.
pub async fn follow<T, Open, Fut>(
    mut cursor: i64,
    mut open: Open,
    mut on_item: impl FnMut(T) -> Result<i64, Failure>,
) -> Result<(), Failure>
where
    Open: FnMut(i64) -> Fut,
    Fut: Future<Output = Result<Response<Streaming<T>>, Status>>,
{
    let mut pause = Duration::from_millis(200);
    let mut failing_since: Option<tokio::time::Instant> = None;
    let mut opened_once = false;
    loop {
        let failure = match open(cursor).await {
            Ok(response) => {
                opened_once = true;
                let mut stream = response.into_inner();
                loop {
                    match stream.next().await {
                        None => return Ok(()),
                        Some(Ok(item)) => {
                            cursor = on_item(item)?;
                            failing_since = None;
                            pause = Duration::from_millis(200);
                        }
                        Some(Err(status)) => break status,
                    }
                }
            }
            Err(status) => status,
        };
        // A server that never answered is an address to fix, not an outage to wait out.
        if !opened_once || !resumable(&failure) {
            return Err(failure.into());
        }
        let since = *failing_since.get_or_insert_with(tokio::time::Instant::now);
        if since.elapsed() > GIVE_UP {
            return Err(failure.into());
        }
        eprintln!(
            "connection lost ({}); resuming after {cursor}",
            describe(&failure)
        );
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_secs(5));
    }
}
