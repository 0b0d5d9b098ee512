// streamRunEvents against a real server: the test plays the worker (PollTask →
// AppendRunEvents → CompleteTask) while the iterator reads the run's log.

import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import {
  type AgentryClient,
  MessageRole,
  OutOfRangeError,
  NotFoundError,
  type Run,
  type RunEvent,
  RunStatus,
  StaleTaskError,
  isTerminalEvent,
  streamRunEvents,
  createAgentryClient,
  Code,
  CanceledError,
} from "@agentry/client";
import {
  bootstrapTenant,
  pollTask,
  startProxy,
  startServer,
  type Tenant,
  type TestServer,
} from "./harness.js";

let server: TestServer;
let tenant: Tenant;
let dev: AgentryClient;
let worker: AgentryClient;

before(async () => {
  server = await startServer();
  tenant = await bootstrapTenant(server, "ts-stream");
  dev = server.client(tenant.developerKey);
  worker = server.client(tenant.workerKey);
});

after(async () => {
  await server?.stop();
});

async function newRun(sessionId: string, text: string): Promise<Run> {
  const session = await dev.execution.createSession({
    parent: tenant.project,
    sessionId,
    session: { instance: tenant.instance },
  });
  return dev.execution.createRun({
    parent: session.name,
    run: { input: [{ role: MessageRole.USER, content: text }] },
  });
}

async function collect(events: AsyncIterable<RunEvent>): Promise<RunEvent[]> {
  const out: RunEvent[] = [];
  for await (const event of events) {
    out.push(event);
  }
  return out;
}

function describeEvent(e: RunEvent): string {
  switch (e.kind.case) {
    case "statusChanged":
      return `${e.sequence}:status:${RunStatus[e.kind.value.status]}`;
    case "messageDelta":
      return `${e.sequence}:delta:${e.kind.value.text}`;
    default:
      return `${e.sequence}:${e.kind.case}`;
  }
}

const delay = (ms: number) => new Promise((ok) => setTimeout(ok, ms));

describe("streamRunEvents", () => {
  let fullLog: string[] = [];
  let runName = "";

  test("reads a run live to its terminal event while a worker executes it", async () => {
    const run = await newRun("streamed", "say hello");
    runName = run.name;
    assert.equal(run.status, RunStatus.QUEUED);

    const reading = collect(streamRunEvents(dev, { name: run.name }));

    const task = await pollTask(worker, tenant);
    assert.equal(task.run?.name, run.name);
    for (const text of ["Hel", "lo, ", "world"]) {
      const appended = await worker.execution.appendRunEvents({
        taskToken: task.taskToken,
        events: [{ kind: { case: "messageDelta", value: { messageId: "m1", text } } }],
      });
      assert.equal(appended.cancelRequested, false);
      await delay(20);
    }
    const done = await worker.execution.completeTask({
      taskToken: task.taskToken,
      output: [{ role: MessageRole.ASSISTANT, content: "Hello, world" }],
    });
    assert.equal(done.status, RunStatus.SUCCEEDED);

    const events = await reading;
    fullLog = events.map(describeEvent);
    assert.deepEqual(fullLog, [
      "1:status:QUEUED",
      "2:status:RUNNING",
      "3:delta:Hel",
      "4:delta:lo, ",
      "5:delta:world",
      "6:messageCompleted",
      "7:status:SUCCEEDED",
    ]);
    const last = events.at(-1)!;
    assert.ok(isTerminalEvent(last));
    assert.equal(last.sequence, done.lastSequence);
    const completed = events[5]!;
    assert.equal(completed.kind.case, "messageCompleted");
    if (completed.kind.case === "messageCompleted") {
      assert.equal(completed.kind.value.message?.content, "Hello, world");
      assert.equal(completed.kind.value.message?.role, MessageRole.ASSISTANT);
    }

    // The worker's token is spent once the run finished.
    await assert.rejects(
      worker.execution.appendRunEvents({
        taskToken: task.taskToken,
        events: [{ kind: { case: "messageDelta", value: { messageId: "m1", text: "late" } } }],
      }),
      (err) => err instanceof StaleTaskError && err.reason === "STALE_TASK",
    );
  });

  test("resumes from a middle sequence of a finished run", async () => {
    assert.notEqual(runName, "", "needs the previous test's run");
    const tail = await collect(streamRunEvents(dev, { name: runName, afterSequence: 3n }));
    assert.deepEqual(tail.map(describeEvent), fullLog.slice(3));
  });

  test("ends at once when resumed after the terminal event", async () => {
    const none = await collect(streamRunEvents(dev, { name: runName, afterSequence: 7n }));
    assert.deepEqual(none, []);
  });

  test("after_sequence beyond the log is OutOfRangeError; an unknown run NotFoundError", async () => {
    await assert.rejects(collect(streamRunEvents(dev, { name: runName, afterSequence: 99n })), OutOfRangeError);
    await assert.rejects(
      collect(streamRunEvents(dev, { name: `${tenant.project}/sessions/streamed/runs/0190f0e0-0000-7000-8000-000000000000` })),
      NotFoundError,
    );
  });

  test("resumes after a dropped connection without losing or repeating events", async (t) => {
    const proxy = await startProxy(server.port);
    const viaProxy = createAgentryClient({ baseUrl: proxy.baseUrl, apiKey: tenant.developerKey });
    try {
      const run = await newRun("dropped", "count");
      const reconnects: string[] = [];
      const seen: RunEvent[] = [];
      let dropped = false;
      const task = await pollTask(worker, tenant);
      assert.equal(task.run?.name, run.name);

      const reading = (async () => {
        for await (const event of streamRunEvents(viaProxy, {
          name: run.name,
          reconnectDelayMs: 50,
          onReconnect: ({ error, afterSequence }) => reconnects.push(`${Code[error.code]}@${afterSequence}`),
        })) {
          seen.push(event);
          if (event.sequence === 3n && !dropped) {
            dropped = true;
            assert.ok(proxy.dropConnections() > 0, "the stream went through the proxy");
          }
        }
      })();

      for (let i = 0; i < 6; i++) {
        await worker.execution.appendRunEvents({
          taskToken: task.taskToken,
          events: [{ kind: { case: "messageDelta", value: { messageId: "m", text: `${i}` } } }],
        });
        await delay(50);
      }
      await worker.execution.completeTask({ taskToken: task.taskToken, output: [] });
      await reading;

      t.diagnostic(`reconnects: ${reconnects.join(", ")}`);
      assert.ok(dropped, "the connection was dropped mid-stream");
      assert.ok(reconnects.length >= 1, "the iterator reconnected");
      assert.deepEqual(
        seen.map((e) => e.sequence),
        Array.from({ length: seen.length }, (_, i) => BigInt(i + 1)),
        "gapless, in order, no repeats",
      );
      assert.deepEqual(seen.map(describeEvent), [
        "1:status:QUEUED",
        "2:status:RUNNING",
        "3:delta:0",
        "4:delta:1",
        "5:delta:2",
        "6:delta:3",
        "7:delta:4",
        "8:delta:5",
        "9:status:SUCCEEDED",
      ]);
    } finally {
      viaProxy.close();
      await proxy.close();
    }
  });

  test("resumes across a server restart (the log and the lease live in the database)", async (t) => {
    const run = await newRun("restarted", "survive");
    const task = await pollTask(worker, tenant);
    assert.equal(task.run?.name, run.name);
    await worker.execution.appendRunEvents({
      taskToken: task.taskToken,
      events: [{ kind: { case: "messageDelta", value: { messageId: "m", text: "before" } } }],
    });

    const reconnects: string[] = [];
    const seen: string[] = [];
    let sawBefore!: () => void;
    const before = new Promise<void>((ok) => (sawBefore = ok));
    const reading = (async () => {
      for await (const event of streamRunEvents(dev, {
        name: run.name,
        reconnectDelayMs: 50,
        maxReconnects: 30,
        onReconnect: ({ error, afterSequence }) => reconnects.push(`${Code[error.code]}@${afterSequence}`),
      })) {
        seen.push(describeEvent(event));
        if (event.sequence === 3n) {
          sawBefore();
        }
      }
    })();
    await before;
    const { stopMs } = await server.restart();
    await worker.execution.appendRunEvents({
      taskToken: task.taskToken,
      events: [{ kind: { case: "messageDelta", value: { messageId: "m", text: "after" } } }],
    });
    await worker.execution.completeTask({ taskToken: task.taskToken, output: [] });
    await reading;

    t.diagnostic(`reconnects: ${reconnects.join(", ")}; the server stopped in ${stopMs} ms`);
    assert.ok(reconnects.length >= 1, "the iterator reconnected");
    assert.deepEqual(seen, [
      "1:status:QUEUED",
      "2:status:RUNNING",
      "3:delta:before",
      "4:delta:after",
      "5:status:SUCCEEDED",
    ]);
    // A graceful shutdown should not wait out its grace period on an open event stream.
    assert.ok(stopMs < 5_000, `the server took ${stopMs} ms to stop with a stream open`);
  });

  test("breaking out of the loop early cancels the stream", async () => {
    const run = await newRun("early-exit", "wait");
    const first: RunEvent[] = [];
    for await (const event of streamRunEvents(dev, { name: run.name })) {
      first.push(event);
      break;
    }
    assert.equal(first.length, 1);
    const cancelled = await dev.execution.cancelRun({ name: run.name, reason: "test done" });
    assert.equal(cancelled.status, RunStatus.CANCELLED);
  });

  test("an AbortSignal stops the iteration", async () => {
    const run = await newRun("aborted", "wait");
    const controller = new AbortController();
    const events: RunEvent[] = [];
    const reading = (async () => {
      for await (const event of streamRunEvents(dev, { name: run.name, signal: controller.signal })) {
        events.push(event);
        controller.abort(new Error("enough"));
      }
    })();
    await assert.rejects(reading, (err) => err instanceof CanceledError && err.rawMessage === "enough");
    assert.equal(events.length, 1);
    await dev.execution.cancelRun({ name: run.name });
  });
});
