//! Requests that name one resource (Get, Delete, Heartbeat …) and the call that answers
//! each: [`Client::send`] prints the answer, [`Client::delete`] says what it deleted.

use std::future::Future;

use agentry_proto::v1 as pb;
use prost::{Message, Name};
use tonic::{Response, Status};

use super::{Failure, conn::Client};

/// A request naming one resource in its `name` field.
pub trait Named: Default {
    type Response;
    fn name_mut(&mut self) -> &mut String;

    /// The request naming `name`, its other fields at their defaults.
    fn named(name: String) -> Self {
        let mut request = Self::default();
        *request.name_mut() = name;
        request
    }

    fn send(self, c: &Client) -> impl Future<Output = Result<Response<Self::Response>, Status>>;
}

/// `Request => client.method -> Response`: the call that answers a request.
macro_rules! named {
    ($($request:ident => $client:ident.$method:ident -> $response:ty),* $(,)?) => {
        $(impl Named for pb::$request {
            type Response = $response;
            fn name_mut(&mut self) -> &mut String {
                &mut self.name
            }
            async fn send(self, c: &Client) -> Result<Response<$response>, Status> {
                c.$client().$method(self).await
            }
        })*
    };
}

named!(
    GetWorkspaceRequest => registry.get_workspace -> pb::Workspace,
    DeleteWorkspaceRequest => registry.delete_workspace -> (),
    GetProjectRequest => registry.get_project -> pb::Project,
    DeleteProjectRequest => registry.delete_project -> (),
    DeleteApiKeyRequest => registry.delete_api_key -> (),
    GetAgentRequest => registry.get_agent -> pb::Agent,
    DeleteAgentRequest => registry.delete_agent -> (),
    GetInstanceRequest => registry.get_instance -> pb::Instance,
    HeartbeatInstanceRequest => registry.heartbeat_instance -> pb::Instance,
    SetInstanceStatusRequest => registry.set_instance_status -> pb::Instance,
    DeleteInstanceRequest => registry.delete_instance -> pb::Instance,
    GetContextRequest => contexts.get_context -> pb::Context,
    DeleteContextRequest => contexts.delete_context -> (),
    GetSessionRequest => execution.get_session -> pb::Session,
    DeleteSessionRequest => execution.delete_session -> (),
    GetRunRequest => execution.get_run -> pb::Run,
);

/// A create request: the parent, the new resource's id, and the resource.
pub trait Create: Default {
    type Resource;
    fn create(parent: String, id: String, resource: Self::Resource) -> Self;
}

/// `Request.id_field: resource_field(Resource)`.
macro_rules! create {
    ($($request:ident . $id:ident : $field:ident($resource:ident)),* $(,)?) => {
        $(impl Create for pb::$request {
            type Resource = pb::$resource;
            fn create(parent: String, id: String, resource: pb::$resource) -> Self {
                Self {
                    parent,
                    $id: id,
                    $field: Some(resource),
                    ..Default::default()
                }
            }
        })*
    };
}

create!(
    CreateProjectRequest.project_id: project(Project),
    CreateInstanceRequest.instance_id: instance(Instance),
    CreateContextRequest.context_id: context(Context),
    CreateSessionRequest.session_id: session(Session),
);

impl Client {
    /// Sends `request` and prints its answer.
    pub async fn send<R: Named>(&self, request: R) -> Result<(), Failure>
    where
        R::Response: Message + Name,
    {
        self.out.print(&request.send(self).await?.into_inner())
    }

    /// Sends a delete and says what it deleted.
    pub async fn delete<R: Named>(&self, mut request: R) -> Result<(), Failure> {
        let name = request.name_mut().clone();
        request.send(self).await?;
        self.out.empty(&format!("deleted {name}"))
    }
}
