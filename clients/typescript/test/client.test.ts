// Auth, typed errors with status details, pagination and CAS on contexts, against a real
// `agentry serve`.

import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import {
  AgentryError,
  Code,
  ConnectError,
  ContextOp,
  InvalidArgumentError,
  NotFoundError,
  PermissionDeniedError,
  UnauthenticatedError,
  VersionConflictError,
  AlreadyExistsError,
  QuotaExceededError,
  fromJsonValue,
  jsonValue,
  toAgentryError,
} from "@agentry/client";
import { bootstrapTenant, startServer, type Tenant, type TestServer } from "./harness.js";

let server: TestServer;
let tenant: Tenant;

before(async () => {
  server = await startServer();
  tenant = await bootstrapTenant(server, "ts-client");
});

after(async () => {
  await server?.stop();
});

describe("auth", () => {
  test("a good key works", async () => {
    const dev = server.client(tenant.developerKey);
    const workspace = await dev.registry.getWorkspace({ name: tenant.workspace });
    assert.equal(workspace.name, tenant.workspace);
    const root = server.client(server.rootKey);
    const { workspaces } = await root.registry.listWorkspaces({});
    assert.ok(workspaces.some((w) => w.name === tenant.workspace));
  });

  test("an unknown key is UnauthenticatedError", async () => {
    const bad = server.client("agk_not_a_real_key");
    const err = await rejection(bad.registry.getWorkspace({ name: tenant.workspace }));
    assert.ok(err instanceof UnauthenticatedError, `got ${String(err)}`);
    assert.ok(err instanceof AgentryError);
    assert.ok(err instanceof ConnectError, "AgentryErrors are ConnectErrors");
    assert.equal(err.code, Code.Unauthenticated);
    assert.equal(err.domain, "agentry.dev");
    assert.notEqual(err.reason, "");
  });

  test("no key is UnauthenticatedError", async () => {
    const anonymous = server.client();
    const err = await rejection(anonymous.registry.listWorkspaces({}));
    assert.ok(err instanceof UnauthenticatedError, `got ${String(err)}`);
  });

  test("a role that may not call is PermissionDeniedError ROLE_NOT_ALLOWED", async () => {
    const worker = server.client(tenant.workerKey);
    const err = await rejection(
      worker.execution.createSession({ parent: tenant.project, session: { instance: tenant.instance } }),
    );
    assert.ok(err instanceof PermissionDeniedError, `got ${String(err)}`);
    assert.equal(err.reason, "ROLE_NOT_ALLOWED");
  });
});

describe("errors with details", () => {
  test("InvalidArgumentError carries the BadRequest field violation", async () => {
    const dev = server.client(tenant.developerKey);
    const err = await rejection(
      dev.registry.createInstance({
        parent: tenant.project,
        instanceId: "too-hot",
        instance: { agent: tenant.agent, config: { temperature: 5 } },
      }),
    );
    assert.ok(err instanceof InvalidArgumentError, `got ${String(err)}`);
    assert.equal(err.code, Code.InvalidArgument);
    assert.ok(
      err.fieldViolations.some((v) => v.field === "instance.config/temperature" && v.description !== ""),
      `field violations: ${JSON.stringify(err.fieldViolations)}`,
    );
    assert.equal(err.domain, "agentry.dev");
    assert.notEqual(err.reason, "");
    // The raw details stay available too.
    assert.ok(err.details.some((d) => "type" in d && d.type === "google.rpc.BadRequest"));
  });

  test("NotFoundError names the resource", async () => {
    const dev = server.client(tenant.developerKey);
    const name = `${tenant.project}/instances/nope`;
    const err = await rejection(dev.registry.getInstance({ name }));
    assert.ok(err instanceof NotFoundError, `got ${String(err)}`);
    assert.equal(err.resource, name);
  });

  test("AlreadyExistsError", async () => {
    const root = server.client(server.rootKey);
    const err = await rejection(root.registry.createWorkspace({ workspaceId: "ts-client", workspace: {} }));
    assert.ok(err instanceof AlreadyExistsError, `got ${String(err)}`);
  });

  test("QuotaExceededError carries the QuotaFailure violation and RetryInfo", async () => {
    const root = server.client(server.rootKey);
    const ws = await root.registry.createWorkspace({
      workspaceId: "ts-quota",
      workspace: { quotas: { maxProjects: 1 } },
    });
    assert.equal(ws.quotas?.maxProjects, 1);
    await root.registry.createProject({ parent: ws.name, projectId: "one", project: {} });
    const err = await rejection(root.registry.createProject({ parent: ws.name, projectId: "two", project: {} }));
    assert.ok(err instanceof QuotaExceededError, `got ${String(err)}`);
    assert.equal(err.code, Code.ResourceExhausted);
    assert.ok(err.quotaViolations.length >= 1, "a quota violation");
    assert.notEqual(err.quotaViolations[0]?.description, "");
    assert.ok((err.retryDelayMs ?? 0) > 0, `retryDelayMs ${err.retryDelayMs}`);
  });

  test("toAgentryError converts a plain ConnectError and leaves others alone", () => {
    const plain = new ConnectError("boom", Code.Aborted);
    const converted = toAgentryError(plain);
    assert.ok(converted instanceof AgentryError);
    assert.ok(!(converted instanceof VersionConflictError), "no VERSION_CONFLICT reason");
    assert.equal(converted.code, Code.Aborted);
    assert.equal(converted.rawMessage, "boom");
    assert.ok(!(plain instanceof AgentryError), "a plain ConnectError is not an AgentryError");
    assert.equal(toAgentryError(converted), converted);
  });
});

describe("pagination", () => {
  test("page_size and next_page_token walk every context exactly once", async () => {
    const dev = server.client(tenant.developerKey);
    const created: string[] = [];
    for (let i = 0; i < 5; i++) {
      const ctx = await dev.contexts.createContext({ parent: tenant.project, contextId: `page-${i}`, context: {} });
      created.push(ctx.name);
    }
    const seen: string[] = [];
    const pageSizes: number[] = [];
    let pageToken = "";
    do {
      const page = await dev.contexts.listContexts({ parent: tenant.project, pageSize: 2, pageToken });
      pageSizes.push(page.contexts.length);
      seen.push(...page.contexts.map((c) => c.name));
      pageToken = page.nextPageToken;
    } while (pageToken !== "");
    assert.ok(pageSizes.every((n) => n <= 2), `page sizes ${pageSizes.join(",")}`);
    assert.ok(pageSizes.length >= 3, `pages: ${pageSizes.join(",")}`);
    assert.deepEqual([...seen].sort(), [...new Set(seen)].sort(), "no duplicates");
    for (const name of created) {
      assert.ok(seen.includes(name), `missing ${name}`);
    }
  });
});

describe("contexts", () => {
  test("a write with a stale expected_version is VersionConflictError with currentVersion", async () => {
    const dev = server.client(tenant.developerKey);
    const ctx = await dev.contexts.createContext({
      parent: tenant.project,
      contextId: "memory",
      context: { description: "CAS test" },
      data: jsonValue({ notes: [], turn: 0 }),
    });
    assert.equal(ctx.headVersion, 1n);

    const second = await dev.contexts.writeContext({
      name: ctx.name,
      expectedVersion: 1n,
      change: { case: "data", value: jsonValue({ notes: ["hi"], turn: 1 }) },
    });
    assert.equal(second.version?.version, 2n);
    assert.equal(second.noop, false);

    const err = await rejection(
      dev.contexts.writeContext({
        name: ctx.name,
        expectedVersion: 1n,
        change: { case: "data", value: jsonValue({ notes: ["stale"], turn: 1 }) },
      }),
    );
    assert.ok(err instanceof VersionConflictError, `got ${String(err)}`);
    assert.equal(err.code, Code.Aborted);
    assert.equal(err.reason, "VERSION_CONFLICT");
    assert.equal(err.currentVersion, 2n);

    // Retrying on the version the error names succeeds.
    const third = await dev.contexts.writeContext({
      name: ctx.name,
      expectedVersion: err.currentVersion,
      change: { case: "mergePatch", value: jsonValue({ turn: 2 }) },
    });
    assert.equal(third.version?.version, 3n);
    assert.equal(third.version?.op, ContextOp.MERGE_PATCH);
    const head = await dev.contexts.readContext({ name: ctx.name });
    assert.deepEqual(fromJsonValue(head.data), { notes: ["hi"], turn: 2 });
  });
});

async function rejection(promise: Promise<unknown>): Promise<AgentryError> {
  try {
    await promise;
  } catch (err) {
    assert.ok(err instanceof AgentryError, `expected an AgentryError, got ${String(err)}`);
    return err;
  }
  assert.fail("the call succeeded");
}
