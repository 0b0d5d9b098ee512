// Creates a session and a run on an instance, then prints the run's events until it ends
// (a worker serving the instance's agent executes it).
//
//   AGENTRY_URL=http://127.0.0.1:50051 AGENTRY_API_KEY=agk_… \
//   AGENTRY_INSTANCE=workspaces/acme/projects/web/instances/echo-1 npm run example examples/start_run.ts

// #region stream-a-run
import { MessageRole, RunStatus, createAgentryClient, streamRunEvents } from "@agentry/client";

const client = createAgentryClient({
  baseUrl: process.env.AGENTRY_URL ?? "http://127.0.0.1:50051",
  apiKey: process.env.AGENTRY_API_KEY,
});
const instance = process.env.AGENTRY_INSTANCE ?? "workspaces/acme/projects/web/instances/echo-1";
const project = instance.slice(0, instance.indexOf("/instances/"));

const session = await client.execution.createSession({ parent: project, session: { instance } });
const run = await client.execution.createRun({
  parent: session.name,
  run: { input: [{ role: MessageRole.USER, content: "Say hello" }] },
});
console.log(`created ${run.name}`);

// Resumes by itself after a dropped connection; ends after the run's final status.
for await (const event of streamRunEvents(client, { name: run.name })) {
  switch (event.kind.case) {
    case "messageDelta":
      console.log(`#${event.sequence} delta: ${event.kind.value.text}`);
      break;
    case "statusChanged":
      console.log(`#${event.sequence} status: ${RunStatus[event.kind.value.status]}`);
      break;
    default:
      console.log(`#${event.sequence} ${event.kind.case}`);
  }
}
// #endregion stream-a-run
