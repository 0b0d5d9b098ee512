//! Write coalescing for accepted connections.
//!
//! h2 flushes its buffer before it queues a frame after a DATA frame of more than 256
//! bytes, so a unary response with a body of that size reaches the socket in two
//! writes: headers and message, then the 10-byte trailers. Each write to a socket is a
//! system call and, on the client, one more wake-up and read. A `ReadContext` of a
//! 1 KiB document did that on every call (seen with strace: `writev` of 1291 bytes, then
//! of 10).
//!
//! [`Coalesced`] copies small writes into a buffer of its own and puts the first flush of
//! a batch off until the connection's task runs again: it wakes the task and answers
//! "flushed". h2 ends every poll of a connection with a flush, so the write happens on
//! the very next poll, together with whatever frames were queued meanwhile: the rest of
//! that response, and other responses of the same connection. Writes are never put off
//! longer than that: a second flush writes, and so does a buffer past
//! [`BUFFER_LIMIT`]. Large payloads skip the copy.

use std::{
    io::{self, IoSlice},
    pin::Pin,
    task::{Context, Poll, ready},
};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tonic::transport::server::Connected;

/// Buffered bytes past which a write goes to the socket without waiting for a flush.
pub const BUFFER_LIMIT: usize = 64 * 1024;

/// Writes of at least this many bytes are not copied (the buffer is written out first,
/// then they go to the socket as they are).
const COPY_LIMIT: usize = 16 * 1024;

pub struct Coalesced<S> {
    inner: S,
    buffer: Vec<u8>,
    /// Written out of `buffer` so far.
    written: usize,
    /// A flush was answered without writing; the next one writes.
    deferred: bool,
}

impl<S> Coalesced<S> {
    pub fn new(inner: S) -> Self {
        Self {
            inner,
            buffer: Vec::new(),
            written: 0,
            deferred: false,
        }
    }
}

impl<S: AsyncWrite + Unpin> Coalesced<S> {
    /// Writes the whole buffer to `inner`.
    fn write_out(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.written < self.buffer.len() {
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &self.buffer[self.written..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.written += n;
        }
        self.buffer.clear();
        self.written = 0;
        self.deferred = false;
        if self.buffer.capacity() > BUFFER_LIMIT {
            self.buffer.shrink_to(BUFFER_LIMIT);
        }
        Poll::Ready(Ok(()))
    }

    /// Makes room for `len` more bytes: `Ready(true)` when they should be copied,
    /// `Ready(false)` when they should go straight to the socket (the buffer is empty
    /// then).
    fn make_room(&mut self, cx: &mut Context<'_>, len: usize) -> Poll<io::Result<bool>> {
        if len >= COPY_LIMIT || self.buffer.len() + len > BUFFER_LIMIT {
            ready!(self.write_out(cx))?;
        }
        Poll::Ready(Ok(len < COPY_LIMIT))
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Coalesced<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Coalesced<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if ready!(self.make_room(cx, buf.len()))? {
            self.buffer.extend_from_slice(buf);
            Poll::Ready(Ok(buf.len()))
        } else {
            Pin::new(&mut self.inner).poll_write(cx, buf)
        }
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let len = bufs.iter().map(|b| b.len()).sum();
        if ready!(self.make_room(cx, len))? {
            for buf in bufs {
                self.buffer.extend_from_slice(buf);
            }
            Poll::Ready(Ok(len))
        } else {
            Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
        }
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.buffer.is_empty() {
            return Pin::new(&mut self.inner).poll_flush(cx);
        }
        if !self.deferred {
            // Written on the next poll of this task, which ends with a flush.
            self.deferred = true;
            cx.waker().wake_by_ref();
            return Poll::Ready(Ok(()));
        }
        ready!(self.write_out(cx))?;
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.write_out(cx))?;
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

impl<S: Connected> Connected for Coalesced<S> {
    type ConnectInfo = S::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.inner.connect_info()
    }
}

#[cfg(test)]
mod tests {
    use std::{
        sync::{
            Arc,
            atomic::{AtomicUsize, Ordering},
        },
        task::Wake,
    };

    use super::*;

    /// Records each write it is given.
    #[derive(Default)]
    struct Recorder {
        writes: Vec<Vec<u8>>,
        /// Accept at most this many bytes per write (0: all).
        max: usize,
    }

    impl AsyncWrite for Recorder {
        fn poll_write(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            let n = if self.max == 0 {
                buf.len()
            } else {
                buf.len().min(self.max)
            };
            self.writes.push(buf[..n].to_vec());
            Poll::Ready(Ok(n))
        }

        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }

        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    #[derive(Default)]
    struct Wakes(AtomicUsize);

    impl Wake for Wakes {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn write(c: &mut Coalesced<Recorder>, cx: &mut Context<'_>, bytes: &[u8]) {
        assert!(matches!(
            Pin::new(c).poll_write(cx, bytes),
            Poll::Ready(Ok(n)) if n == bytes.len()
        ));
    }

    fn flush(c: &mut Coalesced<Recorder>, cx: &mut Context<'_>) {
        assert!(matches!(Pin::new(c).poll_flush(cx), Poll::Ready(Ok(()))));
    }

    #[test]
    fn two_flushes_in_one_poll_make_one_write() {
        let wakes = Arc::new(Wakes::default());
        let waker = wakes.clone().into();
        let mut cx = Context::from_waker(&waker);
        let mut c = Coalesced::new(Recorder::default());
        write(&mut c, &mut cx, b"headers+data");
        flush(&mut c, &mut cx);
        assert!(c.inner.writes.is_empty(), "the first flush waits");
        assert_eq!(wakes.0.load(Ordering::SeqCst), 1, "and wakes the task");
        write(&mut c, &mut cx, b"trailers");
        flush(&mut c, &mut cx);
        assert_eq!(c.inner.writes, vec![b"headers+datatrailers".to_vec()]);
        // Nothing buffered: a flush passes through, and the next batch waits again.
        flush(&mut c, &mut cx);
        assert_eq!(c.inner.writes.len(), 1);
        write(&mut c, &mut cx, b"next");
        flush(&mut c, &mut cx);
        assert_eq!(c.inner.writes.len(), 1);
        flush(&mut c, &mut cx);
        assert_eq!(c.inner.writes[1], b"next");
        assert_eq!(wakes.0.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn large_and_overflowing_writes_keep_their_order() {
        let waker = Arc::new(Wakes::default()).into();
        let mut cx = Context::from_waker(&waker);
        let mut c = Coalesced::new(Recorder::default());
        write(&mut c, &mut cx, b"small");
        let large = vec![7u8; COPY_LIMIT];
        write(&mut c, &mut cx, &large);
        assert_eq!(c.inner.writes, vec![b"small".to_vec(), large.clone()]);
        // Filling the buffer writes it out before it passes the limit.
        let chunk = vec![1u8; COPY_LIMIT - 1];
        let mut sent = 0;
        while sent + chunk.len() <= BUFFER_LIMIT {
            write(&mut c, &mut cx, &chunk);
            sent += chunk.len();
        }
        assert_eq!(c.inner.writes.len(), 2);
        write(&mut c, &mut cx, &chunk);
        assert_eq!(c.inner.writes.len(), 3);
        assert_eq!(c.inner.writes[2].len(), sent);
        assert_eq!(c.buffer.len(), chunk.len());
    }

    #[test]
    fn partial_writes_and_shutdown_write_everything() {
        let waker = Arc::new(Wakes::default()).into();
        let mut cx = Context::from_waker(&waker);
        let mut c = Coalesced::new(Recorder {
            max: 3,
            ..Default::default()
        });
        write(&mut c, &mut cx, b"abcdefgh");
        flush(&mut c, &mut cx);
        assert!(matches!(
            Pin::new(&mut c).poll_shutdown(&mut cx),
            Poll::Ready(Ok(()))
        ));
        assert_eq!(c.inner.writes.concat(), b"abcdefgh");
        assert!(c.buffer.is_empty());
    }
}
