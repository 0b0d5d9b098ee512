//! The tracing spans of transactions and statements (see the module above).

use tracing::Span;

use super::Backend;

/// The `db.system` of a back end.
pub(super) fn system(backend: Backend) -> &'static str {
    match backend {
        Backend::Postgres => "postgresql",
        Backend::Sqlite => "sqlite",
    }
}

/// Only work done for a call is traced: the background tasks' (reaper, listeners)
/// statements would otherwise each start a trace of their own, many per second. Decided
/// before a span is built: a span built and then dropped would still be exported.
pub(super) fn in_a_call() -> bool {
    !Span::current().is_none()
}

/// A statement's span, named by [`summary`]; a child of its transaction's span.
pub(super) fn statement_span(backend: Backend, sql: &str, transaction: Option<&Span>) -> Span {
    let span = match transaction {
        Some(parent) if parent.is_disabled() => Span::none(),
        None if !in_a_call() => Span::none(),
        Some(parent) => tracing::debug_span!(
            target: "agentry_store::db",
            parent: parent,
            "db.statement",
            otel.name = tracing::field::Empty,
            otel.kind = "client",
            db.system = system(backend),
            db.query.summary = tracing::field::Empty,
        ),
        None => tracing::debug_span!(
            target: "agentry_store::db",
            "db.statement",
            otel.name = tracing::field::Empty,
            otel.kind = "client",
            db.system = system(backend),
            db.query.summary = tracing::field::Empty,
        ),
    };
    if !span.is_disabled() {
        let summary = summary(sql);
        span.record("otel.name", summary.as_str());
        span.record("db.query.summary", summary.as_str());
    }
    span
}

/// `SELECT runs`, `INSERT audit_log`, `UPDATE contexts`: a statement's operation and its
/// first table, from SQL whose values are all placeholders.
pub(super) fn summary(sql: &str) -> String {
    let mut words = sql.split_whitespace();
    let Some(operation) = words.next() else {
        return String::new();
    };
    let operation = operation.to_ascii_uppercase();
    let table = if operation == "UPDATE" {
        words.next()
    } else {
        words
            .by_ref()
            .find(|w| w.eq_ignore_ascii_case("FROM") || w.eq_ignore_ascii_case("INTO"))
            .and_then(|_| words.next())
    };
    match table.map(|t| t.trim_matches(|c| c == '"' || c == '`' || c == '(' || c == ')')) {
        Some(table) if !table.is_empty() => format!("{operation} {table}"),
        _ => operation,
    }
}

#[cfg(test)]
mod tests {
    use super::summary;

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
}
