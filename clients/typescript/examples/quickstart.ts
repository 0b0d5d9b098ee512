// Connects to an Agentry server and makes one call: the instances of a project.
//
//   AGENTRY_URL=http://127.0.0.1:50051 AGENTRY_API_KEY=agk_… \
//   AGENTRY_PROJECT=workspaces/acme/projects/web npm run example examples/quickstart.ts

// #region connect
import { createAgentryClient } from "@agentry/client";

const client = createAgentryClient({
  baseUrl: process.env.AGENTRY_URL ?? "http://127.0.0.1:50051",
  apiKey: process.env.AGENTRY_API_KEY,
});
// #endregion connect

// #region one-call
const { instances } = await client.registry.listInstances({
  parent: process.env.AGENTRY_PROJECT ?? "workspaces/acme/projects/web",
  pageSize: 10,
});
for (const instance of instances) {
  console.log(`${instance.name} runs ${instance.agent} at revision ${instance.agentRevision}`);
}
// #endregion one-call
