// The page's script: calls Agentry from the browser over gRPC-Web (Connect-Web's
// transport, the generated code of clients/typescript and its error interceptor), each
// step's outcome into the DOM. `#api=…&key=…[&mode=probe]` in the URL says where and as whom.
// The run mode does the whole walk; the probe mode makes one call (from an origin the
// server does not allow) and reports how it failed.

import { fromJson, toJson, type JsonValue } from "@bufbuild/protobuf";
import { ValueSchema, type Value } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError, createClient, type Interceptor } from "@connectrpc/connect";
import { createGrpcWebTransport } from "@connectrpc/connect-web";
import { ContextService } from "../../clients/typescript/src/gen/agentry/v1/context_pb.js";
import { ExecutionService, MessageRole, RunStatus } from "../../clients/typescript/src/gen/agentry/v1/execution_pb.js";
import { RegistryService } from "../../clients/typescript/src/gen/agentry/v1/registry_pb.js";
import { AgentryError, agentryErrorInterceptor } from "../../clients/typescript/src/errors.js";

const params = new URLSearchParams(location.hash.slice(1));
const api = params.get("api") ?? "";
const results: Record<string, unknown> = {};

function record(step: string, value: unknown): void {
  results[step] = value;
  const item = document.createElement("li");
  item.id = `step-${step}`;
  item.textContent = `${step}: ${JSON.stringify(value)}`;
  document.getElementById("steps")?.append(item);
}

function clients(key: string | undefined) {
  const bearer: Interceptor = (next) => (req) => {
    if (key !== undefined) {
      req.header.set("authorization", `Bearer ${key}`);
    }
    return next(req);
  };
  const transport = createGrpcWebTransport({
    baseUrl: api,
    interceptors: [agentryErrorInterceptor, bearer],
    defaultTimeoutMs: 15_000,
  });
  return {
    registry: createClient(RegistryService, transport),
    context: createClient(ContextService, transport),
    execution: createClient(ExecutionService, transport),
  };
}

const value = (json: JsonValue): Value => fromJson(ValueSchema, json);
const json = (v: Value | undefined): JsonValue => (v === undefined ? null : toJson(ValueSchema, v));

/** How a call failed: the code's name, the ErrorInfo reason (decoded by the SDK's interceptor). */
async function failure(call: () => Promise<unknown>): Promise<Record<string, unknown>> {
  try {
    await call();
    return { code: "OK" };
  } catch (err) {
    const e = ConnectError.from(err);
    return {
      code: Code[e.code],
      reason: e instanceof AgentryError ? e.reason : "",
      domain: e instanceof AgentryError ? e.domain : "",
      metadata: e instanceof AgentryError ? e.errorMetadata : {},
      message: e.rawMessage,
    };
  }
}

type Clients = ReturnType<typeof clients>;

/** Workspace, project, agent, instance and session; then a unary read of the workspace. */
async function resources(c: Clients): Promise<{ project: string; session: string }> {
  const workspace = await c.registry.createWorkspace({
    workspaceId: "browser",
    workspace: { displayName: "From Chromium" },
  });
  const project = await c.registry.createProject({ parent: workspace.name, projectId: "web" });
  const agent = await c.registry.createAgent({
    parent: workspace.name,
    agentId: "echo",
    agent: { displayName: "Echo" },
  });
  const instance = await c.registry.createInstance({
    parent: project.name,
    instanceId: "echo-1",
    instance: { agent: agent.name },
  });
  const session = await c.execution.createSession({ parent: project.name, session: { instance: instance.name } });
  record("created", [workspace.name, project.name, agent.name, instance.name, session.name]);
  const got = await c.registry.getWorkspace({ name: workspace.name });
  record("getWorkspace", { name: got.name, displayName: got.displayName });
  return { project: project.name, session: session.name };
}

/** Create, write and read a context; then watch it: the backlog, and a write made after it arrived. */
async function contexts(c: Clients, project: string): Promise<void> {
  const ctx = await c.context.createContext({ parent: project, contextId: "notes", data: value({ todo: ["docs"] }) });
  const written = await c.context.writeContext({
    name: ctx.name,
    change: { case: "mergePatch", value: value({ done: true }) },
    expectedVersion: 1n,
  });
  record("writeContext", { version: Number(written.version?.version) });
  const read = await c.context.readContext({ name: ctx.name });
  record("readContext", { version: Number(read.version), data: json(read.data) });

  const seen: { version: number; data: JsonValue }[] = [];
  for await (const res of c.context.watchContext({ name: ctx.name }, { signal: AbortSignal.timeout(15_000) })) {
    const v = res.version;
    seen.push({ version: Number(v?.version), data: json(v?.data) });
    if (v?.version === 2n) {
      // The stream is open and has delivered its backlog: this write happens after.
      await c.context.writeContext({ name: ctx.name, change: { case: "mergePatch", value: value({ live: true }) } });
    }
    if (v?.version === 3n) {
      break;
    }
  }
  record("watchContext", seen);
}

/** A run, its event stream, and a cancel made while the stream is open: the stream ends with it. */
async function runEvents(c: Clients, session: string): Promise<void> {
  const run = await c.execution.createRun({
    parent: session,
    run: { input: [{ role: MessageRole.USER, content: "hello from the browser" }] },
  });
  const statuses: string[] = [];
  for await (const res of c.execution.streamRunEvents({ name: run.name }, { signal: AbortSignal.timeout(15_000) })) {
    const kind = res.event?.kind;
    if (kind?.case !== "statusChanged") {
      continue;
    }
    statuses.push(RunStatus[kind.value.status]);
    if (kind.value.status === RunStatus.QUEUED) {
      await c.execution.cancelRun({ name: run.name });
    }
  }
  record("streamRunEvents", statuses);
}

async function runAll(): Promise<void> {
  const root = clients(params.get("key") ?? undefined);
  const { project, session } = await resources(root);
  await contexts(root, project);
  await runEvents(root, session);
  record("notFound", await failure(() => root.registry.getWorkspace({ name: "workspaces/missing" })));
  const missing = `${project}/contexts/missing`;
  record("streamNotFound", await failure(async () => {
    for await (const _ of root.context.watchContext({ name: missing })) {
      // (none: the stream fails first)
    }
  }));
  record("noKey", await failure(() => clients(undefined).registry.listWorkspaces({})));
}

async function probe(): Promise<void> {
  const c = clients(params.get("key") ?? undefined);
  record("probe", await failure(() => c.registry.createWorkspace({ workspaceId: "wrong-origin" })));
}

async function main(): Promise<void> {
  try {
    await (params.get("mode") === "probe" ? probe() : runAll());
    document.body.dataset.state = "done";
  } catch (err) {
    record("error", String(err));
    document.body.dataset.state = "failed";
  }
  document.getElementById("result")!.textContent = JSON.stringify(results);
}

void main();
