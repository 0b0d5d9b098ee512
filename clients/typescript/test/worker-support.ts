// Helpers of the Worker tests: an agent of their own per test (so that no worker of
// another test leases its runs), runs started and followed to their end, and a Worker
// that is always stopped.

import {
  type AgentryClient,
  AutonomyLevel,
  type Handler,
  MessageRole,
  MultitaskStrategy,
  type Run,
  type RunEvent,
  type ToolRisk,
  Worker,
  type WorkerOptions,
  streamRunEvents,
} from "@agentry/client";
import type { MessageInitShape } from "@bufbuild/protobuf";
import type { CreateRunRequestSchema } from "@agentry/client";
import type { Tenant, TestServer } from "./harness.js";

export interface TestAgent {
  agent: string;
  instance: string;
  session: string;
}

/** An agent `id` with `tools`, an instance of it and a session. */
export async function makeAgent(
  server: TestServer,
  tenant: Tenant,
  id: string,
  tools: { name: string; risk: ToolRisk }[] = [],
): Promise<TestAgent> {
  const dev = server.client(tenant.developerKey);
  const agent = (await dev.registry.createAgent({ parent: tenant.workspace, agentId: id, agent: { tools } })).name;
  const instance = (
    await dev.registry.createInstance({ parent: tenant.project, instanceId: id, instance: { agent } })
  ).name;
  const session = (await dev.execution.createSession({ parent: tenant.project, session: { instance } })).name;
  return { agent, instance, session };
}

type RunInit = NonNullable<MessageInitShape<typeof CreateRunRequestSchema>["run"]>;

/** Creates a run with one user message (ENQUEUE, so that runs of one session queue up). */
export async function startRun(client: AgentryClient, session: string, text: string, run: RunInit = {}): Promise<Run> {
  return client.execution.createRun({
    parent: session,
    run: {
      input: [{ role: MessageRole.USER, content: text }],
      autonomyLevel: AutonomyLevel.L1,
      multitaskStrategy: MultitaskStrategy.ENQUEUE,
      ...run,
    },
  });
}

/** Every event of the run until it ends, and the run at its end. */
export async function followRun(
  client: AgentryClient,
  name: string,
  timeoutMs = 60_000,
  onEvent?: (event: RunEvent) => void | Promise<void>,
): Promise<{ events: RunEvent[]; run: Run }> {
  const signal = AbortSignal.timeout(timeoutMs);
  const events: RunEvent[] = [];
  for await (const event of streamRunEvents(client, { name, signal })) {
    events.push(event);
    await onEvent?.(event);
  }
  return { events, run: await client.execution.getRun({ name }) };
}

/** One line per event: `kind` or `status:NAME`. */
export function kinds(events: RunEvent[]): string[] {
  return events.map((e) =>
    e.kind.case === "statusChanged" ? `status:${e.kind.value.status}` : String(e.kind.case),
  );
}

/** Runs `worker` for the duration of `body`, then stops it and waits for it. */
export async function withWorker<T>(
  options: WorkerOptions,
  handlers: Record<string, Handler>,
  body: (worker: Worker) => Promise<T>,
): Promise<T> {
  const worker = new Worker({ pollWaitMs: 2_000, ...options });
  for (const [agent, handler] of Object.entries(handlers)) {
    worker.register(agent, handler);
  }
  const running = worker.run();
  let failed: unknown;
  running.catch((err) => (failed = err));
  try {
    const result = await body(worker);
    if (failed !== undefined) throw failed;
    return result;
  } finally {
    await worker.stop();
    await running;
  }
}
