//! The span processor that exports over OTLP/gRPC: a finished span is encoded at once
//! into OTLP protobuf ([`encode`]) and appended to the open batch; a thread of its own,
//! with a single-threaded runtime, sends each batch as it fills (`OTEL_BSP_MAX_EXPORT_BATCH_SIZE`
//! spans), and every `OTEL_BSP_SCHEDULE_DELAY` whatever has gathered, as the raw bytes
//! of an `ExportTraceServiceRequest`. It replaces the SDK's batch processor and the
//! `opentelemetry-otlp` exporter, which cloned each span's data into the generated
//! proto structs (grouping them by resource and scope) before encoding those: several
//! thousand instructions a span, on the cores that serve calls.
//!
//! Over `OTEL_BSP_MAX_QUEUE_SIZE` spans waiting, further spans are dropped and counted
//! (a warning says how many). `force_flush` and `shutdown` send everything waiting and
//! wait for it, at most `OTEL_BSP_EXPORT_TIMEOUT`.

use std::{
    cell::RefCell,
    collections::VecDeque,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
        mpsc as sync_mpsc,
    },
    thread::JoinHandle,
    time::Duration,
};

use agentry_proto::encoded::EncodedEncoder;
use opentelemetry::{Context, InstrumentationScope};
use opentelemetry_sdk::{
    Resource,
    error::{OTelSdkError, OTelSdkResult},
    trace::{Span, SpanData, SpanProcessor},
};
use tokio::sync::{Notify, mpsc};
use tonic::{
    codec::{Codec, DecodeBuf, Decoder},
    codegen::{Bytes, http::uri::PathAndQuery},
    metadata::MetadataMap,
    transport::{Channel, Endpoint},
};

use super::encode;

const EXPORT_PATH: &str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";

/// Where and how spans are sent, from the `OTEL_EXPORTER_OTLP_*` and `OTEL_BSP_*`
/// variables (see [`super::settings`]).
pub struct Settings {
    /// The collector, TLS included.
    pub endpoint: Endpoint,
    /// `OTEL_EXPORTER_OTLP_HEADERS`, sent with every export.
    pub metadata: MetadataMap,
    pub max_queue: usize,
    pub max_batch: usize,
    pub delay: Duration,
    /// The longest an export (or a flush) may take.
    pub timeout: Duration,
}

/// Exports finished spans over OTLP/gRPC; see the module's documentation.
#[derive(Debug)]
pub struct OtlpProcessor {
    shared: Arc<Shared>,
    control: mpsc::UnboundedSender<Control>,
    thread: Mutex<Option<JoinHandle<()>>>,
    timeout: Duration,
}

#[derive(Debug)]
struct Shared {
    queue: Mutex<Queue>,
    /// Rung when a batch fills.
    full: Notify,
    dropped: AtomicU64,
    stopped: AtomicBool,
    /// The resource's `Resource` message and schema URL, set once by the provider.
    resource: Mutex<Arc<(Vec<u8>, Option<String>)>>,
    max_queue: usize,
    max_batch: usize,
}

/// Encoded spans waiting: the open batch and the full ones; and the buffers of batches
/// sent, kept for new batches (a buffer freshly allocated at every batch costs the
/// cores that serve calls its page faults).
#[derive(Debug, Default)]
struct Queue {
    open: Batch,
    full: VecDeque<Batch>,
    spans: usize,
    spare: Vec<Vec<u8>>,
}

/// Buffers kept for reuse, at most.
const SPARE: usize = 4;

impl Queue {
    /// Adds an encoded span to the open batch; true when that fills it (it is then
    /// among the full ones).
    fn push(&mut self, scope: Scope<'_>, span: &[u8], max_batch: usize) -> bool {
        self.spans += 1;
        self.open.spans += 1;
        let found = self.open.scopes.iter_mut().find(|(s, _)| scope.is(s));
        match found {
            Some((_, spans)) => spans.extend_from_slice(span),
            None => {
                let mut spans = self
                    .spare
                    .pop()
                    .unwrap_or_else(|| Vec::with_capacity((max_batch * 256).min(1 << 20)));
                spans.extend_from_slice(span);
                self.open.scopes.push((scope.to_shared(), spans));
            }
        }
        if self.open.spans < max_batch {
            return false;
        }
        let full = std::mem::take(&mut self.open);
        self.full.push_back(full);
        true
    }
}

/// Spans encoded as `ScopeSpans.spans` fields, by scope (nearly always one).
#[derive(Debug, Default)]
struct Batch {
    scopes: Vec<(Arc<InstrumentationScope>, Vec<u8>)>,
    spans: usize,
}

/// The scope of a span being queued: the server spans' own (shared, so that finding its
/// batch compares a pointer), or an SDK span's.
#[derive(Clone, Copy)]
enum Scope<'a> {
    Shared(&'a Arc<InstrumentationScope>),
    Borrowed(&'a InstrumentationScope),
}

impl Scope<'_> {
    fn is(self, other: &Arc<InstrumentationScope>) -> bool {
        match self {
            Scope::Shared(scope) => Arc::ptr_eq(scope, other) || **scope == **other,
            Scope::Borrowed(scope) => scope == &**other,
        }
    }

    fn to_shared(self) -> Arc<InstrumentationScope> {
        match self {
            Scope::Shared(scope) => scope.clone(),
            Scope::Borrowed(scope) => Arc::new(scope.clone()),
        }
    }
}

#[derive(Debug)]
enum Control {
    /// Send everything waiting, then answer.
    Flush(sync_mpsc::SyncSender<()>),
    /// As `Flush`, then stop.
    Shutdown(sync_mpsc::SyncSender<()>),
}

impl OtlpProcessor {
    /// Starts the exporting thread.
    pub fn start(settings: Settings) -> std::io::Result<Self> {
        let shared = Arc::new(Shared {
            queue: Mutex::default(),
            full: Notify::new(),
            dropped: AtomicU64::new(0),
            stopped: AtomicBool::new(false),
            resource: Mutex::new(Arc::new((Vec::new(), None))),
            max_queue: settings.max_queue.max(1),
            max_batch: settings.max_batch.clamp(1, settings.max_queue.max(1)),
        });
        let (control, receiver) = mpsc::unbounded_channel();
        let timeout = settings.timeout;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let exporter = Exporter {
            shared: shared.clone(),
            settings,
            reported_drops: 0,
            failing: false,
        };
        let thread = std::thread::Builder::new()
            .name("agentry-otlp".into())
            .spawn(move || runtime.block_on(exporter.run(receiver)))?;
        Ok(Self {
            shared,
            control,
            thread: Mutex::new(Some(thread)),
            timeout,
        })
    }

    /// Asks the thread for `control` and waits for its answer, at most `wait`.
    fn ask(
        &self,
        control: impl FnOnce(sync_mpsc::SyncSender<()>) -> Control,
        wait: Duration,
    ) -> OTelSdkResult {
        let (reply, answer) = sync_mpsc::sync_channel(1);
        self.control
            .send(control(reply))
            .map_err(|_| OTelSdkError::AlreadyShutdown)?;
        answer
            .recv_timeout(wait)
            .map_err(|_| OTelSdkError::Timeout(wait))
    }
}

thread_local! {
    /// Where a span is encoded before it joins the queue (outside its lock).
    static SCRATCH: RefCell<Vec<u8>> = RefCell::new(Vec::with_capacity(1024));
}

impl Shared {
    /// Encodes a span with `encode` (as a `ScopeSpans.spans` field) and queues it.
    fn enqueue(&self, scope: Scope<'_>, encode: impl FnOnce(&mut Vec<u8>)) {
        if self.stopped.load(Ordering::Relaxed) {
            return;
        }
        SCRATCH.with(|scratch| {
            let mut scratch = scratch.borrow_mut();
            scratch.clear();
            encode(&mut scratch);
            let Ok(mut queue) = self.queue.lock() else {
                return;
            };
            if queue.spans >= self.max_queue {
                self.dropped.fetch_add(1, Ordering::Relaxed);
                return;
            }
            if queue.push(scope, &scratch, self.max_batch) {
                drop(queue);
                self.full.notify_one();
            }
        });
    }
}

/// Where the server spans go, encoded by their caller (see [`super::server_span`]),
/// beside the SDK's spans, in the tracer's scope.
#[derive(Clone, Debug)]
pub struct Spans {
    shared: Arc<Shared>,
    scope: Arc<InstrumentationScope>,
}

impl Spans {
    /// Queues the span `encode` appends as a `ScopeSpans.spans` field.
    pub fn push(&self, encode: impl FnOnce(&mut Vec<u8>)) {
        self.shared.enqueue(Scope::Shared(&self.scope), encode);
    }
}

impl OtlpProcessor {
    /// A handle that queues spans encoded elsewhere, under `scope`.
    pub fn spans(&self, scope: InstrumentationScope) -> Spans {
        Spans {
            shared: self.shared.clone(),
            scope: Arc::new(scope),
        }
    }
}

impl SpanProcessor for OtlpProcessor {
    fn on_start(&self, _span: &mut Span, _cx: &Context) {}

    fn on_end(&self, span: SpanData) {
        if span.span_context.is_sampled() {
            let scope = &span.instrumentation_scope;
            self.shared
                .enqueue(Scope::Borrowed(scope), |buf| encode::span(&span, buf));
        }
    }

    fn force_flush(&self) -> OTelSdkResult {
        // Each export is bounded by the timeout; leave room for a few.
        self.ask(Control::Flush, self.timeout * 2 + Duration::from_secs(1))
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        if self.shared.stopped.swap(true, Ordering::Relaxed) {
            return Err(OTelSdkError::AlreadyShutdown);
        }
        let result = self.ask(Control::Shutdown, timeout);
        // The thread stops after its last export; unless that took too long, wait for it.
        if result.is_ok()
            && let Some(thread) = self.thread.lock().ok().and_then(|mut t| t.take())
        {
            let _ = thread.join();
        }
        result
    }

    fn set_resource(&mut self, resource: &Resource) {
        let encoded = (
            encode::resource(resource),
            resource.schema_url().map(str::to_owned),
        );
        if let Ok(mut slot) = self.shared.resource.lock() {
            *slot = Arc::new(encoded);
        }
    }
}

impl Drop for OtlpProcessor {
    fn drop(&mut self) {
        // Not shut down by its provider: the thread stops without waiting for it.
        if !self.shared.stopped.swap(true, Ordering::Relaxed) {
            let (reply, _) = sync_mpsc::sync_channel(1);
            let _ = self.control.send(Control::Shutdown(reply));
        }
    }
}

/// The exporting thread's side.
struct Exporter {
    shared: Arc<Shared>,
    settings: Settings,
    reported_drops: u64,
    failing: bool,
}

impl Exporter {
    async fn run(mut self, mut control: mpsc::UnboundedReceiver<Control>) {
        let channel = self.settings.endpoint.connect_lazy();
        let mut client = tonic::client::Grpc::new(channel);
        let mut tick = tokio::time::interval(self.settings.delay);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            let mut reply = None;
            let mut stop = false;
            let everything = tokio::select! {
                () = self.shared.full.notified() => false,
                _ = tick.tick() => true,
                message = control.recv() => {
                    match message {
                        Some(Control::Flush(answer)) => reply = Some(answer),
                        Some(Control::Shutdown(answer)) => (reply, stop) = (Some(answer), true),
                        None => stop = true,
                    }
                    true
                }
            };
            if everything {
                self.close_open();
            }
            while let Some(batch) = self.take() {
                self.export(&mut client, &batch).await;
                self.recycle(batch);
            }
            self.report_drops();
            if let Some(reply) = reply {
                let _ = reply.send(());
            }
            if stop {
                return;
            }
        }
    }

    /// Makes the open batch, if it has spans, the last full one.
    fn close_open(&self) {
        if let Ok(mut queue) = self.shared.queue.lock()
            && queue.open.spans > 0
        {
            let open = std::mem::take(&mut queue.open);
            queue.full.push_back(open);
        }
    }

    /// The next full batch.
    fn take(&self) -> Option<Batch> {
        let mut queue = self.shared.queue.lock().ok()?;
        let batch = queue.full.pop_front()?;
        queue.spans -= batch.spans;
        Some(batch)
    }

    /// Keeps a sent batch's buffers for new batches.
    fn recycle(&self, batch: Batch) {
        if let Ok(mut queue) = self.shared.queue.lock() {
            for (_, mut spans) in batch.scopes {
                if queue.spare.len() < SPARE {
                    spans.clear();
                    queue.spare.push(spans);
                }
            }
        }
    }

    async fn export(&mut self, client: &mut tonic::client::Grpc<Channel>, batch: &Batch) {
        let resource = self.shared.resource.lock().map(|r| r.clone());
        let Ok(resource) = resource else { return };
        let body = encode::request(
            &resource.0,
            resource.1.as_deref(),
            batch
                .scopes
                .iter()
                .map(|(scope, spans)| (&**scope, &spans[..])),
        );
        let mut request = tonic::Request::new(Bytes::from(body));
        *request.metadata_mut() = self.settings.metadata.clone();
        let send = async {
            client.ready().await.map_err(|e| e.to_string())?;
            let path = PathAndQuery::from_static(EXPORT_PATH);
            client
                .unary::<_, (), _>(request, path, RawCodec)
                .await
                .map_err(|status| status.to_string())
        };
        let result = match tokio::time::timeout(self.settings.timeout, send).await {
            Ok(result) => result,
            Err(_) => Err(format!("no answer in {:?}", self.settings.timeout)),
        };
        match result {
            Ok(_) if self.failing => {
                self.failing = false;
                tracing::info!(target: "agentry_server::telemetry", "span export works again");
            }
            Ok(_) => {}
            Err(error) if !self.failing => {
                self.failing = true;
                tracing::warn!(
                    target: "agentry_server::telemetry",
                    spans = batch.spans,
                    "span export failed (further failures are not logged until one succeeds): {error}"
                );
            }
            Err(_) => {}
        }
    }

    fn report_drops(&mut self) {
        let dropped = self.shared.dropped.load(Ordering::Relaxed);
        if dropped > self.reported_drops {
            tracing::warn!(
                target: "agentry_server::telemetry",
                dropped = dropped - self.reported_drops,
                "spans dropped: more than OTEL_BSP_MAX_QUEUE_SIZE={} waiting",
                self.shared.max_queue
            );
            self.reported_drops = dropped;
        }
    }
}

/// Sends an encoded request as it is ([`EncodedEncoder`]) and ignores the response's
/// contents.
#[derive(Debug, Clone, Copy, Default)]
struct RawCodec;

impl Codec for RawCodec {
    type Encode = Bytes;
    type Decode = ();
    type Encoder = EncodedEncoder;
    type Decoder = RawCodec;

    fn encoder(&mut self) -> Self::Encoder {
        EncodedEncoder
    }

    fn decoder(&mut self) -> Self::Decoder {
        RawCodec
    }
}

impl Decoder for RawCodec {
    type Item = ();
    type Error = tonic::Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<()>, tonic::Status> {
        use prost::bytes::Buf as _;
        src.advance(src.remaining());
        Ok(Some(()))
    }
}
