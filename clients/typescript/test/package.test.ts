// The built package from both module systems: packed with `npm pack`, installed into a
// project made by `npm init -y` (CommonJS), then `require()`d by a .js file, imported by
// an .mjs file and type-checked as CommonJS TypeScript, each calling a real server.
// Needs dist/ (`npm run build`; clients/typescript/scripts/test builds it first).

import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { after, before, describe, test } from "node:test";
import { packageDir, startServer, type TestServer } from "./harness.js";

const run = promisify(execFile);
const project = mkdtempSync(join(tmpdir(), "agentry-ts-consumer-"));
let server: TestServer;

// What each consumer does: list workspaces with the root key, and see a bad key's error
// as an UnauthenticatedError (so the error classes are the package's own).
const body = `
const client = createAgentryClient({ baseUrl: process.env.AGENTRY_URL, apiKey: process.env.AGENTRY_API_KEY });
const bad = createAgentryClient({ baseUrl: process.env.AGENTRY_URL, apiKey: "agk_wrong" });
client.registry.listWorkspaces({}).then(async ({ workspaces }) => {
  const refused = await bad.registry.listWorkspaces({}).catch((e) => e);
  console.log(\`workspaces: \${workspaces.length}, bad key: \${refused instanceof UnauthenticatedError}, \${RunStatus[RunStatus.SUCCEEDED]}, \${typeof Worker}\`);
  client.close();
  bad.close();
});
`;

before(async () => {
  assert.ok(existsSync(join(packageDir, "dist/cjs/index.js")), "no dist/: run `npm run build` first");
  const npm = (args: string[], cwd: string) => run("npm", args, { cwd, env: { ...process.env, npm_config_loglevel: "error" } });
  const packed = await npm(["pack", "--ignore-scripts", "--json", "--pack-destination", project], packageDir);
  const tarball = join(project, (JSON.parse(packed.stdout) as { filename: string }[])[0]!.filename);
  await npm(["init", "-y"], project);
  await npm(["install", "--prefer-offline", "--no-audit", "--no-fund", tarball], project);
  server = await startServer();
});

after(async () => {
  await server?.stop();
  rmSync(project, { recursive: true, force: true });
});

async function node(file: string): Promise<string> {
  const env = { ...process.env, AGENTRY_URL: server.baseUrl, AGENTRY_API_KEY: server.rootKey };
  return (await run(process.execPath, [file], { cwd: project, env })).stdout;
}

describe("the packed package", () => {
  test("a project made by npm init -y is CommonJS", () => {
    const manifest = JSON.parse(readFileSync(join(project, "package.json"), "utf8")) as { type?: string };
    assert.notEqual(manifest.type, "module");
  });

  test("require() works from CommonJS", async () => {
    writeFileSync(
      join(project, "index.js"),
      `const { createAgentryClient, UnauthenticatedError, RunStatus, Worker } = require("@agentry/client");\n` +
        `const { ExecutionService } = require("@agentry/client/gen/agentry/v1/execution_pb");\n` +
        `if (ExecutionService.typeName !== "agentry.v1.ExecutionService") throw new Error("gen/*");\n` +
        body,
    );
    assert.equal(await node("index.js"), "workspaces: 0, bad key: true, SUCCEEDED, function\n");
  });

  test("import works from ESM", async () => {
    writeFileSync(
      join(project, "index.mjs"),
      `import { createAgentryClient, UnauthenticatedError, RunStatus, Worker } from "@agentry/client";\n` + body,
    );
    assert.equal(await node("index.mjs"), "workspaces: 0, bad key: true, SUCCEEDED, function\n");
  });

  test("TypeScript in the CommonJS project type-checks against the require types", async () => {
    writeFileSync(
      join(project, "check.ts"),
      `import { createAgentryClient, RunStatus, Worker, message } from "@agentry/client";\n` +
        `const client = createAgentryClient({ baseUrl: "http://127.0.0.1:50051" });\n` +
        `const worker = new Worker({ client });\n` +
        `worker.register("workspaces/w/agents/a", async function* () { yield message("hi"); });\n` +
        `export const status: RunStatus = RunStatus.SUCCEEDED;\n`,
    );
    writeFileSync(
      join(project, "tsconfig.json"),
      JSON.stringify({
        compilerOptions: { module: "node16", moduleResolution: "node16", strict: true, noEmit: true, skipLibCheck: true,
          typeRoots: [join(packageDir, "node_modules/@types")], types: ["node"] },
        files: ["check.ts"],
      }),
    );
    const tsc = join(packageDir, "node_modules/.bin/tsc");
    const result = await run(tsc, ["-p", "tsconfig.json", "--listFiles"], { cwd: project }).catch((e: { stdout: string }) =>
      assert.fail(e.stdout),
    );
    assert.match(result.stdout, /node_modules\/@agentry\/client\/dist\/cjs\/index\.d\.ts/);
  });
});
