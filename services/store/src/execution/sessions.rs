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
use sea_query::{Expr, IntoIden, Order, SimpleExpr};

use super::rows::{
    MESSAGE_COLUMNS, MessageRow, SESSION_COLUMNS, SessionRow, lock_session, session_by_name,
    session_key,
};
use crate::{
    PageRequest, Store, fetch_page,
    instances::read_instance,
    mutation::{Mutation, mutate},
    rows::{ProjectKeyed, found, insert_row, select_all, to_json, values},
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
            let instance_name =
                InstanceName::new(&new.name.workspace, &new.name.project, &new.instance);
            let instance = read_instance(tx, &instance_name).await?;
            check_takes_work(&instance)?;
            let session = Session::new(&new, now_micros());
            let now = session.create_time;
            let insert = insert_row(
                Sessions::Table,
                SESSION_COLUMNS,
                values![
                    session.workspace,
                    session.project,
                    session.id,
                    session.instance,
                    session.description,
                    to_json(&session.labels),
                    String::new(),
                    0i64,
                    now,
                    now,
                ],
            );
            tx.insert(&insert, &m.resource).await?;
            Ok(session)
        })
    }

    async fn get_session(&self, name: &SessionName) -> Result<Session> {
        let stmt = session_by_name(name);
        found(self.db.fetch_optional::<SessionRow>(&stmt).await?, name)
    }

    async fn list_sessions(
        &self,
        project: &ProjectName,
        instance: Option<&str>,
        page: &PageRequest,
    ) -> Result<Page<Session>> {
        let mut stmt = select_all(Sessions::Table, SESSION_COLUMNS)
            .cond_where(Sessions::in_project(project))
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
            .order_by(Sessions::SessionId, Order::Desc);
        fetch_page::<SessionRow, Session>(&self.db, stmt, page.size, |s| {
            time_cursor(s.create_time, &s.id)
        })
        .await
    }

    async fn delete_session(&self, m: &Mutation, name: &SessionName) -> Result<()> {
        mutate!(self, m, |tx| async {
            lock_session(tx, name).await?.check_deletable()?;
            tx.delete(Sessions::Table, session_key(name)).await?;
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
        let mut stmt = select_all(Messages::Table, MESSAGE_COLUMNS)
            .cond_where(Messages::in_project(name))
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
        stmt.order_by(Messages::Sequence, Order::Asc);
        fetch_page::<MessageRow, Message>(&self.db, stmt, page.size, |m| m.sequence.to_string())
            .await
    }
}
