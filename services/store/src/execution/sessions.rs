//! Sessions and their transcripts.

use agentry_core::{
    Error, Result,
    model::Page,
    names::{InstanceName, ProjectName, SessionName},
    port::SessionStore,
    run::{Message, NewSession, Session, check_takes_work},
    time::now_micros,
};
use async_trait::async_trait;
use sea_query::{Expr, IntoIden, Order, Query, SimpleExpr};

use super::rows::{MessageRow, SESSION_COLUMNS, SessionRow, lock_session, session_by_name};
use crate::{
    PageRequest, Store,
    db::named,
    instances::read_instance,
    mutation::{Mutation, mutate},
    paginate,
    rows::to_json,
    tables::{Messages, Sessions},
};

/// `create_time:id` of the last row of a newest-first page.
pub(crate) fn time_cursor(time: i64, id: &str) -> String {
    format!("{time}:{id}")
}

pub(crate) fn parse_time_cursor(cursor: &str) -> Result<(i64, String)> {
    cursor
        .split_once(':')
        .and_then(|(t, id)| Some((t.parse().ok()?, id.to_owned())))
        .ok_or_else(|| Error::invalid("page_token", "not a token of this list"))
}

/// The keyset condition of a list ordered by `(time, id)` descending: the row value
/// `(time, id) < (t, id)`, which an index ending in `(time, id)` answers with a seek (the
/// equivalent `time < t OR (time = t AND id < id)` is a filter over every row before
/// the page).
pub(crate) fn before_cursor<C: IntoIden + Copy + 'static>(
    time_col: C,
    id_col: C,
    time: i64,
    id: String,
) -> SimpleExpr {
    Expr::tuple([Expr::col(time_col).into(), Expr::col(id_col).into()])
        .lt(Expr::tuple([Expr::val(time).into(), Expr::val(id).into()]))
}

#[async_trait]
impl SessionStore for Store {
    async fn create_session(&self, m: &Mutation, new: NewSession) -> Result<Session> {
        mutate!(self, m, |tx| async {
            let instance_name = InstanceName {
                workspace: new.name.workspace.clone(),
                project: new.name.project.clone(),
                instance: new.instance.clone(),
            };
            let instance = read_instance(tx, &instance_name).await?;
            check_takes_work(&instance)?;
            let session = Session::new(&new, now_micros());
            let now = session.create_time;
            let insert = Query::insert()
                .into_table(Sessions::Table)
                .columns(SESSION_COLUMNS)
                .values_panic([
                    session.workspace.clone().into(),
                    session.project.clone().into(),
                    session.id.clone().into(),
                    session.instance.clone().into(),
                    session.description.clone().into(),
                    to_json(&session.labels).into(),
                    String::new().into(),
                    0i64.into(),
                    now.into(),
                    now.into(),
                ])
                .to_owned();
            tx.execute(&insert)
                .await
                .map_err(|e| named(e, &m.resource))?;
            Ok(session)
        })
    }

    async fn get_session(&self, name: &SessionName) -> Result<Session> {
        let row: Option<SessionRow> = self.db.fetch_optional(&session_by_name(name)).await?;
        row.ok_or_else(|| Error::not_found(name.to_string()))?
            .try_into()
    }

    async fn list_sessions(
        &self,
        project: &ProjectName,
        instance: Option<&str>,
        page: &PageRequest,
    ) -> Result<Page<Session>> {
        let mut stmt = Query::select()
            .columns(SESSION_COLUMNS)
            .from(Sessions::Table)
            .and_where(Expr::col(Sessions::WorkspaceId).eq(project.workspace.as_str()))
            .and_where(Expr::col(Sessions::ProjectId).eq(project.project.as_str()))
            .to_owned();
        if let Some(instance) = instance {
            stmt.and_where(Expr::col(Sessions::InstanceId).eq(instance));
        }
        if let Some(after) = &page.after {
            let (time, id) = parse_time_cursor(after)?;
            stmt.and_where(before_cursor(
                Sessions::CreateTime,
                Sessions::SessionId,
                time,
                id,
            ));
        }
        stmt.order_by(Sessions::CreateTime, Order::Desc)
            .order_by(Sessions::SessionId, Order::Desc)
            .limit(page.size as u64 + 1);
        let rows: Vec<SessionRow> = self.db.fetch_all(&stmt).await?;
        let items = rows
            .into_iter()
            .map(Session::try_from)
            .collect::<Result<Vec<_>>>()?;
        Ok(paginate(items, page.size, |s| {
            time_cursor(s.create_time, &s.id)
        }))
    }

    async fn delete_session(&self, m: &Mutation, name: &SessionName) -> Result<()> {
        mutate!(self, m, |tx| async {
            lock_session(tx, name).await?.check_deletable()?;
            tx.execute(
                &Query::delete()
                    .from_table(Sessions::Table)
                    .and_where(Expr::col(Sessions::WorkspaceId).eq(name.workspace.as_str()))
                    .and_where(Expr::col(Sessions::ProjectId).eq(name.project.as_str()))
                    .and_where(Expr::col(Sessions::SessionId).eq(name.session.as_str()))
                    .to_owned(),
            )
            .await?;
            Ok(())
        })
    }

    async fn list_messages(
        &self,
        name: &SessionName,
        show_superseded: bool,
        page: &PageRequest,
    ) -> Result<Page<Message>> {
        // A missing session is NOT_FOUND, not an empty list.
        self.get_session(name).await?;
        let mut stmt = Query::select()
            .columns([
                Messages::Sequence,
                Messages::Role,
                Messages::Content,
                Messages::ToolCall,
                Messages::RunId,
                Messages::Superseded,
                Messages::CreateTime,
            ])
            .from(Messages::Table)
            .and_where(Expr::col(Messages::WorkspaceId).eq(name.workspace.as_str()))
            .and_where(Expr::col(Messages::ProjectId).eq(name.project.as_str()))
            .and_where(Expr::col(Messages::SessionId).eq(name.session.as_str()))
            .to_owned();
        if !show_superseded {
            stmt.and_where(Expr::col(Messages::Superseded).eq(0));
        }
        if let Some(after) = &page.after {
            let after: i64 = after
                .parse()
                .map_err(|_| Error::invalid("page_token", "not a token of this list"))?;
            stmt.and_where(Expr::col(Messages::Sequence).gt(after));
        }
        stmt.order_by(Messages::Sequence, Order::Asc)
            .limit(page.size as u64 + 1);
        let rows: Vec<MessageRow> = self.db.fetch_all(&stmt).await?;
        let items = rows
            .into_iter()
            .map(Message::try_from)
            .collect::<Result<Vec<_>>>()?;
        Ok(paginate(items, page.size, |m| m.sequence.to_string()))
    }
}
