//! etcd 3.4 as a peer: the `etcd` binary from Debian's `etcd-server` package, started on
//! loopback with its default durable settings (every commit fsyncs its WAL), and a KV
//! client on the same tonic stack the Agentry benchmark uses. The messages are the subset
//! of etcd's `etcdserverpb` (rpc.proto, kv.proto) that Range and Txn need, with etcd's
//! field numbers.

use std::{
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use http::uri::PathAndQuery;
use tonic::transport::Channel;

#[derive(Clone, PartialEq, prost::Message)]
pub struct KeyValue {
    #[prost(bytes = "vec", tag = "1")]
    pub key: Vec<u8>,
    #[prost(int64, tag = "2")]
    pub create_revision: i64,
    #[prost(int64, tag = "3")]
    pub mod_revision: i64,
    #[prost(int64, tag = "4")]
    pub version: i64,
    #[prost(bytes = "vec", tag = "5")]
    pub value: Vec<u8>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct ResponseHeader {
    #[prost(int64, tag = "3")]
    pub revision: i64,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct RangeRequest {
    #[prost(bytes = "vec", tag = "1")]
    pub key: Vec<u8>,
    /// false: linearizable (a read index round through the leader), etcd's default.
    #[prost(bool, tag = "7")]
    pub serializable: bool,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct RangeResponse {
    #[prost(message, optional, tag = "1")]
    pub header: Option<ResponseHeader>,
    #[prost(message, repeated, tag = "2")]
    pub kvs: Vec<KeyValue>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct PutRequest {
    #[prost(bytes = "vec", tag = "1")]
    pub key: Vec<u8>,
    #[prost(bytes = "vec", tag = "2")]
    pub value: Vec<u8>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Compare {
    /// EQUAL = 0.
    #[prost(int32, tag = "1")]
    pub result: i32,
    /// VERSION = 0.
    #[prost(int32, tag = "2")]
    pub target: i32,
    #[prost(bytes = "vec", tag = "3")]
    pub key: Vec<u8>,
    /// `target_union.version`.
    #[prost(int64, optional, tag = "4")]
    pub version: Option<i64>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct RequestOp {
    #[prost(message, optional, tag = "2")]
    pub request_put: Option<PutRequest>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct TxnRequest {
    #[prost(message, repeated, tag = "1")]
    pub compare: Vec<Compare>,
    #[prost(message, repeated, tag = "2")]
    pub success: Vec<RequestOp>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct TxnResponse {
    #[prost(message, optional, tag = "1")]
    pub header: Option<ResponseHeader>,
    #[prost(bool, tag = "2")]
    pub succeeded: bool,
}

/// A KV client (cheap to clone: a channel handle).
#[derive(Clone)]
pub struct Kv {
    grpc: tonic::client::Grpc<Channel>,
}

impl Kv {
    pub fn new(channel: Channel) -> Self {
        Self {
            grpc: tonic::client::Grpc::new(channel),
        }
    }

    async fn call<Q, R>(&mut self, path: &'static str, request: Q) -> anyhow::Result<R>
    where
        Q: prost::Message + Send + Sync + 'static,
        R: prost::Message + Default + Send + Sync + 'static,
    {
        self.grpc.ready().await?;
        let response = self
            .grpc
            .unary(
                tonic::Request::new(request),
                PathAndQuery::from_static(path),
                tonic_prost::ProstCodec::default(),
            )
            .await?;
        Ok(response.into_inner())
    }

    /// A linearizable read of one key.
    pub async fn get(&mut self, key: &str) -> anyhow::Result<RangeResponse> {
        let request = RangeRequest {
            key: key.as_bytes().to_vec(),
            serializable: false,
        };
        self.call("/etcdserverpb.KV/Range", request).await
    }

    /// Puts `value` only while the key's version is `expected` (0: the key does not exist):
    /// etcd's compare-and-swap. Returns whether it succeeded.
    pub async fn cas(&mut self, key: &str, expected: i64, value: Vec<u8>) -> anyhow::Result<bool> {
        let request = TxnRequest {
            compare: vec![Compare {
                result: 0,
                target: 0,
                key: key.as_bytes().to_vec(),
                version: Some(expected),
            }],
            success: vec![RequestOp {
                request_put: Some(PutRequest {
                    key: key.as_bytes().to_vec(),
                    value,
                }),
            }],
        };
        let response: TxnResponse = self.call("/etcdserverpb.KV/Txn", request).await?;
        Ok(response.succeeded)
    }
}

/// A running etcd; killed and its data removed on drop.
pub struct Etcd {
    child: Child,
    dir: PathBuf,
    pub addr: String,
}

impl Etcd {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub async fn start(binary: &str) -> anyhow::Result<Self> {
        let free = || -> anyhow::Result<u16> {
            Ok(std::net::TcpListener::bind("127.0.0.1:0")?
                .local_addr()?
                .port())
        };
        let (client, peer) = (free()?, free()?);
        let dir = std::env::temp_dir().join(format!("agentry-bench-etcd-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)?;
        let addr = format!("127.0.0.1:{client}");
        let child = Command::new(binary)
            .arg("--data-dir")
            .arg(&dir)
            .args([
                "--name",
                "bench",
                "--listen-client-urls",
                &format!("http://{addr}"),
                "--advertise-client-urls",
                &format!("http://{addr}"),
                "--listen-peer-urls",
                &format!("http://127.0.0.1:{peer}"),
                "--initial-advertise-peer-urls",
                &format!("http://127.0.0.1:{peer}"),
                "--initial-cluster",
                &format!("bench=http://127.0.0.1:{peer}"),
                "--log-level",
                "error",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("cannot run {binary} (apt-get install etcd-server)"))?;
        let etcd = Etcd { child, dir, addr };
        let started = Instant::now();
        loop {
            if let Ok(channel) = crate::server::channel(&etcd.addr).await
                && Kv::new(channel).get("ready").await.is_ok()
            {
                return Ok(etcd);
            }
            if started.elapsed() > Duration::from_secs(30) {
                bail!("etcd did not answer within 30 s");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
