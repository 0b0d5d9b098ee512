// The examples run against a real server (the test plays the worker for start_run.ts),
// and every README snippet is exactly a region of an example.

import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { once } from "node:events";
import { createInterface } from "node:readline";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { MessageRole, RunStatus, streamRunEvents } from "@agentry/client";
import { bootstrapTenant, packageDir, pollTask, startServer, type Tenant, type TestServer } from "./harness.js";

let server: TestServer;
let tenant: Tenant;

before(async () => {
  server = await startServer();
  tenant = await bootstrapTenant(server, "ts-examples");
});

after(async () => {
  await server?.stop();
});

/** Runs an example the way `npm run example` does; resolves with its output. */
function runExample(file: string, env: Record<string, string>): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ["--conditions=agentry-source", "--import", "tsx", file], {
      cwd: packageDir,
      env: { ...process.env, ...env },
      stdio: ["ignore", "pipe", "pipe"],
    });
    let out = "";
    let err = "";
    child.stdout.on("data", (b: Buffer) => (out += b.toString()));
    child.stderr.on("data", (b: Buffer) => (err += b.toString()));
    const timer = setTimeout(() => child.kill("SIGKILL"), 30_000);
    child.on("exit", (code) => {
      clearTimeout(timer);
      if (code === 0) {
        resolve(out);
      } else {
        reject(new Error(`${file} exited with ${code}\nstdout:\n${out}\nstderr:\n${err}`));
      }
    });
  });
}

/** `// #region NAME` … `// #endregion NAME` blocks of a file. */
function regions(file: string): Map<string, string> {
  const text = readFileSync(join(packageDir, file), "utf8");
  const found = new Map<string, string>();
  const re = /^\/\/ #region (\S+)\n([\s\S]*?)^\/\/ #endregion \1$/gm;
  for (const m of text.matchAll(re)) {
    found.set(m[1]!, m[2]!.replace(/\n+$/, ""));
  }
  return found;
}

describe("README", () => {
  // This package's README, and the repository's, which shows the same section.
  for (const path of [join(packageDir, "README.md"), join(packageDir, "..", "..", "README.md")])
  test(`${path}: every snippet is the code an example runs, and every example region is shown`, () => {
    const readme = readFileSync(path, "utf8");
    const re = /<!-- snippet: (\S+?)#(\S+) -->\n```ts\n([\s\S]*?)\n```/g;
    const shown = new Set<string>();
    for (const m of readme.matchAll(re)) {
      const [, file, region, code] = m as unknown as [string, string, string, string];
      const expected = regions(file).get(region);
      assert.notEqual(expected, undefined, `${file} has no region ${region}`);
      assert.equal(code, expected, `README snippet ${file}#${region} differs from the example`);
      shown.add(`${file}#${region}`);
    }
    for (const file of ["examples/quickstart.ts", "examples/start_run.ts", "examples/context_cas.ts", "examples/worker.ts"]) {
      for (const region of regions(file).keys()) {
        assert.ok(shown.has(`${file}#${region}`), `README does not show ${file}#${region}`);
      }
    }
    assert.ok(shown.size >= 4);
  });
});

describe("examples", () => {
  test("quickstart.ts lists the project's instances", async () => {
    const out = await runExample("examples/quickstart.ts", {
      AGENTRY_URL: server.baseUrl,
      AGENTRY_API_KEY: tenant.developerKey,
      AGENTRY_PROJECT: tenant.project,
    });
    assert.match(out, new RegExp(`${tenant.instance} runs ${tenant.agent} at revision 1`));
  });

  test("context_cas.ts recovers from a version conflict", async () => {
    const out = await runExample("examples/context_cas.ts", {
      AGENTRY_URL: server.baseUrl,
      AGENTRY_API_KEY: tenant.developerKey,
      AGENTRY_PROJECT: tenant.project,
    });
    assert.equal(out, "VERSION_CONFLICT: the head is version 1\nwrote version 2\n");
  });

  test("start_run.ts creates a run and prints its events to the end", async () => {
    const output = runExample("examples/start_run.ts", {
      AGENTRY_URL: server.baseUrl,
      AGENTRY_API_KEY: tenant.developerKey,
      AGENTRY_INSTANCE: tenant.instance,
    });
    const worker = server.client(tenant.workerKey);
    const task = await pollTask(worker, tenant);
    assert.equal(task.run?.input[0]?.content, "Say hello");
    await worker.execution.appendRunEvents({
      taskToken: task.taskToken,
      events: [
        { kind: { case: "messageDelta", value: { messageId: "m", text: "Hello" } } },
        { kind: { case: "messageDelta", value: { messageId: "m", text: " there" } } },
      ],
    });
    const run = await worker.execution.completeTask({
      taskToken: task.taskToken,
      output: [{ role: MessageRole.ASSISTANT, content: "Hello there" }],
    });
    assert.equal(run.status, RunStatus.SUCCEEDED);
    const out = await output;
    assert.equal(
      out,
      [
        `created ${run.name}`,
        "#1 status: QUEUED",
        "#2 status: RUNNING",
        "#3 delta: Hello",
        "#4 delta:  there",
        "#5 messageCompleted",
        "#6 status: SUCCEEDED",
        "",
      ].join("\n"),
    );
  });
});

describe("worker example", () => {
  test("worker.ts serves the agent's runs and stops on SIGTERM", async () => {
    const child = spawn(process.execPath, ["--conditions=agentry-source", "--import", "tsx", "examples/worker.ts"], {
      cwd: packageDir,
      env: { ...process.env, AGENTRY_URL: server.baseUrl, AGENTRY_API_KEY: tenant.workerKey, AGENTRY_AGENT: tenant.agent },
      stdio: ["ignore", "pipe", "inherit"],
    });
    const lines = createInterface({ input: child.stdout! })[Symbol.asyncIterator]();
    const exited = once(child, "exit");
    try {
      assert.equal((await lines.next()).value, "serving");
      const dev = server.client(tenant.developerKey);
      const session = await dev.execution.createSession({ parent: tenant.project, session: { instance: tenant.instance } });
      const run = await dev.execution.createRun({
        parent: session.name,
        run: { input: [{ role: MessageRole.USER, content: "rust async runtimes" }] },
      });
      const kinds: string[] = [];
      for await (const event of streamRunEvents(dev, { name: run.name, signal: AbortSignal.timeout(30_000) })) {
        kinds.push(event.kind.case === "statusChanged" ? RunStatus[event.kind.value.status] : String(event.kind.case));
      }
      assert.deepEqual(kinds, [
        "QUEUED",
        "RUNNING",
        "toolCallStarted",
        "toolCallCompleted",
        "messageDelta",
        "messageDelta",
        "messageDelta",
        "usage",
        "messageCompleted",
        "SUCCEEDED",
      ]);
      const finished = await dev.execution.getRun({ name: run.name });
      assert.deepEqual(finished.output.map((m) => m.content), ["Found 3 results."]);
      assert.equal(finished.usage?.outputTokens, 3n);
      child.kill("SIGTERM");
      assert.equal((await lines.next()).value, "stopped");
      assert.deepEqual(await exited, [0, null]);
    } finally {
      child.kill("SIGKILL");
    }
  });
});
