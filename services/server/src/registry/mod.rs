//! RegistryService: tenancy, agent definitions and instances, one module per resource.

pub(crate) mod agents;
mod api_keys;
mod audit;
pub(crate) mod instances;
mod projects;
mod workspaces;

use agentry_proto::v1::{self as pb, registry_service_server::RegistryService};

use crate::rpc::rpc;

rpc! {
    RegistryService for Registry;
    workspaces::create_workspace(pb::CreateWorkspaceRequest) -> pb::Workspace;
    workspaces::get_workspace(pb::GetWorkspaceRequest) -> pb::Workspace;
    workspaces::list_workspaces(pb::ListWorkspacesRequest) -> pb::ListWorkspacesResponse;
    workspaces::update_workspace(pb::UpdateWorkspaceRequest) -> pb::Workspace;
    workspaces::delete_workspace(pb::DeleteWorkspaceRequest) -> ();
    projects::create_project(pb::CreateProjectRequest) -> pb::Project;
    projects::get_project(pb::GetProjectRequest) -> pb::Project;
    projects::list_projects(pb::ListProjectsRequest) -> pb::ListProjectsResponse;
    projects::update_project(pb::UpdateProjectRequest) -> pb::Project;
    projects::delete_project(pb::DeleteProjectRequest) -> ();
    api_keys::create_api_key(pb::CreateApiKeyRequest) -> pb::CreateApiKeyResponse;
    api_keys::list_api_keys(pb::ListApiKeysRequest) -> pb::ListApiKeysResponse;
    api_keys::delete_api_key(pb::DeleteApiKeyRequest) -> ();
    agents::create_agent(pb::CreateAgentRequest) -> pb::Agent;
    agents::get_agent(pb::GetAgentRequest) -> pb::Agent;
    agents::list_agents(pb::ListAgentsRequest) -> pb::ListAgentsResponse;
    agents::update_agent(pb::UpdateAgentRequest) -> pb::Agent;
    agents::delete_agent(pb::DeleteAgentRequest) -> ();
    agents::list_agent_revisions(pb::ListAgentRevisionsRequest) -> pb::ListAgentRevisionsResponse;
    instances::create_instance(pb::CreateInstanceRequest) -> pb::Instance;
    instances::get_instance(pb::GetInstanceRequest) -> pb::Instance;
    instances::list_instances(pb::ListInstancesRequest) -> pb::ListInstancesResponse;
    instances::update_instance(pb::UpdateInstanceRequest) -> pb::Instance;
    instances::delete_instance(pb::DeleteInstanceRequest) -> pb::Instance;
    instances::set_instance_status(pb::SetInstanceStatusRequest) -> pb::Instance;
    instances::heartbeat_instance(pb::HeartbeatInstanceRequest) -> pb::Instance;
    audit::list_audit_records(pb::ListAuditRecordsRequest) -> pb::ListAuditRecordsResponse;
}
