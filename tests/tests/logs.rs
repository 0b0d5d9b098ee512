//! Request logs of the real binary: one JSON line per RPC with method, code, duration,
//! workspace, key id, request_id and trace id; no ANSI codes when stderr is a file; and
//! no secret in any line, at debug level, after every method of the API has been called.

use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
    process::Stdio,
    str::FromStr,
    time::Duration,
};

use agentry_e2e::{process::agentry_bin, *};
use prost::{
    Message as _,
    bytes::{Buf as _, BufMut as _},
};
use tonic::{
    Request, Status,
    codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder},
    codegen::http::uri::PathAndQuery,
    transport::{Channel, Endpoint},
};

/// Passes encoded messages through, so that any method can be called by path.
#[derive(Clone, Copy, Default)]
struct Raw;

impl Codec for Raw {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = Raw;
    type Decoder = Raw;

    fn encoder(&mut self) -> Raw {
        Raw
    }

    fn decoder(&mut self) -> Raw {
        Raw
    }
}

impl Encoder for Raw {
    type Item = Vec<u8>;
    type Error = Status;

    fn encode(&mut self, item: Vec<u8>, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl Decoder for Raw {
    type Item = Vec<u8>;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Vec<u8>>, Status> {
        let n = src.remaining();
        Ok(Some(src.copy_to_bytes(n).to_vec()))
    }
}

/// Every method of the API: (service, method, server-streaming).
fn api_methods() -> Vec<(String, String, bool)> {
    let set = prost_types::FileDescriptorSet::decode(agentry_proto::FILE_DESCRIPTOR_SET).unwrap();
    let mut methods = Vec::new();
    for file in set.file.iter().filter(|f| f.package() == "agentry.v1") {
        for service in &file.service {
            for method in &service.method {
                methods.push((
                    format!("agentry.v1.{}", service.name()),
                    method.name().to_owned(),
                    method.server_streaming(),
                ));
            }
        }
    }
    methods
}

/// Calls `/{service}/{method}` with `body` and the given key; streams are read for a
/// moment and dropped.
async fn call(channel: &Channel, path: &str, body: Vec<u8>, key: &str, streaming: bool) {
    let mut grpc = tonic::client::Grpc::new(channel.clone());
    grpc.ready().await.unwrap();
    let mut request = Request::new(body);
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {key}").parse().unwrap());
    request.set_timeout(Duration::from_secs(5));
    let path = PathAndQuery::from_str(path).unwrap();
    if streaming {
        if let Ok(response) = grpc.server_streaming(request, path, Raw).await {
            let mut stream = response.into_inner();
            let _ = tokio::time::timeout(Duration::from_millis(200), stream.message()).await;
        }
    } else {
        let _ = grpc.unary(request, path, Raw).await;
    }
}

struct Server {
    child: tokio::process::Child,
    channel: Channel,
    log: PathBuf,
    _dir: TempDir,
}

struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

async fn serve(root_key: &str, format: &str) -> Server {
    let dir = std::env::temp_dir().join(format!("agentry-logs-{}", uuid::Uuid::now_v7()));
    std::fs::create_dir_all(&dir).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let log = dir.join("stderr.log");
    let child = tokio::process::Command::new(agentry_bin())
        .args(["serve", "--listen", &format!("localhost:{port}")])
        .args([
            "--database-url",
            &format!("sqlite://{}", dir.join("a.db").display()),
        ])
        .args(["--log-format", format])
        .env("AGENTRY_ROOT_KEY", root_key)
        .env("RUST_LOG", "debug")
        .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .kill_on_drop(true)
        .spawn()
        .expect("the agentry binary runs");
    let endpoint = Endpoint::from_shared(format!("http://127.0.0.1:{port}")).unwrap();
    let channel = eventually(Duration::from_secs(30), || async {
        endpoint.connect().await.ok()
    })
    .await
    .expect("the server listens");
    Server {
        child,
        channel,
        log,
        _dir: TempDir(dir),
    }
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap()
}

#[tokio::test]
async fn every_method_logs_one_line_and_no_secret() {
    let root_key = format!("agk_root_{}", uuid::Uuid::now_v7().simple());
    let mut server = serve(&root_key, "json").await;
    let channel = server.channel.clone();

    // A tenant and an admin key whose secret is then used for every call.
    let mut root = pb::registry_service_client::RegistryServiceClient::with_interceptor(
        channel.clone(),
        Bearer::new(&root_key),
    );
    root.create_workspace(req::create_workspace("acme", pb::Workspace::default()))
        .await
        .must();
    let secret = root
        .create_api_key(req::create_api_key(
            "workspaces/acme",
            pb::Role::Admin as i32,
        ))
        .await
        .must()
        .secret;
    let mut admin = pb::registry_service_client::RegistryServiceClient::with_interceptor(
        channel.clone(),
        move |mut r: Request<()>| {
            r.metadata_mut()
                .insert("authorization", format!("Bearer {secret}").parse().unwrap());
            r.metadata_mut().insert(
                "traceparent",
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
                    .parse()
                    .unwrap(),
            );
            Ok(r)
        },
    );
    let secret = root
        .create_api_key(req::create_api_key(
            "workspaces/acme",
            pb::Role::Admin as i32,
        ))
        .await
        .must()
        .secret;
    let mut project = req::create_project("workspaces/acme", "web");
    project.request_id = "req-logs-1".into();
    admin.create_project(project).await.must();

    // Every method, with an empty request, as the admin and as root.
    let methods = api_methods();
    for (service, method, streaming) in &methods {
        let path = format!("/{service}/{method}");
        call(&channel, &path, Vec::new(), &secret, *streaming).await;
        call(&channel, &path, Vec::new(), &root_key, *streaming).await;
    }
    // A bad key is refused and logged too.
    call(
        &channel,
        "/agentry.v1.RegistryService/ListWorkspaces",
        Vec::new(),
        "agk_not_a_key",
        false,
    )
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let _ = server.child.start_kill();
    let _ = server.child.wait().await;

    let log = read(&server.log);
    assert!(!log.contains(&root_key), "the root key is in the log");
    assert!(!log.contains(&secret), "an API key secret is in the log");
    assert!(!log.contains('\u{1b}'), "no ANSI codes in a file");

    let lines: Vec<serde_json::Value> = log
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}")))
        .collect();
    let rpc: Vec<&serde_json::Value> = lines
        .iter()
        .filter(|l| l["target"] == "agentry_server::rpc" && l["message"] == "rpc")
        .collect();
    let logged: BTreeSet<String> = rpc
        .iter()
        .map(|l| l["method"].as_str().unwrap().to_owned())
        .collect();
    for (service, method, _) in &methods {
        assert!(
            logged.contains(&format!("{service}/{method}")),
            "no log line for {service}/{method}"
        );
    }
    for line in &rpc {
        for field in [
            "method",
            "code",
            "duration_ms",
            "workspace",
            "key",
            "request_id",
            "trace_id",
        ] {
            assert!(line.get(field).is_some(), "{field} missing in {line}");
        }
        if line["method"].as_str().unwrap().starts_with("agentry.") {
            assert_eq!(line["level"], "INFO");
        }
    }
    let create_project = rpc
        .iter()
        .find(|l| l["request_id"] == "req-logs-1")
        .expect("the request id is logged");
    assert_eq!(
        create_project["method"],
        "agentry.v1.RegistryService/CreateProject"
    );
    assert_eq!(create_project["code"], "OK");
    assert_eq!(create_project["workspace"], "acme");
    assert_eq!(
        create_project["trace_id"],
        "4bf92f3577b34da6a3ce929d0e0e4736"
    );
    assert_ne!(create_project["key"], "");
    assert!(rpc.iter().any(|l| l["key"] == "root" && l["code"] == "OK"));
    assert!(rpc.iter().any(|l| l["code"] == "UNAUTHENTICATED"));
    // Calls of the empty request: one line each, two callers per method, plus the rest.
    assert!(rpc.len() >= 2 * methods.len());
}

#[tokio::test]
async fn text_logs_have_no_colour_in_a_file() {
    let root_key = format!("agk_root_{}", uuid::Uuid::now_v7().simple());
    let mut server = serve(&root_key, "text").await;
    call(
        &server.channel,
        "/agentry.v1.RegistryService/ListWorkspaces",
        Vec::new(),
        &root_key,
        false,
    )
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let _ = server.child.start_kill();
    let _ = server.child.wait().await;
    let log = read(&server.log);
    assert!(
        log.contains("method=agentry.v1.RegistryService/ListWorkspaces code=OK"),
        "{log}"
    );
    assert!(!log.contains('\u{1b}'), "ANSI codes in a file: {log}");
    assert!(!log.contains(&root_key));
}
