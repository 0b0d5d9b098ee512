//! Request builders: one short constructor per request the tests send, plus chainable
//! setters for the optional parts (`request_id`, `etag`, `force`, paging), so a test line
//! says what it asks rather than how the prost struct is spelled.

use tonic::{Response, Status};

use crate::pb;

/// `Result<Response<T>, Status>` → `T`, panicking with the status on failure.
pub trait Must<T> {
    fn must(self) -> T;
    fn inner(self) -> Result<T, Status>;
}

impl<T> Must<T> for Result<Response<T>, Status> {
    #[track_caller]
    fn must(self) -> T {
        match self {
            Ok(response) => response.into_inner(),
            Err(status) => panic!("the call failed: {status:?}"),
        }
    }

    fn inner(self) -> Result<T, Status> {
        self.map(Response::into_inner)
    }
}

pub trait WithRequestId {
    fn request_id(self, request_id: &str) -> Self;
}

pub trait WithEtag {
    fn etag(self, etag: &str) -> Self;
}

pub trait WithForce {
    fn force(self) -> Self;
}

pub trait Paged {
    fn page(self, page_size: i32, page_token: &str) -> Self;
}

macro_rules! impl_with {
    ($trait:ident, fn $method:ident $params:tt $body:block for $($request:ident),+ $(,)?) => {
        $(impl $trait for pb::$request {
            fn $method $params -> Self $body
        })+
    };
}

impl_with!(WithRequestId, fn request_id(mut self, id: &str) { self.request_id = id.into(); self } for
    CreateWorkspaceRequest, UpdateWorkspaceRequest, DeleteWorkspaceRequest, CreateProjectRequest,
    UpdateProjectRequest, DeleteProjectRequest, CreateApiKeyRequest, DeleteApiKeyRequest,
    CreateAgentRequest, UpdateAgentRequest, DeleteAgentRequest, CreateInstanceRequest,
    UpdateInstanceRequest, DeleteInstanceRequest, SetInstanceStatusRequest);
impl_with!(WithEtag, fn etag(mut self, etag: &str) { self.etag = etag.into(); self } for
    DeleteWorkspaceRequest, DeleteProjectRequest, DeleteAgentRequest, DeleteInstanceRequest,
    SetInstanceStatusRequest);
impl_with!(WithForce, fn force(mut self) { self.force = true; self } for
    DeleteWorkspaceRequest, DeleteProjectRequest, DeleteAgentRequest);

macro_rules! impl_paged {
    ($($request:ident),+) => {
        $(impl Paged for pb::$request {
            fn page(mut self, page_size: i32, page_token: &str) -> Self {
                self.page_size = page_size;
                self.page_token = page_token.into();
                self
            }
        })+
    };
}

impl_paged!(
    ListWorkspacesRequest,
    ListProjectsRequest,
    ListApiKeysRequest,
    ListAgentsRequest,
    ListAgentRevisionsRequest,
    ListInstancesRequest,
    ListAuditRecordsRequest
);

fn mask(paths: &[&str]) -> Option<prost_types::FieldMask> {
    Some(prost_types::FieldMask {
        paths: paths.iter().map(|p| (*p).to_owned()).collect(),
    })
}

// ---- workspaces ----

pub fn create_workspace(id: &str, workspace: pb::Workspace) -> pb::CreateWorkspaceRequest {
    pb::CreateWorkspaceRequest {
        workspace_id: id.into(),
        workspace: Some(workspace),
        ..Default::default()
    }
}

pub fn get_workspace(name: &str) -> pb::GetWorkspaceRequest {
    pb::GetWorkspaceRequest { name: name.into() }
}

pub fn list_workspaces() -> pb::ListWorkspacesRequest {
    pb::ListWorkspacesRequest::default()
}

pub fn update_workspace(workspace: pb::Workspace, paths: &[&str]) -> pb::UpdateWorkspaceRequest {
    pb::UpdateWorkspaceRequest {
        workspace: Some(workspace),
        update_mask: mask(paths),
        ..Default::default()
    }
}

pub fn delete_workspace(name: &str) -> pb::DeleteWorkspaceRequest {
    pb::DeleteWorkspaceRequest {
        name: name.into(),
        ..Default::default()
    }
}

// ---- projects ----

pub fn create_project(parent: &str, id: &str) -> pb::CreateProjectRequest {
    create_project_with(parent, id, pb::Project::default())
}

pub fn create_project_with(
    parent: &str,
    id: &str,
    project: pb::Project,
) -> pb::CreateProjectRequest {
    pb::CreateProjectRequest {
        parent: parent.into(),
        project_id: id.into(),
        project: Some(project),
        ..Default::default()
    }
}

pub fn get_project(name: &str) -> pb::GetProjectRequest {
    pb::GetProjectRequest { name: name.into() }
}

pub fn list_projects(parent: &str) -> pb::ListProjectsRequest {
    pb::ListProjectsRequest {
        parent: parent.into(),
        ..Default::default()
    }
}

pub fn update_project(project: pb::Project, paths: &[&str]) -> pb::UpdateProjectRequest {
    pb::UpdateProjectRequest {
        project: Some(project),
        update_mask: mask(paths),
        ..Default::default()
    }
}

pub fn delete_project(name: &str) -> pb::DeleteProjectRequest {
    pb::DeleteProjectRequest {
        name: name.into(),
        ..Default::default()
    }
}

// ---- audit ----

pub fn list_audit_records(parent: &str, filter: &str) -> pb::ListAuditRecordsRequest {
    pb::ListAuditRecordsRequest {
        parent: parent.into(),
        filter: filter.into(),
        ..Default::default()
    }
}

// ---- API keys ----

pub fn create_api_key(parent: &str, role: i32) -> pb::CreateApiKeyRequest {
    let api_key = pb::ApiKey {
        display_name: "test key".into(),
        role,
        ..Default::default()
    };
    pb::CreateApiKeyRequest {
        parent: parent.into(),
        api_key: Some(api_key),
        ..Default::default()
    }
}

pub fn list_api_keys(parent: &str) -> pb::ListApiKeysRequest {
    pb::ListApiKeysRequest {
        parent: parent.into(),
        ..Default::default()
    }
}

pub fn delete_api_key(name: &str) -> pb::DeleteApiKeyRequest {
    pb::DeleteApiKeyRequest {
        name: name.into(),
        ..Default::default()
    }
}

// ---- agents ----

pub fn create_agent(parent: &str, id: &str, agent: pb::Agent) -> pb::CreateAgentRequest {
    pb::CreateAgentRequest {
        parent: parent.into(),
        agent_id: id.into(),
        agent: Some(agent),
        ..Default::default()
    }
}

pub fn get_agent(name: &str, revision: i64) -> pb::GetAgentRequest {
    pb::GetAgentRequest {
        name: name.into(),
        revision,
    }
}

pub fn list_agents(parent: &str) -> pb::ListAgentsRequest {
    pb::ListAgentsRequest {
        parent: parent.into(),
        ..Default::default()
    }
}

pub fn list_agent_revisions(name: &str) -> pb::ListAgentRevisionsRequest {
    pb::ListAgentRevisionsRequest {
        name: name.into(),
        ..Default::default()
    }
}

pub fn update_agent(agent: pb::Agent, paths: &[&str]) -> pb::UpdateAgentRequest {
    pb::UpdateAgentRequest {
        agent: Some(agent),
        update_mask: mask(paths),
        ..Default::default()
    }
}

pub fn delete_agent(name: &str) -> pb::DeleteAgentRequest {
    pb::DeleteAgentRequest {
        name: name.into(),
        ..Default::default()
    }
}

// ---- instances ----

pub fn create_instance(
    parent: &str,
    id: &str,
    instance: pb::Instance,
) -> pb::CreateInstanceRequest {
    pb::CreateInstanceRequest {
        parent: parent.into(),
        instance_id: id.into(),
        instance: Some(instance),
        ..Default::default()
    }
}

pub fn get_instance(name: &str) -> pb::GetInstanceRequest {
    pb::GetInstanceRequest { name: name.into() }
}

pub fn list_instances(parent: &str) -> pb::ListInstancesRequest {
    pb::ListInstancesRequest {
        parent: parent.into(),
        ..Default::default()
    }
}

pub fn update_instance(instance: pb::Instance, paths: &[&str]) -> pb::UpdateInstanceRequest {
    pb::UpdateInstanceRequest {
        instance: Some(instance),
        update_mask: mask(paths),
        ..Default::default()
    }
}

pub fn delete_instance(name: &str) -> pb::DeleteInstanceRequest {
    pb::DeleteInstanceRequest {
        name: name.into(),
        ..Default::default()
    }
}

pub fn set_status(name: &str, status: pb::InstanceStatus) -> pb::SetInstanceStatusRequest {
    set_raw_status(name, status as i32)
}

pub fn set_raw_status(name: &str, status: i32) -> pb::SetInstanceStatusRequest {
    pb::SetInstanceStatusRequest {
        name: name.into(),
        status,
        ..Default::default()
    }
}

pub fn heartbeat(name: &str) -> pb::HeartbeatInstanceRequest {
    pb::HeartbeatInstanceRequest { name: name.into() }
}
