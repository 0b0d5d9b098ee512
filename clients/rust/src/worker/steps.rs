//! What a handler yields ([`Step`]), how it fails ([`HandlerError`]), and [`steps`], which
//! turns an `async` block that emits steps into the `Stream` a handler returns.
//!
//! A handler's stream is pulled one step at a time: the worker turns each step into a run
//! event (buffered, sent in batches) before it polls the stream again. [`steps`] keeps
//! that order for an `async` block: [`Emitter::emit`] returns only once the worker has
//! taken the step, so a `propose_plan` after an `emit` always sends the step first.

use std::{
    future::Future,
    pin::Pin,
    sync::{Arc, Mutex},
    task::{Context, Poll},
    time::Duration,
};

use futures::Stream;

use crate::pb;

/// One thing a handler did, turned into a run event by the worker.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// A piece of an assistant message as it is generated. `message_id` groups deltas;
    /// by default one id per message (it changes after every [`Step::Message`]).
    TextDelta {
        text: String,
        message_id: Option<String>,
    },
    /// A whole message. The messages a handler yields last (nothing but usage after them)
    /// become the run's output in CompleteTask; earlier ones are recorded as events.
    Message {
        role: pb::MessageRole,
        content: String,
    },
    /// A tool call started, with its arguments.
    ToolCall {
        id: String,
        tool: String,
        arguments: prost_types::Value,
    },
    /// The result of the tool call `id`.
    ToolResult {
        id: String,
        result: prost_types::Value,
        is_error: bool,
    },
    /// Tokens and cost.
    Usage(pb::Usage),
    /// An event of the handler's own.
    Custom {
        name: String,
        data: prost_types::Struct,
    },
}

impl Step {
    /// A text delta of the current message.
    pub fn text(text: impl Into<String>) -> Self {
        Self::TextDelta {
            text: text.into(),
            message_id: None,
        }
    }

    /// An assistant message.
    pub fn message(content: impl Into<String>) -> Self {
        Self::Message {
            role: pb::MessageRole::Assistant,
            content: content.into(),
        }
    }

    /// A tool call with JSON arguments.
    pub fn tool_call(
        id: impl Into<String>,
        tool: impl Into<String>,
        arguments: serde_json::Value,
    ) -> Self {
        Self::ToolCall {
            id: id.into(),
            tool: tool.into(),
            arguments: json_value(arguments),
        }
    }

    /// A successful tool result with a JSON value.
    pub fn tool_result(id: impl Into<String>, result: serde_json::Value) -> Self {
        Self::ToolResult {
            id: id.into(),
            result: json_value(result),
            is_error: false,
        }
    }

    /// A custom event; `data` should be a JSON object (anything else is wrapped as
    /// `{"value": data}`).
    pub fn custom(name: impl Into<String>, data: serde_json::Value) -> Self {
        Self::Custom {
            name: name.into(),
            data: json_struct(data),
        }
    }
}

/// A JSON value as a `google.protobuf.Value`.
pub fn json_value(value: serde_json::Value) -> prost_types::Value {
    use prost_types::value::Kind;
    let kind = match value {
        serde_json::Value::Null => Kind::NullValue(0),
        serde_json::Value::Bool(b) => Kind::BoolValue(b),
        serde_json::Value::Number(n) => Kind::NumberValue(n.as_f64().unwrap_or_default()),
        serde_json::Value::String(s) => Kind::StringValue(s),
        serde_json::Value::Array(items) => Kind::ListValue(prost_types::ListValue {
            values: items.into_iter().map(json_value).collect(),
        }),
        serde_json::Value::Object(_) => Kind::StructValue(json_struct(value)),
    };
    prost_types::Value { kind: Some(kind) }
}

/// A JSON object as a `google.protobuf.Struct` (a non-object is wrapped as `{"value": …}`).
pub fn json_struct(value: serde_json::Value) -> prost_types::Struct {
    let fields = match value {
        serde_json::Value::Object(map) => {
            map.into_iter().map(|(k, v)| (k, json_value(v))).collect()
        }
        other => [("value".to_owned(), json_value(other))].into(),
    };
    prost_types::Struct { fields }
}

/// Why a handler failed. The worker reports it with FailTask; a retryable failure lets
/// the server retry the run (per its retry policy), any other fails the run.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{error_type}: {message}")]
pub struct HandlerError {
    /// `RunError.type`, e.g. `RateLimited`.
    pub error_type: String,
    pub message: String,
    pub retryable: bool,
    /// With `retryable`: how long the server should wait before the next attempt.
    pub retry_after: Option<Duration>,
    pub details: Option<prost_types::Struct>,
}

impl HandlerError {
    /// A failure the run cannot recover from.
    pub fn fatal(error_type: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            error_type: error_type.into(),
            message: message.into(),
            retryable: false,
            retry_after: None,
            details: None,
        }
    }

    /// A failure worth another attempt.
    pub fn retryable(error_type: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            retryable: true,
            ..Self::fatal(error_type, message)
        }
    }

    pub fn retry_after(mut self, delay: Duration) -> Self {
        self.retry_after = Some(delay);
        self
    }

    pub fn with_details(mut self, details: serde_json::Value) -> Self {
        self.details = Some(json_struct(details));
        self
    }
}

/// A failed client call inside a handler fails the attempt (not retryable: a handler
/// that wants a retry says so with [`HandlerError::retryable`]).
impl From<crate::Error> for HandlerError {
    fn from(error: crate::Error) -> Self {
        Self::fatal(format!("{:?}", error.kind), error.to_string())
    }
}

impl From<std::io::Error> for HandlerError {
    fn from(error: std::io::Error) -> Self {
        Self::fatal("IoError", error.to_string())
    }
}

impl From<String> for HandlerError {
    fn from(message: String) -> Self {
        Self::fatal("Error", message)
    }
}

impl From<&str> for HandlerError {
    fn from(message: &str) -> Self {
        Self::fatal("Error", message)
    }
}

/// The item of a handler's stream.
pub type StepResult = Result<Step, HandlerError>;

/// Hands steps from a [`steps`] block to the worker.
#[derive(Clone)]
pub struct Emitter {
    slot: Arc<Mutex<Option<Step>>>,
}

impl Emitter {
    /// Yields `step`: returns once the worker has taken it.
    pub async fn emit(&self, step: Step) {
        *self.slot.lock().expect("step slot") = Some(step);
        // The stream below polls this future again only after the worker took the step.
        futures::future::poll_fn(|_| {
            if self.slot.lock().expect("step slot").is_some() {
                Poll::Pending
            } else {
                Poll::Ready(())
            }
        })
        .await;
    }
}

/// A handler's stream written as an `async` block:
///
/// ```
/// use agentry_client::worker::{Step, steps};
///
/// let stream = steps(|out| async move {
///     out.emit(Step::text("thinking… ")).await;
///     out.emit(Step::message("done")).await;
///     Ok(())
/// });
/// ```
///
/// An `Err` returned by the block ends the stream with that error (the attempt fails).
pub fn steps<F, Fut>(body: F) -> impl Stream<Item = StepResult> + Send + 'static
where
    F: FnOnce(Emitter) -> Fut,
    Fut: Future<Output = Result<(), HandlerError>> + Send + 'static,
{
    let slot = Arc::new(Mutex::new(None));
    let body = body(Emitter { slot: slot.clone() });
    EmitStream {
        slot,
        body: Some(Box::pin(body)),
    }
}

type Body = Pin<Box<dyn Future<Output = Result<(), HandlerError>> + Send>>;

struct EmitStream {
    slot: Arc<Mutex<Option<Step>>>,
    body: Option<Body>,
}

impl Stream for EmitStream {
    type Item = StepResult;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<StepResult>> {
        let Some(body) = self.body.as_mut() else {
            return Poll::Ready(None);
        };
        let done = body.as_mut().poll(cx);
        if let Some(step) = self.slot.lock().expect("step slot").take() {
            return Poll::Ready(Some(Ok(step)));
        }
        match done {
            Poll::Pending => Poll::Pending,
            Poll::Ready(result) => {
                self.body = None;
                Poll::Ready(result.err().map(Err))
            }
        }
    }
}
