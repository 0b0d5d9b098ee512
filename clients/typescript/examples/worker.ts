// A worker (WORKER key) serving one agent: it calls a `search` tool, streams its answer
// and returns it as the run's output. Stops gracefully on SIGTERM or SIGINT.
//
//   AGENTRY_URL=… AGENTRY_API_KEY=… AGENTRY_AGENT=workspaces/acme/agents/echo npm run example examples/worker.ts

import { setTimeout as sleep } from "node:timers/promises";

/** Stands in for a real tool; takes the signal as fetch and most SDKs do. */
async function search(query: string, signal: AbortSignal): Promise<number> {
  await sleep(50, undefined, { signal });
  return query.split(" ").length;
}

// #region worker
import { Worker, message, textDelta, toolCall, toolResult, usage } from "@agentry/client";

const worker = new Worker({
  baseUrl: process.env.AGENTRY_URL ?? "http://127.0.0.1:50051",
  apiKey: process.env.AGENTRY_API_KEY, // a WORKER key
  concurrency: 4,
});

worker.register(process.env.AGENTRY_AGENT ?? "workspaces/acme/agents/echo", async function* (task) {
  const question = task.input.at(-1)?.content ?? "";
  yield toolCall("search-1", "search", { q: question });
  // A CancelRun aborts task.signal: pass it to whatever the handler awaits.
  const hits = await search(question, task.signal);
  yield toolResult("search-1", { hits });
  for (const word of ["Found ", `${hits} `, "results."]) {
    yield textDelta(word); // message_delta events, batched into AppendRunEvents
  }
  yield usage({ inputTokens: 12, outputTokens: 3 });
  yield message(`Found ${hits} results.`); // the final answer: Run.output
});

for (const signal of ["SIGINT", "SIGTERM"] as const) {
  process.once(signal, () => void worker.stop()); // finish the runs in hand, then return
}
console.log("serving");
await worker.run();
// #endregion worker
console.log("stopped");
