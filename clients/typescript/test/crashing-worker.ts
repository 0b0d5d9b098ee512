// A worker process that leases one run, says so on stdout and hangs until killed. The
// test kills it with SIGKILL: no FailTask, no more heartbeats, so the lease lapses
// (within heartbeat wait + lease duration) and the server re-queues the run.

import { Worker, textDelta } from "@agentry/client";

const worker = new Worker({
  baseUrl: process.env.AGENTRY_URL!,
  apiKey: process.env.AGENTRY_API_KEY!,
  leaseDurationMs: 1_000,
  heartbeatWaitMs: 1_000,
  flushIntervalMs: 10,
});
worker.register(process.env.AGENTRY_AGENT!, async function* (task) {
  yield textDelta("working");
  await task.flush();
  console.log("leased");
  await new Promise(() => {}); // killed here
});
await worker.run();
