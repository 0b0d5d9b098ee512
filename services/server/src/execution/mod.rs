//! ExecutionService: sessions and transcripts ([`sessions`]), runs on the client side
//! ([`runs`]), the worker protocol ([`worker`]) and the event stream ([`stream`]).

mod convert;
mod runs;
mod sessions;
mod stream;
mod token;
mod worker;

use agentry_proto::v1::{self as pb, execution_service_server::ExecutionService};

use crate::{rpc::rpc, standard};

pub(crate) use convert::{run_to_proto, session_to_proto};
pub(crate) use sessions::instance_filter;

rpc! {
    ExecutionService for Execution;
    sessions::create_session(pb::CreateSessionRequest) -> pb::Session;
    standard::get_session(pb::GetSessionRequest) -> pb::Session;
    standard::list_sessions(pb::ListSessionsRequest) -> pb::ListSessionsResponse;
    standard::delete_session(pb::DeleteSessionRequest) -> ();
    sessions::list_messages(pb::ListMessagesRequest) -> pb::ListMessagesResponse;
    runs::create_run(pb::CreateRunRequest) -> pb::Run;
    standard::get_run(pb::GetRunRequest) -> pb::Run;
    runs::list_runs(pb::ListRunsRequest) -> pb::ListRunsResponse;
    runs::cancel_run(pb::CancelRunRequest) -> pb::Run;
    runs::decide_approval(pb::DecideApprovalRequest) -> pb::Run;
    runs::get_run_stats(pb::GetRunStatsRequest) -> pb::GetRunStatsResponse;
    worker::poll_task(pb::PollTaskRequest) -> pb::PollTaskResponse;
    worker::heartbeat_task(pb::HeartbeatTaskRequest) -> pb::HeartbeatTaskResponse;
    worker::append_run_events(pb::AppendRunEventsRequest) -> pb::AppendRunEventsResponse;
    worker::propose_plan(pb::ProposePlanRequest) -> pb::ProposePlanResponse;
    worker::complete_task(pb::CompleteTaskRequest) -> pb::Run;
    worker::fail_task(pb::FailTaskRequest) -> pb::Run;
    @stream stream::stream_run_events(pb::StreamRunEventsRequest) -> StreamRunEventsStream of pb::StreamRunEventsResponse;
}
