//! ExecutionService: sessions and transcripts ([`sessions`]), runs on the client side
//! ([`runs`]), the worker protocol ([`worker`]) and the event stream ([`stream`]).

mod convert;
mod runs;
mod sessions;
mod stream;
mod worker;

use agentry_proto::v1::{self as pb, execution_service_server::ExecutionService};

use crate::rpc::rpc;

rpc! {
    ExecutionService for Execution;
    sessions::create_session(pb::CreateSessionRequest) -> pb::Session;
    sessions::get_session(pb::GetSessionRequest) -> pb::Session;
    sessions::list_sessions(pb::ListSessionsRequest) -> pb::ListSessionsResponse;
    sessions::delete_session(pb::DeleteSessionRequest) -> ();
    sessions::list_messages(pb::ListMessagesRequest) -> pb::ListMessagesResponse;
    runs::create_run(pb::CreateRunRequest) -> pb::Run;
    runs::get_run(pb::GetRunRequest) -> pb::Run;
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
