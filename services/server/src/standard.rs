//! The standard methods whose handlers differ only in their resource: Get, List and
//! Delete (AIP-131, 132, 135). Each is one generic handler ([`get`], [`list`],
//! [`delete`]) over a trait its requests implement; a service describes its requests in
//! one [`standard!`] table (which storage call answers, how its result converts) and
//! names the generic handler in its `rpc!` list through its module
//! (`pub use crate::standard::get as get_project`).

use std::{convert::identity, fmt::Display};

use agentry_core::{
    Result,
    absent::{non_empty, non_empty_str},
    instance::InstanceFilter,
    model::{Agent, ApiKey, Context, Instance, Page, Project},
    names::{
        AgentName, ContextName, InstanceName, ProjectName, RunName, SessionName, WorkspaceName,
    },
    port::{AuditFilter, AuditRecord, Mutation, PageRequest, Storage},
    run::Session,
};
use agentry_proto::{RequestId, v1 as pb};
use futures::future::BoxFuture;
use prost::{Message, Name};

use crate::{
    auth::{Action, Principal},
    call::Call,
    contexts, execution,
    paging::{ListRequest, ListResponse},
    registry::{agents, api_keys, audit, instances, projects, workspaces},
    resource::ResourceName,
};

/// A request about the one resource its `name` names, which the caller must be allowed
/// to `ACTION` (a Get, a Delete, a stream of the resource's changes).
pub trait ByName: Send {
    type Name: ResourceName + Display + Sync;
    const ACTION: Action;
    fn name(&self) -> &str;
}

/// A Get request, or another that answers with the resource it names (a heartbeat);
/// [`Get::read`] answers.
pub trait Get: ByName {
    type Response;
    fn read<'a>(
        store: &'a dyn Storage,
        name: &'a Self::Name,
    ) -> BoxFuture<'a, Result<Self::Response>>;
}

/// Get: the resource the request names.
pub async fn get<R: Get>(ctx: &Call<'_>, req: R) -> Result<R::Response> {
    let name: R::Name = ctx.authorize("name", req.name(), R::ACTION)?;
    R::read(&*ctx.store, &name).await
}

/// A List request: a page of the resources under the parent it names, read by
/// [`List::read`], narrowed by what its filter says ([`List::filter`]).
pub trait List: ListRequest + Name + Send {
    /// What the request's parent field (`PARENT.0`) names; listing needs `PARENT.1`.
    type Parent: ResourceName + Display + Sync;
    type Filter: Sync;
    type Item;
    const PARENT: (&'static str, Action);
    fn parent(&self) -> &str;
    /// The request's filter, `None` for a list that has none.
    fn filter_text(&self) -> Option<&str>;
    fn filter(caller: &Principal, parent: &Self::Parent, text: &str) -> Result<Self::Filter>;
    fn read<'a>(
        store: &'a dyn Storage,
        parent: &'a Self::Parent,
        filter: &'a Self::Filter,
        page: &'a PageRequest,
    ) -> BoxFuture<'a, Result<Page<Self::Item>>>;
    fn convert(item: Self::Item) -> <Self::Response as ListResponse>::Item;
}

/// List: a page of the parent's resources. A page token continues only the list of the
/// same method, parent and filter.
pub async fn list<R: List>(ctx: &Call<'_>, req: R) -> Result<R::Response> {
    let (field, action) = R::PARENT;
    let parent: R::Parent = ctx.authorize(field, req.parent(), action)?;
    let method = crate::request::method_of::<R>();
    let text = req.filter_text();
    let filter = R::filter(&ctx.caller, &parent, text.unwrap_or_default())?;
    let scope = match text {
        Some(text) => format!("{method} {parent} {text}"),
        None => format!("{method} {parent}"),
    };
    let page = ctx.page_of(&scope, &req)?;
    let listed = R::read(&*ctx.store, &parent, &filter, &page).await?;
    Ok(ctx.respond(&scope, listed, R::convert))
}

/// A Delete request: the resource it names, deleted by [`Delete::delete`] (a write).
pub trait Delete: ByName + Message + Name + RequestId {
    type Response;
    fn delete<'a>(
        store: &'a dyn Storage,
        m: &'a Mutation,
        name: &'a Self::Name,
        req: &'a Self,
    ) -> BoxFuture<'a, Result<Self::Response>>;
}

/// Delete: the resource the request names.
pub async fn delete<R: Delete>(ctx: &Call<'_>, req: R) -> Result<R::Response> {
    let name: R::Name = ctx.authorize("name", req.name(), R::ACTION)?;
    let m = ctx.mutation_of(&name, &req)?;
    R::delete(&*ctx.store, &m, &name, &req).await
}

/// A service's Get, List and Delete requests, one a line:
///
/// - `get Request(Name) -> Response = |store, name| call, convert;` (`Request(Name,
///   Action)`: one the caller may call with `Action`, not Read)
/// - `list Request(field: Parent, Action) -> Item = |store, parent, page| call, convert;`
/// - `delete Request(Name, Action) -> Response = |store, m, name, req| call, convert;`
/// - `stream Request(Name);` (a stream of the changes of the resource it names)
///
/// where `call` is the storage call (a future) and `convert` turns what it answers into
/// the response (a list's: each item).
macro_rules! standard {
    () => {};
    (get $alias:ident: $request:ident($name:ty) -> $response:ty = |$s:ident, $n:ident| $read:expr, $convert:expr; $($rest:tt)*) => {
        standard!(get $alias: $request($name, Read) -> $response = |$s, $n| $read, $convert; $($rest)*);
    };
    (get $alias:ident: $request:ident($name:ty, $action:ident) -> $response:ty = |$s:ident, $n:ident| $read:expr, $convert:expr; $($rest:tt)*) => {
        pub use self::get as $alias;
        standard!(@answer Get::read for $request($name, $action) -> $response,
            |$s: dyn agentry_core::port::Storage, $n: $name| $read, $convert);
        standard!($($rest)*);
    };
    (list $alias:ident: $request:ident($field:ident: $parent:ty, $action:ident) -> $item:ty = |$s:ident, $p:ident, $page:ident| $read:expr, $convert:expr; $($rest:tt)*) => {
        pub use self::list as $alias;
        standard!(@list $request($field: $parent, $action) -> $item,
            filter () = |_, _, _| Ok(()), text |_r| None,
            read |$s, $p, _filter, $page| $read, $convert);
        standard!($($rest)*);
    };
    (list $alias:ident: $request:ident($field:ident: $parent:ty, $action:ident) -> $item:ty
        where $filter:ty = |$c:pat_param, $fp:pat_param, $t:pat_param| $parse:expr;
        = |$s:ident, $p:ident, $f:ident, $page:ident| $read:expr, $convert:expr; $($rest:tt)*) => {
        pub use self::list as $alias;
        standard!(@list $request($field: $parent, $action) -> $item,
            filter $filter = |$c, $fp, $t| $parse, text |r| Some(r.filter.as_str()),
            read |$s, $p, $f, $page| $read, $convert);
        standard!($($rest)*);
    };
    (stream $request:ident($name:ty); $($rest:tt)*) => {
        standard!(@by_name $request($name, Read));
        standard!($($rest)*);
    };
    (@answer $trait:ident::$f:ident for $request:ident($name:ty, $action:ident) -> $response:ty,
        |$($p:ident: $t:ty),*| $call:expr, $convert:expr) => {
        standard!(@by_name $request($name, $action));
        impl $crate::standard::$trait for pb::$request {
            type Response = $response;
            fn $f<'a>(
                $($p: &'a $t),*
            ) -> futures::future::BoxFuture<'a, agentry_core::Result<$response>> {
                Box::pin(async move { $call.await.map($convert) })
            }
        }
    };
    (@by_name $request:ident($name:ty, $action:ident)) => {
        impl $crate::standard::ByName for pb::$request {
            type Name = $name;
            const ACTION: $crate::auth::Action = $crate::auth::Action::$action;
            fn name(&self) -> &str {
                &self.name
            }
        }
    };
    (@list $request:ident($field:ident: $parent:ty, $action:ident) -> $item:ty,
        filter $filter:ty = |$c:pat_param, $fp:pat_param, $t:pat_param| $parse:expr, text |$r:ident| $text:expr,
        read |$s:ident, $p:ident, $f:pat_param, $page:ident| $read:expr, $convert:expr) => {
        impl $crate::standard::List for pb::$request {
            type Parent = $parent;
            type Filter = $filter;
            type Item = $item;
            const PARENT: (&'static str, $crate::auth::Action) =
                (stringify!($field), $crate::auth::Action::$action);
            fn parent(&self) -> &str {
                &self.$field
            }
            fn filter_text(&self) -> Option<&str> {
                let $r = self;
                $text
            }
            fn filter($c: &$crate::auth::Principal, $fp: &$parent, $t: &str) -> agentry_core::Result<$filter> {
                $parse
            }
            fn read<'a>(
                $s: &'a dyn agentry_core::port::Storage,
                $p: &'a $parent,
                $f: &'a $filter,
                $page: &'a agentry_core::port::PageRequest,
            ) -> futures::future::BoxFuture<'a, agentry_core::Result<agentry_core::model::Page<$item>>> {
                $read
            }
            fn convert(item: $item) -> <Self::Response as $crate::paging::ListResponse>::Item {
                $convert(item)
            }
        }
    };
    (delete $alias:ident: $request:ident($name:ty, $action:ident) -> $response:ty = |$s:ident, $m:ident, $n:ident, $r:ident| $call:expr, $convert:expr; $($rest:tt)*) => {
        pub use self::delete as $alias;
        standard!(@answer Delete::delete for $request($name, $action) -> $response,
            |$s: dyn agentry_core::port::Storage, $m: agentry_core::port::Mutation, $n: $name,
                $r: Self| $call, $convert);
        standard!($($rest)*);
    };
}

standard! {
    get get_workspace: GetWorkspaceRequest(WorkspaceName) -> pb::Workspace = |s, name| s.get_workspace(&name.workspace), workspaces::to_proto;
    get get_project: GetProjectRequest(ProjectName) -> pb::Project = |s, name| s.get_project(name), projects::to_proto;
    list list_projects: ListProjectsRequest(parent: WorkspaceName, Read) -> Project = |s, parent, page| s.list_projects(&parent.workspace, page), projects::to_proto;
    delete delete_project: DeleteProjectRequest(ProjectName, ManageProjects) -> () = |s, m, name, req| s.delete_project(m, name, &agentry_core::port::DeleteGuard { force: req.force, etag: non_empty(&req.etag) }), identity;
    list list_api_keys: ListApiKeysRequest(parent: WorkspaceName, ManageKeys) -> ApiKey = |s, parent, page| s.list_api_keys(&parent.workspace, page), api_keys::to_proto;
    list list_agents: ListAgentsRequest(parent: WorkspaceName, Read) -> Agent = |s, parent, page| s.list_agents(&parent.workspace, page), agents::to_proto;
    list list_agent_revisions: ListAgentRevisionsRequest(name: AgentName, Read) -> Agent = |s, name, page| s.list_agent_revisions(name, page), agents::to_proto;
    delete delete_agent: DeleteAgentRequest(AgentName, Develop) -> () = |s, m, name, req| s.delete_agent(m, name, &agentry_core::port::DeleteGuard { force: req.force, etag: non_empty(&req.etag) }), identity;
    get get_instance: GetInstanceRequest(InstanceName) -> pb::Instance = |s, name| s.get_instance(name), instances::to_proto;
    list list_instances: ListInstancesRequest(parent: ProjectName, Read) -> Instance
        where InstanceFilter = |_, parent, text| instances::filter(&parent.workspace, text);
        = |s, parent, filter, page| s.list_instances(parent, filter, page), instances::to_proto;
    get heartbeat_instance: HeartbeatInstanceRequest(InstanceName, HeartbeatInstance) -> pb::Instance = |s, name| s.heartbeat_instance(name), instances::to_proto;
    delete delete_instance: DeleteInstanceRequest(InstanceName, Develop) -> pb::Instance = |s, m, name, req| s.delete_instance(m, name, non_empty_str(&req.etag)), instances::to_proto;
    list list_audit_records: ListAuditRecordsRequest(parent: WorkspaceName, ReadAudit) -> AuditRecord
        where AuditFilter = |_, parent, text| audit::audit_filter(parent, text);
        = |s, parent, filter, page| s.list_audit_records(&parent.workspace, filter, page), audit::to_proto;
    stream WatchContextRequest(ContextName);
    get get_context: GetContextRequest(ContextName) -> pb::Context = |s, name| s.get_context(name), contexts::context_to_proto;
    list list_contexts: ListContextsRequest(parent: ProjectName, Read) -> Context
        where Option<String> = |_, parent, text| contexts::owner_filter(parent, text);
        = |s, parent, owner, page| s.list_contexts(parent, owner.as_deref(), page), contexts::context_to_proto;
    delete delete_context: DeleteContextRequest(ContextName, Develop) -> () = |s, m, name, _req| s.delete_context(m, name), identity;
    get get_session: GetSessionRequest(SessionName) -> pb::Session = |s, name| s.get_session(name), execution::session_to_proto;
    list list_sessions: ListSessionsRequest(parent: ProjectName, Read) -> Session
        where Option<String> = |caller, parent, text| execution::instance_filter(caller, parent, text);
        = |s, parent, instance, page| s.list_sessions(parent, instance.as_deref(), page), execution::session_to_proto;
    delete delete_session: DeleteSessionRequest(SessionName, Execute) -> () = |s, m, name, _req| s.delete_session(m, name), identity;
    stream StreamRunEventsRequest(RunName);
    get get_run: GetRunRequest(RunName) -> pb::Run = |s, name| s.get_run(name), execution::run_to_proto;
}
