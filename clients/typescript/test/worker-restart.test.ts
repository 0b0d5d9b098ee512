// The Worker rides out a server restart: the server is stopped (SIGTERM) mid-run, stays
// down 3 s and is started again on the same port and database. The handler keeps
// running, its events stay buffered, the worker's calls are retried with the same
// request ids, and the run finishes on attempt 1 with every event exactly once. The
// same for a server frozen (SIGSTOP: calls time out) and for connections that are cut
// (a proxy resets them); an outage longer than the lease abandons the attempt.

import assert from "node:assert/strict";
import { setTimeout as sleep } from "node:timers/promises";
import { after, before, test } from "node:test";
import { RunStatus, StopReason, type TaskContext, message, textDelta } from "@agentry/client";
import { bootstrapTenant, startProxy, startServer, type Tenant, type TestServer } from "./harness.js";
import { followRun, makeAgent, startRun, withWorker } from "./worker-support.js";

let server: TestServer;
let tenant: Tenant;

before(async () => {
  server = await startServer();
  tenant = await bootstrapTenant(server, "ts-restart");
});

after(async () => {
  await server?.stop();
});

test("a run survives a server restart on attempt 1, and the worker polls on afterwards", async () => {
  const { agent, session } = await makeAgent(server, tenant, "steady");
  const dev = server.client(tenant.developerKey);
  const steps = 50;
  let halfway: () => void;
  const reachedHalfway = new Promise<void>((ok) => (halfway = ok));
  const warnings: string[] = [];
  const logger = { info: () => {}, warn: (m: string) => warnings.push(m), error: (m: string) => warnings.push(m) };
  const options = {
    baseUrl: server.baseUrl,
    apiKey: tenant.workerKey,
    leaseDurationMs: 10_000,
    heartbeatWaitMs: 1_000,
    logger,
  };
  const { first, second, downMs } = await withWorker(options, {
    [agent]: async function* (task: TaskContext) {
      if (task.input[0]!.content === "again") {
        yield message("still here");
        return;
      }
      for (let i = 0; i < steps; i += 1) {
        if (i === 10) halfway();
        yield textDelta(`${i} `);
        await sleep(100);
      }
      yield message("done");
    },
  }, async () => {
    const run = await startRun(dev, session, "count");
    const following = followRun(dev, run.name, 60_000);
    await reachedHalfway;
    const started = Date.now();
    await server.restart({ downMs: 3_000 });
    const downMs = Date.now() - started;
    const first = await following;
    const second = await followRun(dev, (await startRun(dev, session, "again")).name, 60_000);
    return { first, second, downMs };
  });

  console.log(`restart: server down ${downMs} ms; worker warnings:\n  ${warnings.join("\n  ")}`);
  assert.ok(downMs >= 3_000);
  assert.equal(first.run.status, RunStatus.SUCCEEDED, JSON.stringify(first.run.error));
  assert.equal(first.run.attempt, 1);
  assert.deepEqual(first.run.output.map((m) => m.content), ["done"]);
  assert.deepEqual(
    first.events.map((e) => e.sequence),
    first.events.map((_, i) => BigInt(i + 1)),
    "the event log is gapless",
  );
  const text = first.events.flatMap((e) => (e.kind.case === "messageDelta" ? [e.kind.value.text] : [])).join("");
  assert.equal(text, Array.from({ length: steps }, (_, i) => `${i} `).join(""), "every delta exactly once");
  assert.ok(warnings.some((w) => /retrying/.test(w)), "the worker did see the outage");
  assert.ok(!warnings.some((w) => /abandoning|lease lost|failed: /.test(w)), warnings.join("\n"));
  assert.equal(second.run.status, RunStatus.SUCCEEDED);
});

test("an outage longer than the lease abandons the attempt without a FailTask; attempt 2 finishes the run", async () => {
  const { agent, session } = await makeAgent(server, tenant, "patient");
  const dev = server.client(tenant.developerKey);
  let started: () => void;
  const attemptStarted = new Promise<void>((ok) => (started = ok));
  const aborted: string[] = [];
  const warnings: string[] = [];
  const logger = { info: () => {}, warn: (m: string) => warnings.push(m), error: (m: string) => warnings.push(m) };
  const options = { baseUrl: server.baseUrl, apiKey: tenant.workerKey, leaseDurationMs: 1_000, heartbeatWaitMs: 500, logger };
  const finished = await withWorker(options, {
    [agent]: async function* (task: TaskContext) {
      if (task.attempt === 1) {
        task.signal.addEventListener("abort", () => aborted.push(String(task.signal.reason)));
        yield textDelta("first try");
        started();
        await sleep(60_000, undefined, { signal: task.signal });
      }
      yield message(`done on attempt ${task.attempt}`);
    },
  }, async () => {
    const retryPolicy = { maxAttempts: 3, initialInterval: { seconds: 0n, nanos: 100_000_000 } };
    const run = await startRun(dev, session, "wait it out", { retryPolicy });
    await attemptStarted;
    await server.restart({ downMs: 4_000 });
    return followRun(dev, run.name, 60_000);
  });
  assert.equal(finished.run.status, RunStatus.SUCCEEDED);
  assert.equal(finished.run.attempt, 2);
  assert.deepEqual(finished.run.output.map((m) => m.content), ["done on attempt 2"]);
  assert.equal(aborted.length, 1);
  assert.match(aborted[0]!, /lease/);
  assert.ok(warnings.some((w) => /abandoning the attempt/.test(w)), warnings.join("\n"));
  const requeued = finished.events.filter((e) => e.kind.case === "statusChanged" && e.kind.value.stopReason === StopReason.WORKER_LOST);
  assert.equal(requeued.length, 1, "attempt 1 ended by the lapse, not by a failure");
  assert.ok(!finished.events.some((e) => e.kind.case === "statusChanged" && e.kind.value.stopReason === StopReason.ERROR));
});

/** A handler that streams `steps` deltas 100 ms apart and answers "done"; `halfway` resolves after 10. */
function counter(steps: number) {
  let halfway!: () => void;
  const reached = new Promise<void>((ok) => (halfway = ok));
  const handler = async function* () {
    for (let i = 0; i < steps; i += 1) {
      if (i === 10) halfway();
      yield textDelta(`${i} `);
      await sleep(100);
    }
    yield message("done");
  };
  return { handler, reached, text: Array.from({ length: steps }, (_, i) => `${i} `).join("") };
}

function deltas(events: { kind: { case: string | undefined; value?: unknown } }[]): string {
  return events.flatMap((e) => (e.kind.case === "messageDelta" ? [(e.kind.value as { text: string }).text] : [])).join("");
}

test("a frozen server (SIGSTOP for 3 s: calls time out) is waited out on attempt 1", async () => {
  const { agent, session } = await makeAgent(server, tenant, "frozen");
  const dev = server.client(tenant.developerKey);
  const { handler, reached, text } = counter(40);
  const warnings: string[] = [];
  const logger = { info: () => {}, warn: (m: string) => warnings.push(m), error: (m: string) => warnings.push(m) };
  const options = {
    baseUrl: server.baseUrl,
    apiKey: tenant.workerKey,
    leaseDurationMs: 10_000,
    heartbeatWaitMs: 500,
    callTimeoutMs: 1_000,
    logger,
  };
  const finished = await withWorker(options, { [agent]: handler }, async () => {
    const run = await startRun(dev, session, "count");
    await reached;
    server.signal("SIGSTOP");
    await sleep(3_000);
    server.signal("SIGCONT");
    return followRun(dev, run.name, 60_000);
  });
  assert.equal(finished.run.status, RunStatus.SUCCEEDED, JSON.stringify(finished.run.error));
  assert.equal(finished.run.attempt, 1);
  assert.equal(deltas(finished.events), text, "every delta exactly once");
  assert.ok(warnings.some((w) => /deadline|timed out|timeout/i.test(w)), warnings.join("\n"));
});

test("connections cut under the worker (a proxy resets them) are ridden out on attempt 1", async () => {
  const { agent, session } = await makeAgent(server, tenant, "cut");
  const dev = server.client(tenant.developerKey);
  const proxy = await startProxy(server.port);
  const { handler, reached, text } = counter(30);
  const warnings: string[] = [];
  const logger = { info: () => {}, warn: (m: string) => warnings.push(m), error: (m: string) => warnings.push(m) };
  try {
    const options = { baseUrl: proxy.baseUrl, apiKey: tenant.workerKey, leaseDurationMs: 10_000, heartbeatWaitMs: 2_000, logger };
    const finished = await withWorker(options, { [agent]: handler }, async () => {
      const run = await startRun(dev, session, "count");
      await reached;
      let cut = 0;
      for (let i = 0; i < 5; i += 1) {
        cut += proxy.dropConnections();
        await sleep(200);
      }
      assert.ok(cut > 0, "the worker's connection went through the proxy");
      return followRun(dev, run.name, 60_000);
    });
    assert.equal(finished.run.status, RunStatus.SUCCEEDED, JSON.stringify(finished.run.error));
    assert.equal(finished.run.attempt, 1);
    assert.equal(deltas(finished.events), text, "every delta exactly once");
    assert.ok(!warnings.some((w) => /abandoning|lease lost|failed: /.test(w)), warnings.join("\n"));
  } finally {
    await proxy.close();
  }
});
