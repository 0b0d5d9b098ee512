//! RegistryService: tenancy, agent definitions and instances, one module per resource.

pub(crate) mod agents;
pub(crate) mod api_keys;
pub(crate) mod audit;
pub(crate) mod instances;
pub(crate) mod projects;
pub(crate) mod workspaces;

use agentry_proto::v1::{self as pb, registry_service_server::RegistryService};

use crate::{rpc::rpc, standard};

rpc! {
    RegistryService for Registry;
    agents::create_agent(pb::CreateAgentRequest) -> pb::Agent;
    api_keys::create_api_key(pb::CreateApiKeyRequest) -> pb::CreateApiKeyResponse;
    instances::create_instance(pb::CreateInstanceRequest) -> pb::Instance;
    projects::create_project(pb::CreateProjectRequest) -> pb::Project;
    workspaces::create_workspace(pb::CreateWorkspaceRequest) -> pb::Workspace;
    standard::delete_agent(pb::DeleteAgentRequest) -> ();
    api_keys::delete_api_key(pb::DeleteApiKeyRequest) -> ();
    standard::delete_instance(pb::DeleteInstanceRequest) -> pb::Instance;
    standard::delete_project(pb::DeleteProjectRequest) -> ();
    workspaces::delete_workspace(pb::DeleteWorkspaceRequest) -> ();
    agents::get_agent(pb::GetAgentRequest) -> pb::Agent;
    standard::get_instance(pb::GetInstanceRequest) -> pb::Instance;
    standard::get_project(pb::GetProjectRequest) -> pb::Project;
    standard::get_workspace(pb::GetWorkspaceRequest) -> pb::Workspace;
    standard::heartbeat_instance(pb::HeartbeatInstanceRequest) -> pb::Instance;
    standard::list_agent_revisions(pb::ListAgentRevisionsRequest) -> pb::ListAgentRevisionsResponse;
    standard::list_agents(pb::ListAgentsRequest) -> pb::ListAgentsResponse;
    standard::list_api_keys(pb::ListApiKeysRequest) -> pb::ListApiKeysResponse;
    standard::list_audit_records(pb::ListAuditRecordsRequest) -> pb::ListAuditRecordsResponse;
    standard::list_instances(pb::ListInstancesRequest) -> pb::ListInstancesResponse;
    standard::list_projects(pb::ListProjectsRequest) -> pb::ListProjectsResponse;
    workspaces::list_workspaces(pb::ListWorkspacesRequest) -> pb::ListWorkspacesResponse;
    instances::set_instance_status(pb::SetInstanceStatusRequest) -> pb::Instance;
    agents::update_agent(pb::UpdateAgentRequest) -> pb::Agent;
    instances::update_instance(pb::UpdateInstanceRequest) -> pb::Instance;
    projects::update_project(pb::UpdateProjectRequest) -> pb::Project;
    workspaces::update_workspace(pb::UpdateWorkspaceRequest) -> pb::Workspace;
}
