// Compare-and-swap on a context: a write based on a stale version is refused with a typed
// error that names the current version, and the retry goes on from there.
//
//   AGENTRY_URL=http://127.0.0.1:50051 AGENTRY_API_KEY=agk_… \
//   AGENTRY_PROJECT=workspaces/acme/projects/web npm run example examples/context_cas.ts

import { createAgentryClient } from "@agentry/client";

const client = createAgentryClient({
  baseUrl: process.env.AGENTRY_URL ?? "http://127.0.0.1:50051",
  apiKey: process.env.AGENTRY_API_KEY,
});
const project = process.env.AGENTRY_PROJECT ?? "workspaces/acme/projects/web";

// #region errors
import { VersionConflictError, jsonValue } from "@agentry/client";

const context = await client.contexts.createContext({
  parent: project,
  contextId: `cas-demo-${Date.now()}`,
  context: {},
  data: jsonValue({ turn: 0 }),
});
let expectedVersion = 0n; // stale on purpose: the context is at version 1
for (;;) {
  try {
    const { version } = await client.contexts.writeContext({
      name: context.name,
      expectedVersion,
      change: { case: "mergePatch", value: jsonValue({ turn: 1 }) },
    });
    console.log(`wrote version ${version?.version}`);
    break;
  } catch (err) {
    if (!(err instanceof VersionConflictError)) throw err;
    console.log(`${err.reason}: the head is version ${err.currentVersion}`);
    expectedVersion = err.currentVersion ?? 0n;
  }
}
// #endregion errors
