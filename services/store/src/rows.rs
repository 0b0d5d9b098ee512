//! Whole rows: decoding columns that hold JSON text and the rows a lookup found;
//! selecting, inserting, counting and deleting rows; patching a resource.

use std::fmt::Display;

use agentry_core::{
    Error, Result,
    model::{Instance, Labels},
    names::{ContextName, InstanceName, ProjectName, SessionName},
    time::TimeRange,
};
use sea_query::{
    Asterisk, Condition, ConditionalStatement, Expr, Func, InsertStatement, IntoColumnRef,
    IntoCondition, IntoIden, IntoTableRef, Query, SelectStatement, SimpleExpr,
};
use serde::de::DeserializeOwned;

use crate::{
    db::{Tx, named},
    tables::{ContextBlobs, Contexts, Instances, Messages, Projects, Runs, Sessions},
};

pub(crate) fn json<T: DeserializeOwned>(column: &str, text: &str) -> Result<T> {
    serde_json::from_str(text)
        .map_err(|e| Error::internal(format!("column {column} holds invalid JSON: {e}")))
}

pub(crate) fn labels(text: &str) -> Result<Labels> {
    json("labels", text)
}

pub(crate) fn to_json(value: &impl serde::Serialize) -> String {
    serde_json::to_string(value).expect("domain values serialize")
}

/// An `etag` from a request, if it sent one (none: unconditional).
pub(crate) fn check_etag(current: i64, expected: Option<&str>) -> Result<()> {
    if expected.is_none_or(|expected| expected == current.to_string()) {
        Ok(())
    } else {
        Err(Error::etag_mismatch(&current.to_string()))
    }
}

/// The row a lookup found, decoded, or NOT_FOUND naming `name`.
pub(crate) fn found<R, T>(row: Option<R>, name: impl Display) -> Result<T>
where
    R: TryInto<T, Error = Error>,
{
    row.ok_or_else(|| Error::not_found(name.to_string()))?
        .try_into()
}

/// Fetched rows, each decoded.
pub(crate) fn decode_all<R, T>(rows: Vec<R>) -> Result<Vec<T>>
where
    R: TryInto<T, Error = Error>,
{
    rows.into_iter().map(R::try_into).collect()
}

/// `const $name`: the columns of `$table` named, in the order rows decode and inserts
/// bind; without a name, the array of those columns.
macro_rules! columns {
    ($(#[$attr:meta])* $vis:vis $name:ident: $table:ident [$($column:ident),* $(,)?]) => {
        $(#[$attr])*
        $vis const $name: [$table; [$(stringify!($column)),*].len()] = [$($table::$column),*];
    };
    ($table:ident [$($column:ident),* $(,)?]) => {
        [$($table::$column),*]
    };
}
pub(crate) use columns;

/// `impl TryFrom<$row> for $model`: `$body` decodes the row, bound to `$r`.
macro_rules! decode {
    ($row:ty => $model:ty, |$r:ident| $body:expr) => {
        impl TryFrom<$row> for $model {
            type Error = agentry_core::Error;

            fn try_from($r: $row) -> agentry_core::Result<Self> {
                $body
            }
        }
    };
}
pub(crate) use decode;

/// The values of one row to insert, in column order: each expression's value, cloned.
macro_rules! values {
    ($($value:expr),* $(,)?) => {
        [$($crate::rows::value(&$value)),*]
    };
}
pub(crate) use values;

/// A value to bind, cloned from a field.
pub(crate) fn value<T: Clone + Into<SimpleExpr>>(v: &T) -> SimpleExpr {
    v.clone().into()
}

/// A patch's field: `Some` replaces the value.
pub(crate) fn patch<T: Clone>(field: &mut T, value: &Option<T>) {
    if let Some(v) = value {
        *field = v.clone();
    }
}

/// A resource changed now: its etag counts up and its update time moves forward, never
/// back (a clock step back still orders the updates).
pub(crate) fn bump(etag: &mut i64, update_time: &mut i64) {
    *etag += 1;
    *update_time = agentry_core::time::now_micros().max(*update_time + 1);
}

/// What lives in a project: a project's name, or the name of something under one.
pub(crate) trait InProject {
    /// Its workspace id and project id.
    fn ids(&self) -> (&str, &str);
}

macro_rules! in_project_by_fields {
    ($($ty:ty),*) => {
        $(impl InProject for $ty {
            fn ids(&self) -> (&str, &str) {
                (&self.workspace, &self.project)
            }
        })*
    };
}
in_project_by_fields!(
    ProjectName,
    InstanceName,
    ContextName,
    SessionName,
    Instance
);

/// A table keyed by `(workspace_id, project_id, …)`.
pub(crate) trait ProjectKeyed: IntoColumnRef + Copy + 'static {
    const WORKSPACE_ID: Self;
    const PROJECT_ID: Self;

    /// The rows of `of`'s project.
    fn in_project(of: &impl InProject) -> Condition {
        let (workspace, project) = of.ids();
        Condition::all()
            .add(Expr::col(Self::WORKSPACE_ID).eq(workspace))
            .add(Expr::col(Self::PROJECT_ID).eq(project))
    }
}

macro_rules! project_keyed {
    ($($table:ident),*) => {
        $(impl ProjectKeyed for $table {
            const WORKSPACE_ID: Self = Self::WorkspaceId;
            const PROJECT_ID: Self = Self::ProjectId;
        })*
    };
}
project_keyed!(
    Projects,
    Instances,
    Contexts,
    ContextBlobs,
    Sessions,
    Messages,
    Runs
);

/// Narrows `stmt` to rows whose `column` lies within `range`.
pub(crate) fn within<C: IntoColumnRef + Copy>(
    stmt: &mut impl ConditionalStatement,
    column: C,
    range: TimeRange,
) {
    if let Some(after) = range.after {
        stmt.and_where(Expr::col(column).gt(after));
    }
    if let Some(before) = range.before {
        stmt.and_where(Expr::col(column).lt(before));
    }
}

/// `columns` of every row of `table`.
pub(crate) fn select_all<C: IntoColumnRef>(
    table: impl IntoTableRef,
    columns: impl IntoIterator<Item = C>,
) -> SelectStatement {
    Query::select().columns(columns).from(table).to_owned()
}

/// One row of `values` for `columns` of `table`.
pub(crate) fn insert_row<C: IntoIden>(
    table: impl IntoTableRef,
    columns: impl IntoIterator<Item = C>,
    values: impl IntoIterator<Item = SimpleExpr>,
) -> InsertStatement {
    insert_rows(table, columns, [values])
}

/// `rows` of values for `columns` of `table`, in one statement.
pub(crate) fn insert_rows<C, V>(
    table: impl IntoTableRef,
    columns: impl IntoIterator<Item = C>,
    rows: impl IntoIterator<Item = V>,
) -> InsertStatement
where
    C: IntoIden,
    V: IntoIterator<Item = SimpleExpr>,
{
    let mut stmt = Query::insert();
    stmt.into_table(table).columns(columns);
    for values in rows {
        stmt.values_panic(values);
    }
    stmt
}

impl Tx {
    /// INSERTs the new resource `resource`: a unique violation is ALREADY_EXISTS naming it.
    pub(crate) async fn insert(
        &mut self,
        stmt: &InsertStatement,
        resource: impl Display,
    ) -> Result<()> {
        self.execute(stmt).await.map_err(|e| named(e, resource))?;
        Ok(())
    }

    /// How many rows of `table` match `condition`.
    pub(crate) async fn count(
        &mut self,
        table: impl IntoTableRef,
        condition: impl IntoCondition,
    ) -> Result<i64> {
        let stmt = Query::select()
            .expr(Func::count(Expr::col(Asterisk)))
            .from(table)
            .cond_where(condition)
            .to_owned();
        let (n,): (i64,) = self.fetch_optional(&stmt).await?.unwrap_or((0,));
        Ok(n)
    }

    /// DELETEs the rows of `table` that match `condition`; answers how many went.
    pub(crate) async fn delete(
        &mut self,
        table: impl IntoTableRef,
        condition: impl IntoCondition,
    ) -> Result<u64> {
        self.execute(&*Query::delete().from_table(table).cond_where(condition))
            .await
    }

    /// NOT_FOUND naming `name` unless a row of `table` matches `condition`.
    pub(crate) async fn must_exist(
        &mut self,
        table: impl IntoTableRef,
        condition: impl IntoCondition,
        name: impl Display,
    ) -> Result<()> {
        match self.exists(table, condition).await? {
            true => Ok(()),
            false => Err(Error::not_found(name.to_string())),
        }
    }
}
