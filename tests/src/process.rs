//! The real `agentry` binary as a child process, and a plain HTTP GET, for tests of what
//! only a process shows: its command line, its stderr, its HTTP endpoints.

use std::{path::PathBuf, time::Duration};

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

/// `$AGENTRY_BIN`, or the workspace's `target/debug/agentry`, built (or found up to
/// date) by cargo first: a test run builds the test crates, not the server's binary.
pub fn agentry_bin() -> PathBuf {
    if let Some(bin) = std::env::var_os("AGENTRY_BIN") {
        return bin.into();
    }
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"));
    let bin = target.join("debug/agentry");
    {
        let status = std::process::Command::new(env!("CARGO"))
            .args(["build", "-p", "agentry-server", "--bin", "agentry"])
            .current_dir(&root)
            .status()
            .expect("run cargo build");
        assert!(status.success(), "cargo build of the agentry binary failed");
    }
    bin
}

/// GET `http://{addr}{path}`: the status code and the body.
pub async fn http_get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await?;
        stream
            .write_all(
                format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n")
                    .as_bytes(),
            )
            .await?;
        let mut response = Vec::new();
        stream.read_to_end(&mut response).await?;
        Ok::<_, std::io::Error>(String::from_utf8_lossy(&response).into_owned())
    };
    let response = tokio::time::timeout(Duration::from_secs(10), exchange)
        .await
        .expect("the HTTP endpoint answers in time")
        .expect("the HTTP exchange works");
    let (head, body) = response.split_once("\r\n\r\n").expect("an HTTP response");
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("an HTTP status");
    // Chunked bodies (axum streams /metrics): strip the chunk framing.
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)
    } else {
        body.to_owned()
    };
    (status, body)
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let size = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if size == 0 || rest.len() < size {
            break;
        }
        out.push_str(&rest[..size]);
        body = rest[size..].trim_start_matches("\r\n");
    }
    out
}
