//! What handlers do with the resource a request names before anything else: parse its
//! name and check that the caller may act in its workspace ([`Principal::authorize`]);
//! for an update, also take the resource and its field mask ([`crate::call::Call::update`]).

use agentry_core::{
    Result,
    names::{
        AgentName, ApiKeyName, ContextName, InstanceName, ProjectName, RunName, SessionName,
        WorkspaceName,
    },
};
use agentry_proto::v1 as pb;
use prost_types::FieldMask;

use crate::auth::{Action, Principal};

/// A resource name: parsed from a request field, and in one workspace.
pub trait ResourceName: Sized {
    fn parse(field: &str, text: &str) -> Result<Self>;
    fn workspace(&self) -> &str;
}

macro_rules! resource_name {
    ($($name:ident),* $(,)?) => {
        $(impl ResourceName for $name {
            fn parse(field: &str, text: &str) -> Result<Self> {
                $name::parse(field, text)
            }
            fn workspace(&self) -> &str {
                &self.workspace
            }
        })*
    };
}

resource_name!(
    WorkspaceName,
    ProjectName,
    ApiKeyName,
    AgentName,
    InstanceName,
    ContextName,
    SessionName,
    RunName,
);

/// A resource name made of its parent's name and an id.
pub trait ChildName: ResourceName {
    type Parent: ResourceName;
    fn child(parent: &Self::Parent, id: String) -> Self;
}

/// `Name in Parent { fields taken from the parent } . id field`.
macro_rules! child_name {
    ($($name:ident in $parent:ident { $($field:ident),* } . $id:ident;)*) => {
        $(impl ChildName for $name {
            type Parent = $parent;
            fn child(parent: &$parent, id: String) -> Self {
                $name {
                    $($field: parent.$field.clone(),)*
                    $id: id,
                }
            }
        })*
    };
}

child_name! {
    ProjectName in WorkspaceName { workspace } . project;
    AgentName in WorkspaceName { workspace } . agent;
    InstanceName in ProjectName { workspace, project } . instance;
    ContextName in ProjectName { workspace, project } . context;
}

/// A create request: the parent it names, and the new resource's id (in its field
/// `ID_FIELD`), which together make the new resource's name.
pub trait CreateRequest {
    const ID_FIELD: &'static str;
    type Name: ChildName + std::fmt::Display;
    fn parent(&self) -> &str;
    fn id(&self) -> &str;
}

/// `Request.id_field -> Name`.
macro_rules! create_request {
    ($($request:ident . $id:ident -> $name:ident),* $(,)?) => {
        $(impl CreateRequest for pb::$request {
            const ID_FIELD: &'static str = stringify!($id);
            type Name = $name;
            fn parent(&self) -> &str {
                &self.parent
            }
            fn id(&self) -> &str {
                &self.$id
            }
        })*
    };
}

create_request!(
    CreateProjectRequest.project_id -> ProjectName,
    CreateAgentRequest.agent_id -> AgentName,
    CreateInstanceRequest.instance_id -> InstanceName,
    CreateContextRequest.context_id -> ContextName,
);

/// An update request: the resource it carries (in its field `FIELD`), with the resource's
/// name, and the update mask, which may name the `UPDATABLE` fields (those of `NESTED` by
/// a sub-path too).
pub trait UpdateRequest {
    const FIELD: &'static str;
    const UPDATABLE: &'static [&'static str];
    const NESTED: &'static [&'static str];
    type Resource;
    type Name: ResourceName;
    fn resource(&self) -> Option<Self::Resource>;
    fn name(resource: &Self::Resource) -> &str;
    fn mask(&self) -> Option<FieldMask>;
}

/// `Request.field: Resource(Name) [updatable fields] nested [fields]`.
macro_rules! update_request {
    ($($request:ident . $field:ident : $resource:ident($name:ident)
        [$($updatable:ident),*] nested [$($nested:ident),*]),* $(,)?) => {
        $(impl UpdateRequest for pb::$request {
            const FIELD: &'static str = stringify!($field);
            const UPDATABLE: &'static [&'static str] = &[$(stringify!($updatable)),*];
            const NESTED: &'static [&'static str] = &[$(stringify!($nested)),*];
            type Resource = pb::$resource;
            type Name = $name;
            fn resource(&self) -> Option<pb::$resource> {
                self.$field.clone()
            }
            fn name(resource: &pb::$resource) -> &str {
                &resource.name
            }
            fn mask(&self) -> Option<FieldMask> {
                self.update_mask.clone()
            }
        })*
    };
}

update_request!(
    UpdateWorkspaceRequest.workspace: Workspace(WorkspaceName)
        [display_name, description, labels, quotas] nested [quotas],
    UpdateProjectRequest.project: Project(ProjectName)
        [display_name, description, labels] nested [],
    UpdateAgentRequest.agent: Agent(AgentName) [
        display_name, description, agent_type, capabilities, tools, config_schema,
        default_config, labels, enabled
    ] nested [],
    UpdateInstanceRequest.instance: Instance(InstanceName)
        [display_name, labels, config, agent_revision, heartbeat_ttl] nested [],
);

impl Principal {
    /// The resource named in request field `field`, in whose workspace the caller may do
    /// `action`.
    pub fn authorize<N: ResourceName>(&self, field: &str, text: &str, action: Action) -> Result<N> {
        let name = N::parse(field, text)?;
        self.check(name.workspace(), action)?;
        Ok(name)
    }
}
