//! Deferred writes: statements whose answer nobody reads (a row saved, rows inserted, the
//! audit record) wait in their transaction and go to the database together, before the
//! transaction's next statement or its COMMIT. On Postgres they become one statement, a
//! data-modifying CTE per write but the last, so a run change with its session, events
//! and audit record costs one round trip instead of four or five; SQLite runs them one
//! after another.
//!
//! The writes of one batch see the snapshot taken before any of them: none may depend on
//! another's effect, and no row may be written twice in one batch (Postgres would apply
//! only one of the writes). Rows inserted by one write are visible to the constraint
//! checks of another (foreign keys are checked at the end of the statement).

use agentry_core::Result;
use sea_query::{PostgresQueryBuilder, QueryStatementWriter, SqliteQueryBuilder, Values};

use super::{Backend, Tx, TxConn};

/// Postgres binds at most 65,535 parameters per statement; a batch that would pass this
/// many is sent as more than one statement.
const MAX_PARAMETERS: usize = 30_000;

impl Tx {
    /// A write whose answer (rows affected) nobody needs, of rows no other deferred
    /// write touches (new rows): sent with the other deferred writes, as one statement
    /// on Postgres, before the transaction's next statement or its commit (`db/batch.rs`).
    pub(crate) fn defer(&mut self, stmt: &impl QueryStatementWriter) {
        self.deferred.push(render(self.backend(), stmt));
    }

    /// [`Tx::defer`] for a write of the one row `key` names (its table and primary key):
    /// one statement cannot write a row twice, so a row already pending sends the
    /// deferred writes first.
    pub(crate) async fn defer_row(
        &mut self,
        key: String,
        stmt: &impl QueryStatementWriter,
    ) -> Result<()> {
        if self.deferred_rows.contains(&key) {
            self.flush().await?;
        }
        self.deferred_rows.push(key);
        self.defer(stmt);
        Ok(())
    }

    /// Sends the deferred writes.
    pub(crate) async fn flush(&mut self) -> Result<()> {
        self.flush_then(false).await
    }

    /// Sends the deferred writes; with `commit`, on Postgres, the COMMIT goes right
    /// behind the last of them, in the same round trip (the transaction then ends
    /// whatever that write's outcome; `Tx::commit` reads the COMMIT's answer).
    pub(super) async fn flush_then(&mut self, commit: bool) -> Result<()> {
        if self.deferred.is_empty() {
            return Ok(());
        }
        let writes = std::mem::take(&mut self.deferred);
        self.deferred_rows.clear();
        let parent = Some(&self.span);
        let backend = self.backend();
        let writes = combine(backend, writes);
        let last = writes.len().saturating_sub(1);
        for (i, Rendered { sql, values }) in writes.into_iter().enumerate() {
            let values = sea_query_binder::SqlxValues(values);
            let _span = super::statement_span(backend, &sql, parent);
            match &mut self.conn {
                TxConn::Postgres(tx) => {
                    if commit && i == last {
                        tx.commit_behind_next_query();
                    }
                    sqlx::query_with(&sql, values)
                        .execute(&mut **tx)
                        .await
                        .map(drop)
                }
                TxConn::Sqlite(tx) => sqlx::query_with(&sql, values)
                    .execute(&mut **tx)
                    .await
                    .map(drop),
            }
            .map_err(super::map_err)?;
        }
        Ok(())
    }
}

/// A write rendered for its back end.
pub(super) struct Rendered {
    pub sql: String,
    pub values: Values,
}

pub(super) fn render(backend: Backend, stmt: &impl QueryStatementWriter) -> Rendered {
    let (sql, values) = match backend {
        Backend::Postgres => super::render::build(stmt, PostgresQueryBuilder),
        Backend::Sqlite => super::render::build(stmt, SqliteQueryBuilder),
    };
    Rendered { sql, values }
}

/// The statements that send `writes`: on Postgres as few as the parameter limit allows
/// (one data-modifying CTE each), on SQLite each write alone.
pub(super) fn combine(backend: Backend, writes: Vec<Rendered>) -> Vec<Rendered> {
    if backend == Backend::Sqlite {
        return writes;
    }
    let mut statements = Vec::new();
    let mut group: Vec<Rendered> = Vec::new();
    let mut parameters = 0;
    for write in writes {
        let n = write.values.0.len();
        if !group.is_empty() && parameters + n > MAX_PARAMETERS {
            statements.push(with_query(std::mem::take(&mut group)));
            parameters = 0;
        }
        parameters += n;
        group.push(write);
    }
    if !group.is_empty() {
        statements.push(with_query(group));
    }
    statements
}

/// `WITH w0 AS (first), w1 AS (second) last`, the parameters of each numbered after
/// those of the writes before it.
fn with_query(mut writes: Vec<Rendered>) -> Rendered {
    if writes.len() == 1 {
        return writes.pop().expect("one write");
    }
    let last = writes.len() - 1;
    let mut sql = String::from("WITH ");
    let mut values = Vec::new();
    for (i, write) in writes.into_iter().enumerate() {
        let body = renumber(&write.sql, values.len());
        if i == last {
            sql.push(' ');
            sql.push_str(&body);
        } else {
            if i > 0 {
                sql.push_str(", ");
            }
            sql.push_str(&format!("w{i} AS ({body})"));
        }
        values.extend(write.values.0);
    }
    Rendered {
        sql,
        values: Values(values),
    }
}

/// `sql` with every placeholder `$n` outside quotes made `$(n + offset)`.
fn renumber(sql: &str, offset: usize) -> String {
    if offset == 0 {
        return sql.to_owned();
    }
    let mut out = String::with_capacity(sql.len() + 16);
    let mut quote: Option<char> = None;
    let mut chars = sql.chars().peekable();
    while let Some(c) = chars.next() {
        match (quote, c) {
            (None, '\'' | '"') => quote = Some(c),
            (Some(q), _) if c == q => quote = None,
            (None, '$') if chars.peek().is_some_and(char::is_ascii_digit) => {
                let mut n = 0usize;
                while let Some(d) = chars.peek().and_then(|d| d.to_digit(10)) {
                    n = n * 10 + d as usize;
                    chars.next();
                }
                out.push('$');
                out.push_str(&(n + offset).to_string());
                continue;
            }
            _ => {}
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use sea_query::{Alias, Expr, Query};

    use super::*;

    #[test]
    fn placeholders_outside_quotes_move_by_the_offset() {
        assert_eq!(
            renumber(
                r#"UPDATE "t" SET "a" = $1, "b$2" = '$3' WHERE "c" = $12"#,
                4
            ),
            r#"UPDATE "t" SET "a" = $5, "b$2" = '$3' WHERE "c" = $16"#
        );
        assert_eq!(renumber("SELECT $1", 0), "SELECT $1");
    }

    fn update(id: i32) -> Rendered {
        let stmt = Query::update()
            .table(Alias::new("t"))
            .value(Alias::new("a"), id)
            .and_where(Expr::col(Alias::new("id")).eq(id))
            .to_owned();
        render(Backend::Postgres, &stmt)
    }

    #[test]
    fn writes_become_one_cte_with_their_parameters_in_order() {
        let combined = combine(Backend::Postgres, vec![update(1), update(2), update(3)]);
        assert_eq!(combined.len(), 1);
        assert_eq!(
            combined[0].sql,
            r#"WITH w0 AS (UPDATE "t" SET "a" = $1 WHERE "id" = $2), w1 AS (UPDATE "t" SET "a" = $3 WHERE "id" = $4) UPDATE "t" SET "a" = $5 WHERE "id" = $6"#
        );
        let ids = combined[0].values.0.to_vec();
        assert_eq!(ids, [1, 1, 2, 2, 3, 3].map(sea_query::Value::from));
    }

    #[test]
    fn sqlite_runs_each_write_alone() {
        let stmt = Query::delete().from_table(Alias::new("t")).to_owned();
        let writes = vec![
            render(Backend::Sqlite, &stmt),
            render(Backend::Sqlite, &stmt),
        ];
        assert_eq!(combine(Backend::Sqlite, writes).len(), 2);
    }
}
