//! ExecutionService: sessions and transcripts ([`sessions`]), runs on the client side
//! ([`runs`]), the worker protocol ([`worker`]) and the event stream ([`stream`]).

mod convert;
mod runs;
mod sessions;
mod stream;
mod worker;

use std::pin::Pin;

use agentry_proto::v1::{self as pb, execution_service_server::ExecutionService};
use futures::Stream;

use crate::rpc::rpc;

type EventStream =
    Pin<Box<dyn Stream<Item = Result<pb::StreamRunEventsResponse, tonic::Status>> + Send>>;

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
    @extra {
        type StreamRunEventsStream = EventStream;

        async fn stream_run_events(
            &self,
            request: tonic::Request<pb::StreamRunEventsRequest>,
        ) -> Result<tonic::Response<Self::StreamRunEventsStream>, tonic::Status> {
            let principal = crate::auth::principal(&request)?;
            stream::stream_run_events(self.ctx.clone(), &principal, request.into_inner())
                .await
                .map(|stream| tonic::Response::new(Box::pin(stream) as EventStream))
                .map_err(crate::error::to_status)
        }
    }
}
