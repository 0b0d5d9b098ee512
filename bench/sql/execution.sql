-- The SQL the server runs for one no-op run, transcribed from a Postgres statement log
-- (log_statement = all) of `agentry-bench execution`: CreateRun, PollTask (the unlocked
-- look, the claim transaction, then the instance read that builds the Task; agent
-- revisions are immutable and cached by the server), AppendRunEvents with 3 message_delta events, and CompleteTask. One pgbench
-- transaction of this script is one whole run, so pgbench's tps is runs/s.
--
-- Differences from the server, all in pgbench's favour or neutral:
-- - values the server binds that are constant for the benchmark (workspace, status names,
--   JSON bodies, '') are literals here; ids, sequences and times are pgbench variables;
-- - the API key lookup is left out (the server caches verified keys; the statement log
--   shows one lookup per key per cache period, not per call);
-- - every time column takes the same value, :now (given with -D by agentry-bench);
-- - the multi-row INSERT casts its variables (the server binds typed parameters);
-- - literals are split after each ':' followed by a letter ('run:' || 'bench:'), which
--   pgbench would otherwise take for a variable, even inside quotes;
-- - the wake-ups for other replicas are left out: the server sends them after commit,
--   from one task, one `pg_notify` for all the changes committed meanwhile.
--
-- Needs, made through the API by agentry-bench before pgbench starts: workspace `bench`
-- (max_concurrent_runs above the pgbench concurrency), project `p`, agent `echo`,
-- instance `echo-1`, and one idle session `pg{client_id}` per pgbench client.
-- Variables given with -D: now (micros since the epoch), developer and worker (API key
-- resource names, for the audit records).
--
-- The claim takes the client's own run (the server's takes the oldest of the agent's):
-- claims no longer take turns, and a claim's statement sees only the runs committed
-- before it started, so with the oldest-first order a client could find every run it
-- sees taken by clients whose own runs it cannot see yet. The statement is otherwise the
-- server's: a free slot and the run, both SKIP LOCKED, and the slot marked held.

\set r random(1, 9000000000000000000)
\set lease :now + 30000000

-- CreateRun (session idle: the run is ready at once and its input joins the transcript)
BEGIN;
SELECT "workspace_id", "project_id", "session_id", "instance_id", "description", "labels", "active_run", "message_count", "create_time", "update_time" FROM "sessions" WHERE "workspace_id" = 'bench' AND "project_id" = 'p' AND "session_id" = 'pg' || :client_id FOR NO KEY UPDATE \gset s_
\set seq :s_message_count + 1
SELECT "workspace_id", "project_id", "instance_id", "display_name", "agent_id", "agent_revision", "config", "effective_config", "status", "status_before_offline", "status_message", "heartbeat_ttl_ms", "last_heartbeat_time", "labels", "etag", "create_time", "update_time" FROM "instances" WHERE "workspace_id" = 'bench' AND "project_id" = 'p' AND "instance_id" = 'echo-1';
INSERT INTO "runs" ("workspace_id", "run_id", "project_id", "session_id", "instance_id", "agent_id", "agent_revision", "status", "stop_reason", "ready", "spec", "attempt", "error", "input_tokens", "output_tokens", "cost_usd", "last_sequence", "cancel_requested", "supersede", "approval", "output", "next_attempt_time", "lease_epoch", "lease_expire_time", "lease_duration", "worker", "create_time", "start_time", "end_time", "update_time", "approval_expire_time", "deadline") VALUES ('bench', 'pgbench-' || :r, 'p', 'pg' || :client_id, 'echo-1', 'echo', 1, 'QUEUED', '', 1, '{"autonomy":0,"timeout":0,"retry_policy":{"initial_interval":1000000,"backoff_coefficient":2.0,"max_interval":100000000,"max_attempts":3,"non_retryable_error_types":[]},"strategy":"Enqueue","input":[{"role":"User","content":"ping"}],"contexts":[],"labels":{},"approval_timeout":86400000000}', 0, '', 0, 0, 0, 1, 0, 0, '', '', :now, 0, NULL, 0, '', :now, NULL, NULL, :now, NULL, NULL);
INSERT INTO "run_events" ("workspace_id", "run_id", "sequence", "attempt", "kind", "body", "create_time") VALUES ('bench', 'pgbench-' || :r, 1, 0, 'status_changed', '{"kind":"status_changed","previous":' || 'null,"status":"Queued","stop_reason":"Unspecified","message":""}', :now);
INSERT INTO "messages" ("workspace_id", "project_id", "session_id", "sequence", "role", "content", "tool_call", "run_id", "superseded", "create_time") VALUES ('bench', 'p', 'pg' || :client_id, :seq, 'USER', 'ping', '', 'pgbench-' || :r, 0, :now);
UPDATE "sessions" SET "active_run" = 'pgbench-' || :r, "message_count" = :seq, "update_time" = :now WHERE "workspace_id" = 'bench' AND "project_id" = 'p' AND "session_id" = 'pg' || :client_id;
INSERT INTO "audit_log" ("workspace_id", "audit_id", "create_time", "principal", "method", "resource", "request_id", "outcome") VALUES ('bench', 'pgbench-create-' || :r, :now, :developer, 'CreateRun', 'workspaces/bench/projects/p/sessions/pg' || :client_id, '', 'OK');
COMMIT;

-- PollTask: an unlocked look, then the claim: a free slot and the run in one statement
SELECT "workspace_id", "run_id", "project_id", "session_id", "instance_id", "agent_id", "agent_revision", "status", "stop_reason", "ready", "spec", "attempt", "error", "input_tokens", "output_tokens", "cost_usd", "last_sequence", "cancel_requested", "supersede", "approval", "output", "next_attempt_time", "lease_epoch", "lease_expire_time", "lease_duration", "worker", "create_time", "start_time", "end_time", "update_time" FROM "runs" WHERE "workspace_id" = 'bench' AND "status" = 'QUEUED' AND "ready" = 1 AND "agent_id" IN ('echo') AND "next_attempt_time" <= :now AND ("deadline" IS NULL OR "deadline" > :now) ORDER BY "next_attempt_time" ASC, "run_id" ASC LIMIT 1;
BEGIN;
WITH slot AS MATERIALIZED (SELECT slot FROM run_slots WHERE workspace_id = 'bench' AND run_id IS NULL ORDER BY slot LIMIT 1 FOR UPDATE SKIP LOCKED), run AS MATERIALIZED (SELECT * FROM runs WHERE workspace_id = 'bench' AND status = 'QUEUED' AND ready = 1 AND agent_id = ANY(ARRAY['echo']) AND next_attempt_time <= :now AND (deadline IS NULL OR deadline > :now) AND run_id = 'pgbench-' || :r AND EXISTS (SELECT 1 FROM slot) ORDER BY next_attempt_time, run_id LIMIT 1 FOR NO KEY UPDATE SKIP LOCKED), held AS (UPDATE run_slots SET run_id = run.run_id FROM slot, run WHERE run_slots.workspace_id = 'bench' AND run_slots.slot = slot.slot) SELECT * FROM run \gset c_
UPDATE "runs" SET "status" = 'RUNNING', "stop_reason" = '', "ready" = 1, "attempt" = 1, "error" = '', "input_tokens" = 0, "output_tokens" = 0, "cost_usd" = 0, "last_sequence" = 2, "cancel_requested" = 0, "supersede" = 0, "approval" = '', "approval_expire_time" = NULL, "output" = '', "next_attempt_time" = :now, "deadline" = NULL, "lease_epoch" = 1, "lease_expire_time" = :lease, "lease_duration" = 30000000, "worker" = 'pgbench', "start_time" = :now, "end_time" = NULL, "update_time" = :now WHERE "workspace_id" = 'bench' AND "run_id" = :c_run_id;
INSERT INTO "run_events" ("workspace_id", "run_id", "sequence", "attempt", "kind", "body", "create_time") VALUES ('bench', :c_run_id, 2, 1, 'status_changed', '{"kind":"status_changed","previous":"Queued","status":"Running","stop_reason":"Unspecified","message":""}', :now);
COMMIT;
SELECT "workspace_id", "project_id", "instance_id", "display_name", "agent_id", "agent_revision", "config", "effective_config", "status", "status_before_offline", "status_message", "heartbeat_ttl_ms", "last_heartbeat_time", "labels", "etag", "create_time", "update_time" FROM "instances" WHERE "workspace_id" = 'bench' AND "project_id" = 'p' AND "instance_id" = 'echo-1';

-- AppendRunEvents: 3 message_delta events
BEGIN;
SELECT "workspace_id", "run_id", "project_id", "session_id", "instance_id", "agent_id", "agent_revision", "status", "stop_reason", "ready", "spec", "attempt", "error", "input_tokens", "output_tokens", "cost_usd", "last_sequence", "cancel_requested", "supersede", "approval", "output", "next_attempt_time", "lease_epoch", "lease_expire_time", "lease_duration", "worker", "create_time", "start_time", "end_time", "update_time" FROM "runs" WHERE "workspace_id" = 'bench' AND "run_id" = :c_run_id FOR NO KEY UPDATE;
UPDATE "runs" SET "status" = 'RUNNING', "stop_reason" = '', "ready" = 1, "attempt" = 1, "error" = '', "input_tokens" = 0, "output_tokens" = 0, "cost_usd" = 0, "last_sequence" = 5, "cancel_requested" = 0, "supersede" = 0, "approval" = '', "approval_expire_time" = NULL, "output" = '', "next_attempt_time" = :now, "deadline" = NULL, "lease_epoch" = 1, "lease_expire_time" = :lease, "lease_duration" = 30000000, "worker" = 'pgbench', "start_time" = :now, "end_time" = NULL, "update_time" = :now WHERE "workspace_id" = 'bench' AND "run_id" = :c_run_id;
INSERT INTO "run_events" ("workspace_id", "run_id", "sequence", "attempt", "kind", "body", "create_time") VALUES ('bench', :c_run_id::text, 3, 1, 'message_delta', '{"kind":"message_delta","message_id":"m0","text":"Hel"}', :now::bigint), ('bench', :c_run_id::text, 4, 1, 'message_delta', '{"kind":"message_delta","message_id":"m0","text":"lo, "}', :now::bigint), ('bench', :c_run_id::text, 5, 1, 'message_delta', '{"kind":"message_delta","message_id":"m0","text":"world"}', :now::bigint);
COMMIT;

-- CompleteTask: close open tool calls (none), hand the session on (nobody waits), end
-- the run; the server writes the session row twice (handoff, then the caller)
BEGIN;
SELECT "workspace_id", "project_id", "session_id", "instance_id", "description", "labels", "active_run", "message_count", "create_time", "update_time" FROM "sessions" WHERE "workspace_id" = 'bench' AND "project_id" = 'p' AND "session_id" = :c_session_id FOR NO KEY UPDATE \gset s_
SELECT "workspace_id", "run_id", "project_id", "session_id", "instance_id", "agent_id", "agent_revision", "status", "stop_reason", "ready", "spec", "attempt", "error", "input_tokens", "output_tokens", "cost_usd", "last_sequence", "cancel_requested", "supersede", "approval", "output", "next_attempt_time", "lease_epoch", "lease_expire_time", "lease_duration", "worker", "create_time", "start_time", "end_time", "update_time" FROM "runs" WHERE "workspace_id" = 'bench' AND "run_id" = :c_run_id FOR NO KEY UPDATE;
SELECT "call_id", "tool" FROM "tool_calls" WHERE "workspace_id" = 'bench' AND "run_id" = :c_run_id AND "open" = 1 ORDER BY "call_id" ASC;
SELECT "workspace_id", "run_id", "project_id", "session_id", "instance_id", "agent_id", "agent_revision", "status", "stop_reason", "ready", "spec", "attempt", "error", "input_tokens", "output_tokens", "cost_usd", "last_sequence", "cancel_requested", "supersede", "approval", "output", "next_attempt_time", "lease_epoch", "lease_expire_time", "lease_duration", "worker", "create_time", "start_time", "end_time", "update_time" FROM "runs" WHERE "workspace_id" = 'bench' AND "project_id" = 'p' AND "session_id" = :c_session_id AND "status" = 'QUEUED' AND "ready" = 0 ORDER BY "create_time" ASC, "run_id" ASC LIMIT 1 FOR NO KEY UPDATE;
UPDATE "sessions" SET "active_run" = '', "message_count" = :s_message_count, "update_time" = :now WHERE "workspace_id" = 'bench' AND "project_id" = 'p' AND "session_id" = :c_session_id;
UPDATE "runs" SET "status" = 'SUCCEEDED', "stop_reason" = 'END_TURN', "ready" = 0, "attempt" = 1, "error" = '', "input_tokens" = 0, "output_tokens" = 0, "cost_usd" = 0, "last_sequence" = 6, "cancel_requested" = 0, "supersede" = 0, "approval" = '', "approval_expire_time" = NULL, "output" = '', "next_attempt_time" = :now, "deadline" = NULL, "lease_epoch" = 1, "lease_expire_time" = NULL, "lease_duration" = 30000000, "worker" = 'pgbench', "start_time" = :now, "end_time" = :now, "update_time" = :now WHERE "workspace_id" = 'bench' AND "run_id" = :c_run_id;
INSERT INTO "run_events" ("workspace_id", "run_id", "sequence", "attempt", "kind", "body", "create_time") VALUES ('bench', :c_run_id, 6, 1, 'status_changed', '{"kind":"status_changed","previous":"Running","status":"Succeeded","stop_reason":"EndTurn","message":""}', :now);
INSERT INTO "audit_log" ("workspace_id", "audit_id", "create_time", "principal", "method", "resource", "request_id", "outcome") VALUES ('bench', 'pgbench-complete-' || :r, :now, :worker, 'CompleteTask', 'workspaces/bench/projects/p/sessions/' || :c_session_id || '/runs/' || :c_run_id, '', 'OK');
COMMIT;
