//! `agentry workspaces …`, `agentry projects …`, `agentry keys …`.

use std::collections::BTreeMap;

use agentry_proto::v1 as pb;
use clap::{Args, Subcommand, ValueEnum};
use prost_types::FieldMask;

use super::{
    Failure,
    conn::Client,
    listing::{Paging, print_all},
    status::fail,
    time::{now_micros, parse_duration, timestamp},
};
use super::{
    listing::Under,
    named::{Create, Named},
};

/// `k=v` → (k, v).
pub fn label(text: &str) -> Result<(String, String), String> {
    text.split_once('=')
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .ok_or_else(|| format!("{text:?} is not KEY=VALUE"))
}

/// Fields of a workspace or a project that `create` and `update` take.
#[derive(Args, Debug, Clone, Default)]
pub struct Spec {
    #[arg(long)]
    pub display_name: Option<String>,
    #[arg(long)]
    pub description: Option<String>,
    /// A label KEY=VALUE (repeatable); on update, replaces all labels
    #[arg(long = "label", value_parser = label)]
    pub labels: Vec<(String, String)>,
}

impl Spec {
    /// The update mask: the fields given.
    fn mask(&self) -> Result<Option<FieldMask>, Failure> {
        let mut paths = Vec::new();
        if self.display_name.is_some() {
            paths.push("display_name".to_owned());
        }
        if self.description.is_some() {
            paths.push("description".to_owned());
        }
        if !self.labels.is_empty() {
            paths.push("labels".to_owned());
        }
        if paths.is_empty() {
            return Err(fail!(
                "nothing to update: give --display-name, --description or --label"
            ));
        }
        Ok(Some(FieldMask { paths }))
    }

    fn labels(&self) -> BTreeMap<String, String> {
        self.labels.iter().cloned().collect()
    }

    /// The workspace named `name` (empty to create) with the fields given.
    fn workspace(&self, name: String) -> pb::Workspace {
        pb::Workspace {
            name,
            display_name: self.display_name.clone().unwrap_or_default(),
            description: self.description.clone().unwrap_or_default(),
            labels: self.labels(),
            ..Default::default()
        }
    }

    /// The project named `name` (empty to create) with the fields given.
    fn project(&self, name: String) -> pb::Project {
        pb::Project {
            name,
            display_name: self.display_name.clone().unwrap_or_default(),
            description: self.description.clone().unwrap_or_default(),
            labels: self.labels(),
            ..Default::default()
        }
    }
}

/// The commands of workspaces and of projects, which have the same fields.
#[derive(Subcommand, Debug)]
pub enum SpecCmd {
    /// Creates one: a workspace (ROOT), or a project in --workspace.
    Create {
        /// `[a-z][a-z0-9-]{0,62}`
        id: String,
        #[command(flatten)]
        spec: Spec,
    },
    /// Gets one [default: --workspace, or --project].
    Get { name: Option<String> },
    /// Lists the workspaces (ROOT), or the projects of --workspace.
    List {
        #[command(flatten)]
        paging: Paging,
    },
    /// Updates the fields given [default: --workspace, or --project].
    Update {
        name: Option<String>,
        #[command(flatten)]
        spec: Spec,
    },
    /// Deletes one; refused while a workspace has projects, or a project live instances,
    /// unless --force.
    Delete {
        name: String,
        #[arg(long)]
        force: bool,
    },
}

pub async fn workspaces(c: Client, command: SpecCmd) -> Result<(), Failure> {
    let mut registry = c.registry();
    match command {
        SpecCmd::Create { id, spec } => {
            let workspace = spec.workspace(String::new());
            let request = pb::CreateWorkspaceRequest {
                workspace_id: id,
                workspace: Some(workspace),
                ..Default::default()
            };
            c.show(registry.create_workspace(request)).await
        }
        SpecCmd::Get { name } => {
            let name = c.names.workspace_arg(name.as_deref())?;
            c.send(pb::GetWorkspaceRequest { name }).await
        }
        SpecCmd::List { paging } => {
            print_all(&c, &paging, pb::ListWorkspacesRequest::default()).await
        }
        SpecCmd::Update { name, spec } => {
            let workspace = spec.workspace(c.names.workspace_arg(name.as_deref())?);
            let request = pb::UpdateWorkspaceRequest {
                workspace: Some(workspace),
                update_mask: spec.mask()?,
                ..Default::default()
            };
            c.show(registry.update_workspace(request)).await
        }
        SpecCmd::Delete { name, force } => {
            let name = c.names.workspace_arg(Some(&name))?;
            let request = pb::DeleteWorkspaceRequest {
                force,
                ..Named::named(name)
            };
            c.delete(request).await
        }
    }
}

pub async fn projects(c: Client, command: SpecCmd) -> Result<(), Failure> {
    let mut registry = c.registry();
    match command {
        SpecCmd::Create { id, spec } => {
            let project = spec.project(String::new());
            let request = pb::CreateProjectRequest::create(c.names.workspace()?, id, project);
            c.show(registry.create_project(request)).await
        }
        SpecCmd::Get { name } => {
            let name = c.names.project_arg(name.as_deref())?;
            c.send(pb::GetProjectRequest { name }).await
        }
        SpecCmd::List { paging } => {
            let request = pb::ListProjectsRequest::under(c.names.workspace()?);
            print_all(&c, &paging, request).await
        }
        SpecCmd::Update { name, spec } => {
            let project = spec.project(c.names.project_arg(name.as_deref())?);
            let request = pb::UpdateProjectRequest {
                project: Some(project),
                update_mask: spec.mask()?,
                ..Default::default()
            };
            c.show(registry.update_project(request)).await
        }
        SpecCmd::Delete { name, force } => {
            let name = c.names.project_arg(Some(&name))?;
            let request = pb::DeleteProjectRequest {
                force,
                ..Named::named(name)
            };
            c.delete(request).await
        }
    }
}

#[derive(ValueEnum, Clone, Copy, Debug)]
pub enum KeyRole {
    Admin,
    Developer,
    Reader,
    Worker,
}

#[derive(Subcommand, Debug)]
pub enum KeysCmd {
    /// Creates an API key in --workspace and prints its secret, which is shown only once.
    Create {
        #[arg(long, value_enum)]
        role: KeyRole,
        #[arg(long, default_value = "")]
        display_name: String,
        /// Expires after this long (e.g. 30d) [default: never]
        #[arg(long)]
        expires_in: Option<String>,
    },
    /// Lists the live keys of --workspace.
    List {
        #[command(flatten)]
        paging: Paging,
    },
    /// Revokes a key at once.
    Delete { name: String },
}

pub async fn keys(c: Client, command: KeysCmd) -> Result<(), Failure> {
    let mut registry = c.registry();
    match command {
        KeysCmd::Create {
            role,
            display_name,
            expires_in,
        } => {
            let role = match role {
                KeyRole::Admin => pb::Role::Admin,
                KeyRole::Developer => pb::Role::Developer,
                KeyRole::Reader => pb::Role::Reader,
                KeyRole::Worker => pb::Role::Worker,
            };
            let expire_time = expires_in
                .map(|d| parse_duration(&d).map(|d| timestamp(now_micros() + d.as_micros() as i64)))
                .transpose()?;
            let request = pb::CreateApiKeyRequest {
                parent: c.names.workspace()?,
                api_key: Some(pb::ApiKey {
                    display_name,
                    role: role as i32,
                    expire_time,
                    ..Default::default()
                }),
                ..Default::default()
            };
            let created = registry.create_api_key(request).await?.into_inner();
            if c.out.format == super::Format::Table {
                c.out
                    .print(created.api_key.as_ref().expect("a created key"))?;
                super::output::write_out(&format!(
                    "\nsecret (shown once; keep it now):\n\n    {}\n",
                    created.secret
                ))
            } else {
                c.out.print(&created)
            }
        }
        KeysCmd::List { paging } => {
            let request = pb::ListApiKeysRequest::under(c.names.workspace()?);
            print_all(&c, &paging, request).await
        }
        KeysCmd::Delete { name } => {
            let name = c.names.in_workspace("apiKeys", &name)?;
            c.delete(pb::DeleteApiKeyRequest::named(name)).await
        }
    }
}
