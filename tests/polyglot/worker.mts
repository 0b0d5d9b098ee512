// Polyglot test, the worker in TypeScript (the same agent as worker.py, with the
// TypeScript `Worker`). The `researcher` agent says what it will do, proposes a plan (its
// `search` tool needs a human at autonomy L1) and stops; once approved it calls the tool,
// records a finding in the `notes` context and answers. With CRASH_MARKER set, the first
// approved attempt creates that file right after its tool call was appended and then
// hangs, so the test can kill the process there.
//
//   node --conditions=agentry-source --import tsx worker.mts TARGET AGENT CONTEXT
//   (cwd: clients/typescript; AGENTRY_API_KEY: the worker key)

import { existsSync, writeFileSync } from "node:fs";
import { setTimeout as sleep } from "node:timers/promises";
import {
  Worker,
  jsonValue,
  message,
  textDelta,
  toolCall,
  toolResult,
} from "../../clients/typescript/src/index.ts";

const [target, agent, context] = process.argv.slice(2) as [string, string, string];
const crashMarker = process.env.CRASH_MARKER;
const worker = new Worker({
  baseUrl: `http://${target}`,
  apiKey: process.env.AGENTRY_API_KEY!,
  leaseDurationMs: 2_000,
  heartbeatWaitMs: 1_000,
  pollWaitMs: 5_000,
});

worker.register(agent, async function* researcher(task) {
  const question = task.input.at(-1)!.content;
  if (task.resume === undefined) {
    yield textDelta("Let me look that up. ");
    const reply = await task.proposePlan([{ tool: "search", arguments: { q: question } }]);
    if (!reply.approved) return; // the lease has ended; the decision comes back through PollTask
  }
  const call = `call-${task.attempt}`;
  yield toolCall(call, "search", { q: question });
  if (crashMarker !== undefined && !existsSync(crashMarker)) {
    await sleep(500); // let the batch with the tool call reach the server
    writeFileSync(crashMarker, String(process.pid));
    await sleep(3_600_000); // killed here
  }
  yield toolResult(call, { hits: 3 });
  await task.client.contexts.writeContext({
    name: context,
    change: { case: "mergePatch", value: jsonValue({ findings: [`3 hits for ${question}`] }) },
  });
  yield textDelta("Found 3 results.");
  yield message("Found 3 results.");
});

process.on("SIGTERM", () => void worker.stop());
console.log(`worker ${process.pid} serving ${agent}`);
await worker.run();
