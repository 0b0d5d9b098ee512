// The Worker against a real `agentry serve`: steps to events and output, a cancel, plans
// (auto-approved and decided by a human), failures with and without retry, the
// concurrency limit, a graceful stop, and a worker process killed mid-run.

import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { createInterface } from "node:readline";
import { setTimeout as sleep } from "node:timers/promises";
import { after, before, describe, test } from "node:test";
import {
  ApprovalDecision,
  RetryableError,
  RunCancelledError,
  RunStatus,
  type Step,
  StopReason,
  type TaskContext,
  ToolRisk,
  UnauthenticatedError,
  Worker,
  custom,
  fromJsonValue,
  message,
  textDelta,
  toolCall,
  toolResult,
  usage,
} from "@agentry/client";
import { bootstrapTenant, packageDir, startServer, type Tenant, type TestServer } from "./harness.js";
import { followRun, kinds, makeAgent, startRun, withWorker } from "./worker-support.js";

let server: TestServer;
let tenant: Tenant;

before(async () => {
  server = await startServer();
  tenant = await bootstrapTenant(server, "ts-worker");
});

after(async () => {
  await server?.stop();
});

const S = RunStatus;

describe("Worker", () => {
  test("a handler's steps become events, its trailing message the output", async () => {
    const { agent, session } = await makeAgent(server, tenant, "steps", [{ name: "search", risk: ToolRisk.READ_ONLY }]);
    const dev = server.client(tenant.developerKey);
    const seen: { input: string; attempt: number }[] = [];
    const finished = await withWorker({ baseUrl: server.baseUrl, apiKey: tenant.workerKey }, {
      [agent]: async function* (task: TaskContext) {
        seen.push({ input: task.input[0]!.content, attempt: task.attempt });
        yield textDelta("Look");
        yield textDelta("ing");
        yield toolCall("c1", "search", { q: "rust" });
        yield toolResult("c1", { hits: 3 });
        yield custom("progress", { done: 0.5 });
        yield message("Found 3.");
        yield usage({ inputTokens: 10, outputTokens: 5, costUsd: 0.25 });
      },
    }, async () => followRun(dev, (await startRun(dev, session, "find rust")).name));

    assert.deepEqual(seen, [{ input: "find rust", attempt: 1 }]);
    assert.deepEqual(kinds(finished.events), [
      `status:${S.QUEUED}`,
      `status:${S.RUNNING}`,
      "messageDelta",
      "messageDelta",
      "toolCallStarted",
      "toolCallCompleted",
      "custom",
      "usage",
      "messageCompleted",
      `status:${S.SUCCEEDED}`,
    ]);
    const run = finished.run;
    assert.equal(run.status, S.SUCCEEDED);
    assert.deepEqual(run.output.map((m) => m.content), ["Found 3."]);
    assert.equal(run.usage?.inputTokens, 10n);
    assert.equal(run.usage?.costUsd, 0.25);
    const started = finished.events.find((e) => e.kind.case === "toolCallStarted");
    assert.deepEqual(
      started?.kind.case === "toolCallStarted" ? fromJsonValue(started.kind.value.toolCall?.arguments) : null,
      { q: "rust" },
    );
    const deltas = finished.events.flatMap((e) => (e.kind.case === "messageDelta" ? [e.kind.value.messageId] : []));
    assert.deepEqual(deltas, ["a1-m0", "a1-m0"]);
  });

  for (const honours of [true, false]) {
    test(`a cancel aborts task.signal and ends the run CANCELLED (handler ${honours ? "honours" : "ignores"} the signal)`, async () => {
      const { agent, session } = await makeAgent(server, tenant, honours ? "cancel-signal" : "cancel-deaf");
      const dev = server.client(tenant.developerKey);
      let reason: unknown;
      const finished = await withWorker({ baseUrl: server.baseUrl, apiKey: tenant.workerKey }, {
        [agent]: async function* (task: TaskContext) {
          task.signal.addEventListener("abort", () => (reason = task.signal.reason));
          yield textDelta("working");
          // A handler either passes the signal on, or is stopped at its next yield.
          await sleep(60_000, undefined, honours ? { signal: task.signal } : { ref: false });
          yield message("never");
        },
      }, async () => {
        const run = await startRun(dev, session, "wait");
        const started = Date.now();
        const result = await followRun(dev, run.name, 30_000, async (e) => {
          if (e.kind.case === "messageDelta") await dev.execution.cancelRun({ name: run.name });
        });
        return { ...result, ms: Date.now() - started };
      });
      assert.equal(finished.run.status, S.CANCELLED);
      assert.ok(reason instanceof RunCancelledError, `abort reason ${String(reason)}`);
      assert.ok(finished.ms < 10_000, `took ${finished.ms} ms`);
      assert.ok(!kinds(finished.events).includes("messageCompleted"));
    });
  }

  test("proposePlan returns at once when autonomy approves, else the run waits for a human", async () => {
    const { agent, session } = await makeAgent(server, tenant, "planner", [
      { name: "search", risk: ToolRisk.READ_ONLY },
      { name: "publish", risk: ToolRisk.WRITE },
    ]);
    const dev = server.client(tenant.developerKey);
    const answers: boolean[] = [];
    const resumed: (ApprovalDecision | undefined)[] = [];
    const finished = await withWorker({ baseUrl: server.baseUrl, apiKey: tenant.workerKey }, {
      [agent]: async function* (task: TaskContext) {
        resumed.push(task.resume?.decision);
        if (task.resume === undefined) {
          answers.push((await task.proposePlan([{ tool: "search", arguments: { q: "x" } }])).approved);
          yield toolCall("s1", "search", { q: "x" });
          yield toolResult("s1", []);
          const plan = await task.proposePlan([{ tool: "publish", arguments: { to: "blog" }, description: "post it" }]);
          answers.push(plan.approved);
          if (!plan.approved) return; // the lease has ended; the decision comes back as task.resume
        }
        yield message("published");
      },
    }, async () => {
      const run = await startRun(dev, session, "post");
      return followRun(dev, run.name, 30_000, async (e) => {
        if (e.kind.case === "planProposed" && !e.kind.value.autoApproved) {
          await dev.execution.decideApproval({
            name: run.name,
            approvalId: e.kind.value.approval!.approvalId,
            decision: ApprovalDecision.APPROVE,
          });
        }
      });
    });
    assert.deepEqual(answers, [true, false]);
    assert.deepEqual(resumed, [undefined, ApprovalDecision.APPROVE]);
    assert.equal(finished.run.status, S.SUCCEEDED);
    assert.equal(finished.run.attempt, 1);
    assert.deepEqual(finished.run.output.map((m) => m.content), ["published"]);
    const k = kinds(finished.events);
    assert.ok(k.includes(`status:${S.REQUIRES_ACTION}`), k.join(" "));
  });

  test("a RetryableError retries the run; any other error fails it", async () => {
    const { agent, session } = await makeAgent(server, tenant, "flaky");
    const dev = server.client(tenant.developerKey);
    const retryPolicy = { maxAttempts: 3, initialInterval: { seconds: 0n, nanos: 100_000_000 } };
    const [retried, failed] = await withWorker({ baseUrl: server.baseUrl, apiKey: tenant.workerKey }, {
      [agent]: async function* (task: TaskContext) {
        yield textDelta(`attempt ${task.attempt}`);
        if (task.input[0]!.content === "flaky" && task.attempt === 1) {
          throw new RetryableError("rate limited", { type: "RateLimited", details: { tokens: 0 } });
        }
        if (task.input[0]!.content === "broken") {
          throw new TypeError("bad input");
        }
        yield message(`ok on attempt ${task.attempt}`);
      },
    }, async () => {
      const a = await followRun(dev, (await startRun(dev, session, "flaky", { retryPolicy })).name);
      const b = await followRun(dev, (await startRun(dev, session, "broken", { retryPolicy })).name);
      return [a, b];
    });
    assert.equal(retried.run.status, S.SUCCEEDED);
    assert.equal(retried.run.attempt, 2);
    assert.deepEqual(retried.run.output.map((m) => m.content), ["ok on attempt 2"]);
    const requeued = retried.events.find((e) => e.kind.case === "statusChanged" && e.kind.value.status === S.QUEUED && e.attempt === 1);
    assert.ok(requeued, kinds(retried.events).join(" "));
    assert.equal(failed.run.status, S.FAILED);
    assert.equal(failed.run.attempt, 1);
    assert.equal(failed.run.error?.type, "TypeError");
    assert.equal(failed.run.error?.message, "bad input");
  });

  for (const lingerMs of [0, 500]) {
    test(`events the server refuses fail the attempt (${lingerMs ? "sent by the timer" : "sent at the end"})`, async () => {
      const { agent, session } = await makeAgent(server, tenant, `confused-${lingerMs}`); // no tools
      const dev = server.client(tenant.developerKey);
      const finished = await withWorker({ baseUrl: server.baseUrl, apiKey: tenant.workerKey }, {
        [agent]: async function* (task: TaskContext) {
          yield textDelta("let me call a tool I do not have");
          yield toolCall("call-1", "no_such_tool", { x: 1 });
          await sleep(lingerMs, undefined, { signal: task.signal }); // 500 ms: the batch goes (and is refused) meanwhile
        },
      }, async () => followRun(dev, (await startRun(dev, session, "go", { retryPolicy: { maxAttempts: 1 } })).name));
      assert.equal(finished.run.status, S.FAILED);
      assert.equal(finished.run.attempt, 1);
      assert.equal(finished.run.error?.type, "InvalidArgumentError");
      assert.match(finished.run.error?.message ?? "", /no_such_tool/);
    });
  }

  test("a yielded value that is not a step fails the attempt", async () => {
    const { agent, session } = await makeAgent(server, tenant, "sloppy");
    const dev = server.client(tenant.developerKey);
    const finished = await withWorker({ baseUrl: server.baseUrl, apiKey: tenant.workerKey }, {
      [agent]: async function* () {
        yield { type: "thought", text: "hmm" } as unknown as Step;
      },
    }, async () => followRun(dev, (await startRun(dev, session, "go", { retryPolicy: { maxAttempts: 1 } })).name));
    assert.equal(finished.run.status, S.FAILED);
    assert.equal(finished.run.error?.type, "TypeError");
    assert.match(finished.run.error?.message ?? "", /not an agentry step/);
  });

  test("no more handlers run at once than the concurrency limit, and stop() lets them finish", async () => {
    const { agent, session } = await makeAgent(server, tenant, "busy");
    const dev = server.client(tenant.developerKey);
    // Four sessions, so that the four runs may run at once.
    const sessions = [session];
    for (let i = 0; i < 3; i += 1) {
      const instance = (await dev.execution.getSession({ name: session })).instance;
      sessions.push((await dev.execution.createSession({ parent: tenant.project, session: { instance } })).name);
    }
    let now = 0;
    let most = 0;
    let startedAll: () => void;
    const allStarted = new Promise<void>((ok) => (startedAll = ok));
    let began = 0;
    const runs = await withWorker({ baseUrl: server.baseUrl, apiKey: tenant.workerKey, concurrency: 2 }, {
      [agent]: async function* () {
        now += 1;
        began += 1;
        most = Math.max(most, now);
        if (began === 4) startedAll();
        await sleep(500);
        now -= 1;
        yield message("done");
      },
    }, async (worker) => {
      const made = await Promise.all(sessions.map((s) => startRun(dev, s, "go")));
      await allStarted;
      await worker.stop(); // the fourth handler is running: it finishes before stop() resolves
      return Promise.all(made.map((r) => dev.execution.getRun({ name: r.name })));
    });
    assert.equal(most, 2);
    assert.deepEqual(runs.map((r) => r.status), [S.SUCCEEDED, S.SUCCEEDED, S.SUCCEEDED, S.SUCCEEDED]);
  });

  test("a refused key is fatal: run() rejects; bad agent names are refused up front", async () => {
    const worker = new Worker({ baseUrl: server.baseUrl, apiKey: "agk_not_a_key", pollWaitMs: 1_000 });
    worker.register(tenant.agent, async function* () {});
    await assert.rejects(worker.run(), UnauthenticatedError);
    assert.throws(() => worker.register("agents/x", async function* () {}), /workspaces\/\{w\}\/agents/);
    assert.throws(() => worker.register("workspaces/other/agents/x", async function* () {}), /one workspace/);
    await assert.rejects(new Worker({ baseUrl: server.baseUrl }).run(), /no agent registered/);
  });

  test("a worker process killed mid-run: the run finishes on attempt 2 in another", async () => {
    const { agent, session } = await makeAgent(server, tenant, "crash");
    const dev = server.client(tenant.developerKey);
    const child = spawn(
      process.execPath,
      ["--conditions=agentry-source", "--import", "tsx", "test/crashing-worker.ts"],
      {
        cwd: packageDir,
        env: { ...process.env, AGENTRY_URL: server.baseUrl, AGENTRY_API_KEY: tenant.workerKey, AGENTRY_AGENT: agent },
        stdio: ["ignore", "pipe", "inherit"],
      },
    );
    try {
      const retryPolicy = { maxAttempts: 3, initialInterval: { seconds: 0n, nanos: 100_000_000 } };
      const run = await startRun(dev, session, "survive this", { retryPolicy });
      const lines = createInterface({ input: child.stdout! })[Symbol.asyncIterator]();
      assert.equal((await lines.next()).value, "leased");
      child.kill("SIGKILL"); // no goodbye: the lease simply lapses
      const finished = await withWorker({ baseUrl: server.baseUrl, apiKey: tenant.workerKey }, {
        [agent]: async function* (task: TaskContext) {
          yield message(`${task.input[0]!.content} (attempt ${task.attempt})`);
        },
      }, () => followRun(dev, run.name));
      assert.equal(finished.run.status, S.SUCCEEDED);
      assert.equal(finished.run.attempt, 2);
      assert.deepEqual(finished.run.output.map((m) => m.content), ["survive this (attempt 2)"]);
      const lost = finished.events.filter(
        (e) => e.kind.case === "statusChanged" && e.kind.value.stopReason === StopReason.WORKER_LOST,
      );
      assert.equal(lost.length, 1, kinds(finished.events).join(" "));
    } finally {
      child.kill("SIGKILL");
    }
  });
});
