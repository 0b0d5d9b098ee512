//! A TCP proxy between a server and Postgres that a test controls, for database faults
//! without touching the database server: [`PgProxy::cut`] drops every connection and
//! refuses new ones (an outage whose calls fail fast) and [`PgProxy::stall`] lets no byte
//! through either way while keeping every connection open (an outage whose calls hang),
//! until [`PgProxy::restore`]; [`PgProxy::hold_reply_after`]
//! delays the answer to the next statement that contains a marker (a COMMIT that is
//! applied but answered late).
//!
//! The proxy runs on a runtime of its own, so that its connection tasks (which a stall
//! keeps alive) never count among the tasks of the test's runtime, which runs the server.

use std::{
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    task::JoinHandle,
    time::Instant,
};

pub struct PgProxy {
    pub addr: SocketAddr,
    upstream_url: String,
    shared: Arc<Shared>,
    acceptor: JoinHandle<()>,
    runtime: Option<tokio::runtime::Runtime>,
}

#[derive(Default)]
struct Shared {
    down: AtomicBool,
    stalled: AtomicBool,
    unstalled: tokio::sync::Notify,
    connections: Mutex<Vec<JoinHandle<()>>>,
    /// One-shot: hold replies for this long after a client sends this marker.
    hold: Mutex<Option<(Vec<u8>, Duration)>>,
}

impl PgProxy {
    /// A proxy in front of the Postgres server that `database_url` names.
    pub async fn start(database_url: &str) -> Self {
        let upstream = upstream_of(database_url);
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind the proxy");
        listener
            .set_nonblocking(true)
            .expect("a non-blocking listener");
        let addr = listener.local_addr().expect("proxy address");
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("pg-proxy")
            .enable_all()
            .build()
            .expect("the proxy's runtime");
        let shared = Arc::new(Shared::default());
        let acceptor = runtime.spawn({
            let shared = shared.clone();
            async move {
                let listener = TcpListener::from_std(listener).expect("the proxy's listener");
                while let Ok((client, _)) = listener.accept().await {
                    if shared.down.load(Ordering::SeqCst) {
                        drop(client); // refused: the client sees the connection close
                        continue;
                    }
                    let task = tokio::spawn(forward(client, upstream.clone(), shared.clone()));
                    let mut connections = shared.connections.lock().unwrap();
                    connections.retain(|c| !c.is_finished());
                    connections.push(task);
                }
            }
        });
        Self {
            addr,
            upstream_url: database_url.to_owned(),
            shared,
            acceptor,
            runtime: Some(runtime),
        }
    }

    /// The database URL with the proxy in place of the Postgres server.
    pub fn url(&self) -> String {
        let url = &self.upstream_url;
        let start = url
            .find('@')
            .map_or_else(|| url.find("://").unwrap() + 3, |i| i + 1);
        let end = url[start..].find('/').map_or(url.len(), |i| start + i);
        format!("{}{}{}", &url[..start], self.addr, &url[end..])
    }

    /// Drops every connection and refuses new ones.
    pub fn cut(&self) {
        self.shared.down.store(true, Ordering::SeqCst);
        for task in self.shared.connections.lock().unwrap().drain(..) {
            task.abort();
        }
    }

    /// Keeps every connection, new ones too, but passes no byte until [`Self::restore`].
    pub fn stall(&self) {
        self.shared.stalled.store(true, Ordering::SeqCst);
    }

    /// Accepts connections and passes bytes again.
    pub fn restore(&self) {
        self.shared.down.store(false, Ordering::SeqCst);
        self.shared.stalled.store(false, Ordering::SeqCst);
        self.shared.unstalled.notify_waiters();
    }

    /// Once: after a client sends a packet containing `marker`, everything Postgres sends
    /// that client is held back for `hold` (the statement itself is executed at once).
    pub fn hold_reply_after(&self, marker: &[u8], hold: Duration) {
        *self.shared.hold.lock().unwrap() = Some((marker.to_vec(), hold));
    }
}

impl Drop for PgProxy {
    fn drop(&mut self) {
        self.acceptor.abort();
        self.cut();
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

fn upstream_of(url: &str) -> String {
    let start = url
        .find('@')
        .map_or_else(|| url.find("://").unwrap() + 3, |i| i + 1);
    let end = url[start..]
        .find(['/', '?'])
        .map_or(url.len(), |i| start + i);
    let authority = &url[start..end];
    if authority.contains(':') {
        authority.to_owned()
    } else {
        format!("{authority}:5432")
    }
}

impl Shared {
    /// Returns once bytes may pass.
    async fn pass(&self) {
        loop {
            let unstalled = self.unstalled.notified();
            if !self.stalled.load(Ordering::SeqCst) {
                return;
            }
            unstalled.await;
        }
    }
}

async fn forward(mut client: TcpStream, upstream: String, shared: Arc<Shared>) {
    shared.pass().await;
    let Ok(mut server) = TcpStream::connect(&upstream).await else {
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (mut client_read, mut client_write) = client.split();
    let (mut server_read, mut server_write) = server.split();
    let held_until: Mutex<Option<Instant>> = Mutex::new(None);
    let to_server = async {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = match client_read.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            let packet = &buf[..n];
            {
                let mut hold = shared.hold.lock().unwrap();
                if let Some((marker, duration)) = hold.as_ref()
                    && packet.windows(marker.len()).any(|w| w == marker.as_slice())
                {
                    *held_until.lock().unwrap() = Some(Instant::now() + *duration);
                    *hold = None;
                }
            }
            shared.pass().await;
            if server_write.write_all(packet).await.is_err() {
                return;
            }
        }
    };
    let to_client = async {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = match server_read.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            let until = *held_until.lock().unwrap();
            if let Some(until) = until {
                tokio::time::sleep_until(until).await;
            }
            shared.pass().await;
            if client_write.write_all(&buf[..n]).await.is_err() {
                return;
            }
        }
    };
    tokio::select! {
        () = to_server => {}
        () = to_client => {}
    }
}
