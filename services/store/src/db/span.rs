//! The spans of transactions and statements (see the module above), built with the
//! OpenTelemetry API: only within a traced call, as children of the call's server span
//! (the current [`agentry_core::trace`] parent) or of their transaction's.

use std::{
    borrow::Cow,
    cell::RefCell,
    collections::HashMap,
    panic::Location,
    str::FromStr as _,
    sync::{Mutex, OnceLock},
};

use opentelemetry::{
    Context, KeyValue,
    global::{BoxedSpan, BoxedTracer},
    trace::{
        SpanBuilder, SpanContext, SpanId, SpanKind, TraceContextExt as _, TraceFlags, TraceId,
        TraceState, Tracer as _,
    },
};

use super::Backend;

/// A statement's span: ends when dropped, after the statement.
pub(crate) type StatementSpan = Option<BoxedSpan>;

/// The `db.system` of a back end.
pub(super) fn system(backend: Backend) -> &'static str {
    match backend {
        Backend::Postgres => "postgresql",
        Backend::Sqlite => "sqlite",
    }
}

/// The global tracer, which the server sets up before it serves a traced call (the only
/// place these spans are built).
fn tracer() -> &'static BoxedTracer {
    static TRACER: OnceLock<BoxedTracer> = OnceLock::new();
    TRACER.get_or_init(|| opentelemetry::global::tracer("agentry"))
}

/// Only work done for a traced call is traced: the background tasks' (reaper, listeners)
/// statements would otherwise each start a trace of their own, many per second; and the
/// children of a span that is not sampled would not be either. Decided before a span is
/// built: a span built and then dropped would still be exported.
fn traced(parent: &Context) -> bool {
    parent.has_active_span() && parent.span().span_context().is_sampled()
}

/// The context of the traced call being polled, if any: its server span as the parent.
fn call_context() -> Option<Context> {
    let parent = agentry_core::trace::current()?;
    let state = parent
        .trace_state
        .as_deref()
        .and_then(|state| TraceState::from_str(state).ok())
        .unwrap_or_default();
    Some(Context::new().with_remote_span_context(SpanContext::new(
        TraceId::from_bytes(parent.trace_id),
        SpanId::from_bytes(parent.span_id),
        TraceFlags::SAMPLED,
        false,
        state,
    )))
}

fn child(parent: &Context, name: Cow<'static, str>, attributes: Vec<KeyValue>) -> BoxedSpan {
    let builder = SpanBuilder::from_name(name)
        .with_kind(SpanKind::Client)
        .with_attributes(attributes);
    tracer().build_with_context(builder, parent)
}

/// A transaction's span, in a context its statements' spans take as their parent (an
/// empty context when the call is not traced): `transaction {operation}`, naming the
/// code that began it.
pub(super) fn transaction_span(
    backend: Backend,
    operation: &'static str,
    caller: &'static Location<'static>,
) -> Context {
    let Some(parent) = call_context() else {
        return Context::new();
    };
    let (name, operation) = if operation.is_empty() {
        (Cow::Borrowed("transaction"), "transaction")
    } else {
        (Cow::Owned(format!("transaction {operation}")), operation)
    };
    let attributes = vec![
        KeyValue::new("db.system", system(backend)),
        KeyValue::new("db.operation.name", operation),
        KeyValue::new("code.filepath", caller.file()),
        KeyValue::new("code.lineno", i64::from(caller.line())),
    ];
    parent.with_span(child(&parent, name, attributes))
}

/// A statement's span, named by [`summary`]: a child of its transaction's span, or else
/// of the current context's.
pub(super) fn statement_span(
    backend: Backend,
    sql: &str,
    transaction: Option<&Context>,
) -> StatementSpan {
    let span = |parent: &Context| {
        traced(parent).then(|| {
            let summary = kept_summary(sql);
            let attributes = vec![
                KeyValue::new("db.system", system(backend)),
                KeyValue::new("db.query.summary", summary.clone()),
            ];
            child(parent, summary, attributes)
        })
    };
    match transaction {
        Some(parent) => span(parent),
        None => call_context().and_then(|parent| span(&parent)),
    }
}

/// `SELECT runs`, `INSERT audit_log`, `UPDATE contexts`: a statement's operation and its
/// first table, from SQL whose values are all placeholders.
pub(super) fn summary(sql: &str) -> String {
    match parts(sql) {
        None => String::new(),
        Some((operation, None)) => operation.to_ascii_uppercase(),
        Some((operation, Some(table))) => format!("{} {table}", operation.to_ascii_uppercase()),
    }
}

/// The operation and the first table of a statement, as written in it.
fn parts(sql: &str) -> Option<(&str, Option<&str>)> {
    let mut words = sql.split_whitespace();
    let operation = words.next()?;
    let table = if operation.eq_ignore_ascii_case("UPDATE") {
        words.next()
    } else {
        words
            .by_ref()
            .find(|w| w.eq_ignore_ascii_case("FROM") || w.eq_ignore_ascii_case("INTO"))
            .and_then(|_| words.next())
    };
    let table = table
        .map(|t| t.trim_matches(|c| c == '"' || c == '`' || c == '(' || c == ')'))
        .filter(|t| !t.is_empty());
    Some((operation, table))
}

/// Summaries kept for the life of the process, at most.
const KEPT: usize = 4_096;

/// [`summary`], built once per operation and table and kept (leaked): the statements a
/// server runs name a bounded set of tables, so a span takes its name and attribute
/// without allocating. Past [`KEPT`] summaries, each is built anew.
fn kept_summary(sql: &str) -> Cow<'static, str> {
    thread_local! {
        /// This thread's view of [`KNOWN`], and a buffer for the lookup key.
        static SEEN: RefCell<(HashMap<Box<str>, &'static str>, String)> = RefCell::default();
    }
    static KNOWN: Mutex<Option<HashMap<Box<str>, &'static str>>> = Mutex::new(None);
    let Some((operation, table)) = parts(sql) else {
        return Cow::Borrowed("");
    };
    SEEN.with(|cell| {
        let mut guard = cell.borrow_mut();
        let (seen, key) = &mut *guard;
        key.clear();
        key.push_str(operation);
        key.push(' ');
        key.push_str(table.unwrap_or_default());
        if let Some(kept) = seen.get(key.as_str()) {
            return Cow::Borrowed(*kept);
        }
        let mut known = KNOWN.lock().unwrap_or_else(|e| e.into_inner());
        let known = known.get_or_insert_with(HashMap::new);
        let kept = match known.get(key.as_str()) {
            Some(kept) => *kept,
            None if known.len() < KEPT => {
                let kept: &'static str = Box::leak(summary(sql).into_boxed_str());
                known.insert(key.as_str().into(), kept);
                kept
            }
            None => return Cow::Owned(summary(sql)),
        };
        seen.insert(key.as_str().into(), kept);
        Cow::Borrowed(kept)
    })
}

#[cfg(test)]
mod tests {
    use super::{kept_summary, summary};

    #[test]
    fn summaries_name_operation_and_table_only() {
        assert_eq!(
            summary(r#"SELECT "status", COUNT("run_id") FROM "runs" WHERE "x" = $1"#),
            "SELECT runs"
        );
        assert_eq!(
            summary(r#"INSERT INTO "audit_log" ("a") VALUES ($1)"#),
            "INSERT audit_log"
        );
        assert_eq!(summary(r#"UPDATE "runs" SET "a" = ?"#), "UPDATE runs");
        assert_eq!(
            summary(r#"DELETE FROM "idempotency_keys""#),
            "DELETE idempotency_keys"
        );
        assert_eq!(summary("SELECT 1"), "SELECT");
    }

    #[test]
    fn kept_summaries_are_the_summaries() {
        for sql in [
            r#"select "a" from "runs" where "x" = $1"#,
            r#"SELECT "b" FROM "runs""#,
            r#"UPDATE "runs" SET "a" = ?"#,
            "SELECT 1",
            "",
        ] {
            assert_eq!(kept_summary(sql), summary(sql), "{sql}");
            assert_eq!(kept_summary(sql), summary(sql), "{sql} again");
        }
    }
}
