//! gRPC-Web on the gRPC port, spoken by a plain HTTP/1.1 client as a browser library
//! would: unary calls in both encodings (binary and base64 text), a failed call, a
//! server stream whose events arrive while the run goes on, and the CORS answers a
//! browser asks for first.

mod execution_support;

use agentry_e2e::{http::*, *};
use execution_support::*;
use http_body_util::BodyExt as _;
use pb::{RunStatus, run_event::Kind};
use prost::{Message as _, bytes::BytesMut};

const GET_WORKSPACE: &str = "agentry.v1.RegistryService/GetWorkspace";

/// The frames of a whole gRPC-Web response body, decoding base64 text when `text`.
fn frames(reply: &HttpReply, text: bool) -> Vec<WebFrame> {
    let body = if text {
        decode_web_text(&reply.body)
    } else {
        reply.body.clone()
    };
    let mut buffer = BytesMut::from(&body[..]);
    let frames = take_frames(&mut buffer);
    assert!(buffer.is_empty(), "a partial frame is left over");
    frames
}

backend_tests!(unary_calls_answer_in_both_encodings, |app| async move {
    let acme = app.tenant("acme").await;
    let request = pb::GetWorkspaceRequest {
        name: acme.name.clone(),
    };
    for text in [false, true] {
        let call = grpc_web_request(app.addr, GET_WORKSPACE, &acme.admin_key, &request, text);
        let reply = fetch(app.addr, call).await;
        assert_eq!(reply.status, 200);
        let expected = if text {
            "application/grpc-web-text+proto"
        } else {
            "application/grpc-web+proto"
        };
        assert_eq!(reply.header("content-type"), Some(expected));
        let frames = frames(&reply, text);
        let [WebFrame::Message(message), trailers] = &frames[..] else {
            panic!("one message and the trailers, got {frames:?}");
        };
        let workspace = pb::Workspace::decode(message.clone()).expect("a Workspace");
        assert_eq!(workspace.name, acme.name);
        assert_eq!(trailers.trailer("grpc-status"), Some("0"), "{trailers:?}");
    }

    // No key: UNAUTHENTICATED with its details, in the headers of a trailers-only answer.
    let call = grpc_web_request(app.addr, GET_WORKSPACE, "", &request, false);
    let reply = fetch(app.addr, call).await;
    assert_eq!(reply.status, 200, "gRPC-Web errors travel in grpc-status");
    assert_eq!(reply.header("grpc-status"), Some("16"));
    let details = reply
        .header("grpc-status-details-bin")
        .expect("the status details");
    let status = tonic::Status::with_details(
        tonic::Code::Unauthenticated,
        "",
        base64_decode(details).into(),
    );
    assert_status::<()>(
        Err(status),
        tonic::Code::Unauthenticated,
        "MISSING_CREDENTIALS",
    );
});

fn base64_decode(text: &str) -> Vec<u8> {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD_NO_PAD
        .decode(text.trim_end_matches('='))
        .expect("base64 details")
}

/// Reads frames of `body` into `buffer` until `done` holds for the frames seen so far.
async fn read_until(
    body: &mut hyper::body::Incoming,
    buffer: &mut BytesMut,
    seen: &mut Vec<WebFrame>,
    done: impl Fn(&[WebFrame]) -> bool,
) {
    let deadline = tokio::time::Instant::now() + SOON;
    while !done(seen) {
        let frame = tokio::time::timeout_at(deadline, body.frame())
            .await
            .unwrap_or_else(|_| panic!("no progress within {SOON:?}; frames so far: {seen:?}"))
            .expect("the stream goes on")
            .expect("a readable frame");
        if let Ok(data) = frame.into_data() {
            buffer.extend_from_slice(&data);
            seen.extend(take_frames(buffer));
        }
    }
}

fn events(frames: &[WebFrame]) -> Vec<pb::RunEvent> {
    frames
        .iter()
        .filter_map(|f| match f {
            WebFrame::Message(m) => pb::StreamRunEventsResponse::decode(m.clone()).ok()?.event,
            WebFrame::Trailers(_) => None,
        })
        .collect()
}

fn has_delta(frames: &[WebFrame]) -> bool {
    events(frames)
        .iter()
        .any(|e| matches!(&e.kind, Some(Kind::MessageDelta(d)) if d.text == "hel"))
}

backend_tests!(
    a_server_stream_delivers_events_as_they_happen,
    |app| async move {
        let w = World::setup(&app).await;
        let session = w.session("s").await;
        let run = w.run(&session.name, "hello").await;
        let request = pb::StreamRunEventsRequest {
            name: run.name.clone(),
            after_sequence: 0,
        };
        let method = "agentry.v1.ExecutionService/StreamRunEvents";
        let call = grpc_web_request(app.addr, method, &w.acme.admin_key, &request, false);
        let response = send(app.addr, call).await;
        assert_eq!(response.status(), 200);
        let mut body = response.into_body();
        let (mut buffer, mut seen) = (BytesMut::new(), Vec::new());
        // The stored events first: the run was queued.
        read_until(&mut body, &mut buffer, &mut seen, |f| !events(f).is_empty()).await;

        // Then what the worker does, while the stream is open.
        let task = w.worker.claim().await;
        w.worker
            .append(&task.task_token, vec![delta("m", "hel")])
            .await;
        read_until(&mut body, &mut buffer, &mut seen, has_delta).await;
        w.worker.complete(&task.task_token, "hello").await;
        read_until(&mut body, &mut buffer, &mut seen, |f| {
            matches!(f.last(), Some(WebFrame::Trailers(_)))
        })
        .await;
        assert_eq!(seen.last().unwrap().trailer("grpc-status"), Some("0"));
        let last = events(&seen).pop().expect("events");
        let Some(Kind::StatusChanged(change)) = &last.kind else {
            panic!("the stream ends with the terminal status: {last:?}");
        };
        assert_eq!(change.status, RunStatus::Succeeded as i32);
        let sequences: Vec<i64> = events(&seen).iter().map(|e| e.sequence).collect();
        assert!(
            sequences.windows(2).all(|p| p[1] == p[0] + 1),
            "every event once, in order: {sequences:?}"
        );
    }
);

fn with_cors(config: &mut agentry_server::config::Config) {
    config.cors_allowed_origins = vec!["http://app.example".into()];
}

#[tokio::test]
async fn browsers_get_cors_answers_for_allowed_origins_only() {
    let app = spawn_app_with(Backend::Sqlite, with_cors).await;
    let preflight = |origin: &str| {
        ::http::Request::options(format!("/{GET_WORKSPACE}"))
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header(
                "access-control-request-headers",
                "authorization,content-type,x-grpc-web",
            )
            .body(http_body_util::Full::default())
            .unwrap()
    };
    let allowed = fetch(app.addr, preflight("http://app.example")).await;
    assert_eq!(allowed.status, 200);
    assert_eq!(
        allowed.header("access-control-allow-origin"),
        Some("http://app.example")
    );
    let headers = allowed
        .header("access-control-allow-headers")
        .unwrap_or_default()
        .to_ascii_lowercase();
    assert!(headers.contains("authorization"), "{headers}");
    let other = fetch(app.addr, preflight("http://elsewhere.example")).await;
    assert_eq!(other.header("access-control-allow-origin"), None);

    // The call itself carries the origin and lets the script read gRPC's status.
    let acme = app.tenant("acme").await;
    let mut call = grpc_web_request(
        app.addr,
        GET_WORKSPACE,
        &acme.admin_key,
        &pb::GetWorkspaceRequest {
            name: acme.name.clone(),
        },
        false,
    );
    call.headers_mut()
        .insert("origin", "http://app.example".parse().unwrap());
    let reply = fetch(app.addr, call).await;
    assert_eq!(
        reply.header("access-control-allow-origin"),
        Some("http://app.example")
    );
    let exposed = reply
        .header("access-control-expose-headers")
        .unwrap_or_default();
    assert!(exposed.contains("grpc-status"), "{exposed}");
    app.shutdown().await;
}
