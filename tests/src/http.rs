//! Plain HTTP/1.1 calls (hyper's client, one connection per call), as curl and browsers
//! make them: Connect-style JSON calls and gRPC-Web calls with their framing.

use std::{net::SocketAddr, time::Duration};

use base64::Engine as _;
use http_body_util::{BodyExt as _, Full};
use hyper::body::Incoming;
use prost::bytes::{Buf as _, BufMut as _, Bytes, BytesMut};
use serde_json::Value;

/// How long a call may take before the test fails.
const CALL_TIMEOUT: Duration = Duration::from_secs(20);

/// A whole HTTP response.
#[derive(Debug)]
pub struct HttpReply {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: Bytes,
}

impl HttpReply {
    /// The body as JSON; panics with the body when it is not.
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "not JSON ({e}): {} {}",
                self.status,
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// Sends `request` on a new HTTP/1.1 connection to `addr`; the response as it arrives.
pub async fn send(
    addr: SocketAddr,
    request: http::Request<Full<Bytes>>,
) -> http::Response<Incoming> {
    let exchange = async {
        let stream = tokio::net::TcpStream::connect(addr).await?;
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                .await
                .map_err(std::io::Error::other)?;
        tokio::spawn(connection);
        sender
            .send_request(request)
            .await
            .map_err(std::io::Error::other)
    };
    tokio::time::timeout(CALL_TIMEOUT, exchange)
        .await
        .expect("the server answers in time")
        .expect("the HTTP exchange works")
}

/// Sends `request` and reads the whole response.
pub async fn fetch(addr: SocketAddr, request: http::Request<Full<Bytes>>) -> HttpReply {
    let response = send(addr, request).await;
    let (parts, body) = response.into_parts();
    let body = tokio::time::timeout(CALL_TIMEOUT, body.collect())
        .await
        .expect("the body arrives in time")
        .expect("the body is read")
        .to_bytes();
    HttpReply {
        status: parts.status.as_u16(),
        headers: parts.headers,
        body,
    }
}

/// `POST {path}` with `content-type: application/json`, `body` as it is, and
/// `authorization: Bearer {key}` unless `key` is empty.
pub async fn post_raw(
    addr: SocketAddr,
    path: &str,
    key: &str,
    body: impl Into<Bytes>,
) -> HttpReply {
    let mut request = http::Request::post(path)
        .header("host", addr.to_string())
        .header("content-type", "application/json");
    if !key.is_empty() {
        request = request.header("authorization", format!("Bearer {key}"));
    }
    fetch(addr, request.body(Full::new(body.into())).unwrap()).await
}

/// A Connect-style JSON call: `POST /{method}` (e.g.
/// `agentry.v1.RegistryService/GetWorkspace`) with `body`.
pub async fn post_json(addr: SocketAddr, method: &str, key: &str, body: Value) -> HttpReply {
    post_raw(addr, &format!("/{method}"), key, body.to_string()).await
}

/// [`post_json`] that must answer 200; the response's JSON.
pub async fn call_json(addr: SocketAddr, method: &str, key: &str, body: Value) -> Value {
    let reply = post_json(addr, method, key, body.clone()).await;
    assert_eq!(
        reply.status,
        200,
        "{method} {body} answered {}: {}",
        reply.status,
        String::from_utf8_lossy(&reply.body)
    );
    reply.json()
}

/// A gRPC message frame (gRPC-Web uses gRPC's framing).
pub fn grpc_frame(message: &[u8]) -> Bytes {
    let mut framed = BytesMut::with_capacity(5 + message.len());
    framed.put_u8(0);
    framed.put_u32(message.len() as u32);
    framed.extend_from_slice(message);
    framed.freeze()
}

/// One frame of a gRPC-Web response body.
#[derive(Debug, Clone, PartialEq)]
pub enum WebFrame {
    Message(Bytes),
    /// The trailers frame, as its `name: value` lines.
    Trailers(Vec<(String, String)>),
}

impl WebFrame {
    pub fn trailer(&self, name: &str) -> Option<&str> {
        match self {
            Self::Trailers(lines) => lines
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.as_str()),
            Self::Message(_) => None,
        }
    }
}

/// Splits complete frames off the front of `buffer`.
pub fn take_frames(buffer: &mut BytesMut) -> Vec<WebFrame> {
    let mut frames = Vec::new();
    while buffer.len() >= 5 {
        let length = u32::from_be_bytes([buffer[1], buffer[2], buffer[3], buffer[4]]) as usize;
        if buffer.len() < 5 + length {
            break;
        }
        let flags = buffer[0];
        buffer.advance(5);
        let payload = buffer.split_to(length).freeze();
        if flags & 0x80 != 0 {
            let text = String::from_utf8_lossy(&payload).into_owned();
            let lines = text
                .split("\r\n")
                .filter_map(|line| line.split_once(':'))
                .map(|(n, v)| (n.trim().to_owned(), v.trim().to_owned()))
                .collect();
            frames.push(WebFrame::Trailers(lines));
        } else {
            frames.push(WebFrame::Message(payload));
        }
    }
    frames
}

/// Decodes `application/grpc-web-text`: base64 chunks, each padded on its own, one after
/// the other.
pub fn decode_web_text(text: &[u8]) -> Bytes {
    let text: Vec<u8> = text
        .iter()
        .copied()
        .filter(|b| !b.is_ascii_whitespace())
        .collect();
    let mut out = Vec::new();
    for block in text.chunks(4) {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(block)
            .expect("valid base64 blocks");
        out.extend_from_slice(&decoded);
    }
    out.into()
}

/// A gRPC-Web request of `method` carrying `message`: binary, or base64 text when `text`.
pub fn grpc_web_request(
    addr: SocketAddr,
    method: &str,
    key: &str,
    message: &impl prost::Message,
    text: bool,
) -> http::Request<Full<Bytes>> {
    let framed = grpc_frame(&message.encode_to_vec());
    let (content_type, body) = if text {
        let encoded = base64::engine::general_purpose::STANDARD.encode(&framed);
        ("application/grpc-web-text", Bytes::from(encoded))
    } else {
        ("application/grpc-web+proto", framed)
    };
    let mut request = http::Request::post(format!("/{method}"))
        .header("host", addr.to_string())
        .header("content-type", content_type)
        .header("accept", content_type)
        .header("x-grpc-web", "1");
    if !key.is_empty() {
        request = request.header("authorization", format!("Bearer {key}"));
    }
    request.body(Full::new(body)).unwrap()
}
