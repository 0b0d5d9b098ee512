//! The fuzz test's machinery: servers started with our own reaper interval on a database
//! that outlives them ([`Server`]), calls of any method with raw request bytes
//! ([`call_raw`], so that a string field may hold invalid UTF-8), typed calls for
//! setting up ([`Server::call`]), what an error status costs in metadata
//! ([`status_wire_bytes`]) and a fingerprint of every table of the database
//! ([`Fingerprint`]), which tells whether a refused request changed anything.
//!
//! [`world`] holds the tenant a fuzz run works in and a valid-looking request for every
//! method; [`mutate`] derives the hostile variants of those requests from the
//! descriptors.
//!
//! Each `fuzz*.rs` test binary uses a different part of this module.
#![allow(dead_code)]

pub mod mutate;
pub mod world;

use std::{collections::BTreeMap, time::Duration};

use agentry_e2e::*;
use agentry_server::{
    RunningServer,
    config::{Config, Secret},
};
use prost::bytes::{Buf, BufMut};
use sqlx::{Connection, PgConnection, SqliteConnection};
use tonic::{
    Status,
    codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder},
    codegen::http::uri::PathAndQuery,
    transport::{Channel, Endpoint},
};

/// Every call's deadline: long polls and streams that have nothing to say end here.
pub const CALL_DEADLINE: Duration = Duration::from_secs(2);

/// A server on `127.0.0.1:0` over a database that outlives it.
pub struct Server {
    pub channel: Channel,
    running: RunningServer,
}

impl Server {
    pub async fn start(database_url: &str, root_key: &str, reaper_interval: Duration) -> Self {
        let config = Config {
            listen: "127.0.0.1:0".parse().expect("valid address"),
            database_url: Secret::new(database_url.to_owned()),
            migrate: true,
            root_key: Some(Secret::new(root_key.to_owned())),
            reaper_interval,
            shutdown_grace: Duration::from_secs(1),
            db_max_connections: 5,
            ..Config::default()
        };
        let running = agentry_server::start(config)
            .await
            .expect("the server starts");
        let channel = Endpoint::from_shared(format!("http://{}", running.local_addr))
            .expect("valid endpoint")
            .connect()
            .await
            .expect("connect to the server");
        Self { channel, running }
    }

    pub async fn stop(self) {
        self.running.shutdown().await.expect("a clean shutdown");
    }

    /// A typed unary call of `/agentry.v1.{method}` (e.g. `RegistryService/CreateProject`).
    pub async fn call<Req, Resp>(
        &self,
        method: &str,
        key: &str,
        request: Req,
    ) -> Result<Resp, Status>
    where
        Req: prost::Message + Default + Send + Sync + 'static,
        Resp: prost::Message + prost::Name + Default + Send + Sync + 'static,
    {
        let mut grpc = tonic::client::Grpc::new(self.channel.clone());
        grpc.ready().await.expect("the channel is ready");
        let path = PathAndQuery::try_from(format!("/agentry.v1.{method}")).expect("a path");
        grpc.unary(
            authorized(request, key),
            path,
            agentry_proto::codec::AgentryCodec::default(),
        )
        .await
        .map(tonic::Response::into_inner)
    }

    /// [`Self::call`] that must succeed.
    #[track_caller]
    pub fn must<T>(result: Result<T, Status>, what: &str) -> T {
        result.unwrap_or_else(|status| panic!("{what}: {status:?}"))
    }
}

fn authorized<T>(message: T, key: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {key}").parse().expect("an ASCII key"),
    );
    request.set_timeout(CALL_DEADLINE);
    request
}

/// What a raw call came to.
#[derive(Debug)]
pub enum Outcome {
    Ok,
    /// A stream that was still open (and well) when we stopped listening.
    Open,
    Refused(Status),
}

/// Calls `path` with `bytes` as the request as they are. A server-streaming call is
/// read until its first message, its end or a short wait, whichever comes first.
pub async fn call_raw(
    channel: &Channel,
    path: &str,
    key: &str,
    bytes: Vec<u8>,
    streaming: bool,
) -> Outcome {
    let mut grpc = tonic::client::Grpc::new(channel.clone());
    grpc.ready().await.expect("the channel is ready");
    let path = PathAndQuery::try_from(path.to_owned()).expect("a path");
    let request = authorized(bytes, key);
    if !streaming {
        return match grpc.unary(request, path, RawCodec).await {
            Ok(_) => Outcome::Ok,
            Err(status) => Outcome::Refused(status),
        };
    }
    let mut stream = match grpc.server_streaming(request, path, RawCodec).await {
        Ok(response) => response.into_inner(),
        Err(status) => return Outcome::Refused(status),
    };
    match tokio::time::timeout(Duration::from_millis(300), stream.message()).await {
        Err(_) => Outcome::Open,
        Ok(Ok(_)) => Outcome::Ok,
        Ok(Err(status)) => Outcome::Refused(status),
    }
}

/// Requests and responses as bytes, written and read as they are.
#[derive(Debug, Clone, Copy, Default)]
struct RawCodec;

impl Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = RawCodec;
    type Decoder = RawCodec;

    fn encoder(&mut self) -> Self::Encoder {
        RawCodec
    }

    fn decoder(&mut self) -> Self::Decoder {
        RawCodec
    }
}

impl Encoder for RawCodec {
    type Item = Vec<u8>;
    type Error = Status;

    fn encode(&mut self, item: Vec<u8>, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl Decoder for RawCodec {
    type Item = Vec<u8>;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Vec<u8>>, Status> {
        Ok(Some(src.copy_to_bytes(src.remaining()).to_vec()))
    }
}

/// What a status costs a client in metadata: `grpc-message` percent-encoded (every byte
/// outside printable ASCII is three), `grpc-status-details-bin` base64-encoded, and any
/// other metadata the status carries.
pub fn status_wire_bytes(status: &Status) -> usize {
    let metadata = status
        .metadata()
        .clone()
        .into_headers()
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len())
        .sum::<usize>();
    agentry_proto::status::wire_bytes(status) + metadata
}

/// What the database holds, in a form that changes with every committed write: per
/// table its row count and the newest row version (Postgres: the highest `xmin`, which
/// every inserted or updated row gets anew); on SQLite, per table its row count and the
/// database's `data_version`, which moves whenever another connection commits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fingerprint(BTreeMap<String, String>);

impl Fingerprint {
    /// The tables (or `data_version`) that differ.
    pub fn changed(&self, later: &Fingerprint) -> Vec<String> {
        self.0
            .iter()
            .filter(|(table, value)| later.0.get(*table) != Some(*value))
            .map(|(table, _)| table.clone())
            .chain(later.0.keys().filter(|t| !self.0.contains_key(*t)).cloned())
            .collect()
    }
}

/// Reads fingerprints of one database over a connection of its own (SQLite's
/// `data_version` is only meaningful on one connection).
pub enum Fingerprinter {
    Postgres {
        conn: PgConnection,
        query: String,
    },
    Sqlite {
        conn: SqliteConnection,
        query: String,
    },
}

impl Fingerprinter {
    pub async fn connect(database: &FreshDatabase) -> Self {
        match database.backend {
            Backend::Postgres => {
                let mut conn = PgConnection::connect(&database.url).await.expect("connect");
                let tables: Vec<String> = sqlx::query_scalar(
                    "SELECT table_name::text FROM information_schema.tables \
                     WHERE table_schema = 'public' ORDER BY 1",
                )
                .fetch_all(&mut conn)
                .await
                .expect("list the tables");
                let query = tables
                    .iter()
                    .map(|t| {
                        format!(
                            "SELECT '{t}', count(*)::text || ':' || \
                             coalesce(max(xmin::text::bigint), 0)::text FROM \"{t}\""
                        )
                    })
                    .collect::<Vec<_>>()
                    .join(" UNION ALL ");
                Self::Postgres { conn, query }
            }
            Backend::Sqlite => {
                let mut conn = SqliteConnection::connect(&database.url)
                    .await
                    .expect("connect");
                let tables: Vec<String> = sqlx::query_scalar(
                    "SELECT name FROM sqlite_master WHERE type = 'table' \
                     AND name NOT LIKE 'sqlite%' ORDER BY 1",
                )
                .fetch_all(&mut conn)
                .await
                .expect("list the tables");
                let query = tables
                    .iter()
                    .map(|t| format!("SELECT '{t}', CAST(count(*) AS TEXT) FROM \"{t}\""))
                    .chain(["SELECT 'data_version', CAST(data_version AS TEXT) FROM pragma_data_version".to_owned()])
                    .collect::<Vec<_>>()
                    .join(" UNION ALL ");
                Self::Sqlite { conn, query }
            }
        }
    }

    pub async fn take(&mut self) -> Fingerprint {
        let pairs: Vec<(String, String)> = match self {
            Self::Postgres { conn, query } => sqlx::query_as(query.as_str()).fetch_all(conn).await,
            Self::Sqlite { conn, query } => sqlx::query_as(query.as_str()).fetch_all(conn).await,
        }
        .expect("fingerprint the database");
        Fingerprint(pairs.into_iter().collect())
    }
}
