//! `agentry sessions …`: conversations with an instance, and their transcripts.

use agentry_proto::v1 as pb;
use clap::Subcommand;

use super::{
    Failure,
    conn::Client,
    listing::{Paging, print_all},
    registry::label,
};

#[derive(Subcommand, Debug)]
pub enum SessionsCmd {
    /// Creates a session with an instance of --project.
    Create {
        /// The session id [default: server-assigned]
        id: Option<String>,
        /// The instance the session talks to
        #[arg(long)]
        instance: String,
        #[arg(long, default_value = "")]
        description: String,
        /// A label KEY=VALUE (repeatable)
        #[arg(long = "label", value_parser = label)]
        labels: Vec<(String, String)>,
    },
    /// Gets a session.
    Get { name: String },
    /// Lists the sessions of --project, newest first.
    List {
        /// Only sessions with this instance
        #[arg(long)]
        instance: Option<String>,
        #[command(flatten)]
        paging: Paging,
    },
    /// Deletes a session, its messages and runs.
    Delete { name: String },
    /// The messages of a session, in order.
    Transcript {
        name: String,
        /// Include messages a rollback superseded
        #[arg(long)]
        show_superseded: bool,
        #[command(flatten)]
        paging: Paging,
    },
}

pub async fn run(c: Client, command: SessionsCmd) -> Result<(), Failure> {
    let mut execution = c.execution();
    match command {
        SessionsCmd::Create {
            id,
            instance,
            description,
            labels,
        } => {
            let session = pb::Session {
                instance: c.names.in_project("instances", &instance)?,
                description,
                labels: labels.into_iter().collect(),
                ..Default::default()
            };
            let request = pb::CreateSessionRequest {
                parent: c.names.project()?,
                session_id: id.unwrap_or_default(),
                session: Some(session),
                ..Default::default()
            };
            c.show(execution.create_session(request)).await
        }
        SessionsCmd::Get { name } => {
            let name = c.names.in_project("sessions", &name)?;
            let request = pb::GetSessionRequest { name };
            c.show(execution.get_session(request)).await
        }
        SessionsCmd::List { instance, paging } => {
            let filter = match instance {
                Some(i) => format!("instance = \"{}\"", c.names.in_project("instances", &i)?),
                None => String::new(),
            };
            let request = pb::ListSessionsRequest {
                parent: c.names.project()?,
                filter,
                ..Default::default()
            };
            print_all(&c, &paging, request).await
        }
        SessionsCmd::Delete { name } => {
            let name = c.names.in_project("sessions", &name)?;
            let request = pb::DeleteSessionRequest {
                name: name.clone(),
                ..Default::default()
            };
            c.deleted(&name, execution.delete_session(request)).await
        }
        SessionsCmd::Transcript {
            name,
            show_superseded,
            paging,
        } => {
            let request = pb::ListMessagesRequest {
                parent: c.names.in_project("sessions", &name)?,
                show_superseded,
                ..Default::default()
            };
            print_all(&c, &paging, request).await
        }
    }
}
