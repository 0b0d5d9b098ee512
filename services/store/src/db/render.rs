//! Rendering sea-query statements into SQL text and bound values.
//!
//! sea-query's own writer (`SqlWriterValues`) formats every piece of text it is given
//! with `write!` and every placeholder with `write!` too; on the run path that took
//! about an eighth of the server's instructions (callgrind). [`Writer`] appends instead.
//! The text and the values are the same as sea-query's `build` (a test compares them,
//! and debug builds compare every statement they render).

use std::fmt::{self, Write};

use sea_query::{QueryBuilder, QueryStatementWriter, SqlWriter, Value, Values};

/// SQL text and values collected by plain appends.
struct Writer {
    sql: String,
    values: Vec<Value>,
    /// `$1, $2, …` (Postgres) rather than `?` (SQLite).
    numbered: bool,
}

impl Write for Writer {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.sql.push_str(s);
        Ok(())
    }

    fn write_char(&mut self, c: char) -> fmt::Result {
        self.sql.push(c);
        Ok(())
    }
}

impl fmt::Display for Writer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.sql)
    }
}

impl SqlWriter for Writer {
    fn push_param(&mut self, value: Value, _: &dyn QueryBuilder) {
        self.values.push(value);
        if self.numbered {
            self.sql.push('$');
            push_number(&mut self.sql, self.values.len());
        } else {
            self.sql.push('?');
        }
    }

    fn as_writer(&mut self) -> &mut dyn Write {
        self
    }
}

/// Appends the decimal digits of `n`.
fn push_number(sql: &mut String, n: usize) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    let mut rest = n;
    loop {
        at -= 1;
        digits[at] = b'0' + (rest % 10) as u8;
        rest /= 10;
        if rest == 0 {
            break;
        }
    }
    for &d in &digits[at..] {
        sql.push(char::from(d));
    }
}

/// `stmt` rendered by `builder`: its SQL text and the values it binds, in order.
pub(crate) fn build<B: QueryBuilder + Default>(
    stmt: &impl QueryStatementWriter,
    builder: B,
) -> (String, Values) {
    let (placeholder, numbered) = builder.placeholder();
    debug_assert!(
        (numbered && placeholder == "$") || (!numbered && placeholder == "?"),
        "an unexpected placeholder {placeholder:?}"
    );
    let mut writer = Writer {
        sql: String::with_capacity(256),
        values: Vec::new(),
        numbered,
    };
    stmt.build_collect_into(builder, &mut writer);
    let built = (writer.sql, Values(writer.values));
    #[cfg(debug_assertions)]
    {
        let theirs = stmt.build(B::default());
        assert_eq!(built.0, theirs.0, "rendered SQL differs from sea-query's");
        assert_eq!(built.1, theirs.1, "bound values differ from sea-query's");
    }
    built
}

#[cfg(test)]
mod tests {
    use sea_query::{Alias, Expr, OnConflict, PostgresQueryBuilder, Query, SqliteQueryBuilder};

    use super::*;

    fn both(stmt: &impl QueryStatementWriter) {
        assert_eq!(
            build(stmt, PostgresQueryBuilder),
            stmt.build(PostgresQueryBuilder)
        );
        assert_eq!(
            build(stmt, SqliteQueryBuilder),
            stmt.build(SqliteQueryBuilder)
        );
    }

    #[test]
    fn statements_render_as_sea_query_renders_them() {
        let t = || Alias::new("t");
        let c = |name: &str| Alias::new(name);
        let select = Query::select()
            .columns([c("a"), c("b")])
            .from(t())
            .and_where(Expr::col(c("a")).eq("x'y"))
            .and_where(Expr::cust("status = 'QUEUED' AND ready = 1"))
            .and_where(Expr::col(c("n")).is_in((0..12).collect::<Vec<i64>>()))
            .limit(3)
            .to_owned();
        both(&select);
        let mut insert = Query::insert()
            .into_table(t())
            .columns([c("a"), c("b")])
            .to_owned();
        for i in 0..15 {
            insert.values_panic([i.into(), format!("v{i}").into()]);
        }
        insert.on_conflict(OnConflict::column(c("a")).update_column(c("b")).to_owned());
        both(&insert);
        let update = Query::update()
            .table(t())
            .value(c("a"), Option::<i64>::None)
            .value(c("b"), 1.5f64)
            .and_where(Expr::col(c("a")).eq(Expr::col(c("b"))))
            .to_owned();
        both(&update);
        both(&Query::delete().from_table(t()).to_owned());
    }

    #[test]
    fn numbers_print_in_decimal() {
        for n in [0, 1, 9, 10, 99, 100, 65_535, usize::MAX] {
            let mut s = String::new();
            push_number(&mut s, n);
            assert_eq!(s, n.to_string());
        }
    }
}
