//! `agentry sessions …`: conversations with an instance, and their transcripts.

use agentry_proto::v1 as pb;
use clap::Subcommand;

use super::named::{Create, Named};
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
    let name_of = |arg: &str| c.names.in_project("sessions", arg);
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
            let parent = c.names.project()?;
            let request = pb::CreateSessionRequest::create(parent, id.unwrap_or_default(), session);
            c.show(execution.create_session(request)).await
        }
        SessionsCmd::Get { name } => c.send(pb::GetSessionRequest::named(name_of(&name)?)).await,
        SessionsCmd::List { instance, paging } => {
            let request = pb::ListSessionsRequest {
                parent: c.names.project()?,
                filter: c.names.instance_filter("instance", instance)?,
                ..Default::default()
            };
            print_all(&c, &paging, request).await
        }
        SessionsCmd::Delete { name } => {
            c.delete(pb::DeleteSessionRequest::named(name_of(&name)?))
                .await
        }
        SessionsCmd::Transcript {
            name,
            show_superseded,
            paging,
        } => {
            let parent = name_of(&name)?;
            let request = pb::ListMessagesRequest {
                parent,
                show_superseded,
                ..Default::default()
            };
            print_all(&c, &paging, request).await
        }
    }
}
