// Drives Chromium (playwright-core, the system's /usr/bin/chromium) against a real
// `agentry serve` (SQLite): the page, served from another origin, calls the server over
// gRPC-Web, unary calls and both server streams; the test asserts on what it wrote into
// the DOM. Then the same page from an origin the server does not list: refused by CORS.
// Run by tests/browser/run, which installs and builds first.
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { existsSync, mkdtempSync, openSync, readFileSync, rmSync } from "node:fs";
import { createServer } from "node:http";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";

const here = dirname(fileURLToPath(import.meta.url));
const root = resolve(here, "../..");
const bin = process.env.AGENTRY_BIN ?? join(process.env.CARGO_TARGET_DIR ?? join(root, "target"), "debug", "agentry");
const chromiumPath = process.env.CHROMIUM_BIN ?? "/usr/bin/chromium";

/** A static server of dist/ on an ephemeral port of 127.0.0.1; resolves to its origin. */
async function staticServer(servers) {
  const types = { ".html": "text/html", ".js": "text/javascript" };
  const server = createServer((req, res) => {
    const path = new URL(req.url, "http://x").pathname;
    const file = join(here, "dist", path === "/" ? "index.html" : path.slice(1));
    const type = types[file.slice(file.lastIndexOf("."))];
    if (type === undefined || !file.startsWith(join(here, "dist")) || !existsSync(file)) {
      res.writeHead(404).end();
      return;
    }
    res.writeHead(200, { "content-type": type }).end(readFileSync(file));
  });
  servers.push(server);
  await new Promise((ok) => server.listen(0, "127.0.0.1", ok));
  return `http://127.0.0.1:${server.address().port}`;
}

async function freePort() {
  const server = createServer();
  await new Promise((ok) => server.listen(0, "127.0.0.1", ok));
  const { port } = server.address();
  await new Promise((ok) => server.close(ok));
  return port;
}

/** A Connect unary JSON call from Node (no browser): the status and body. */
async function call(api, key, method, body) {
  const res = await fetch(`${api}/agentry.v1.${method}`, {
    method: "POST",
    headers: { "content-type": "application/json", authorization: `Bearer ${key}` },
    body: JSON.stringify(body),
  });
  return { status: res.status, body: await res.json() };
}

async function startAgentry(dir, allowedOrigin) {
  const port = await freePort();
  const api = `http://127.0.0.1:${port}`;
  const key = randomBytes(24).toString("hex");
  const log = join(dir, "server.log");
  const fd = openSync(log, "a");
  const child = spawn(bin, ["serve", "--listen", `127.0.0.1:${port}`, "--database-url", `sqlite://${dir}/a.db`], {
    env: { ...process.env, AGENTRY_ROOT_KEY: key, AGENTRY_CORS_ALLOWED_ORIGINS: allowedOrigin, RUST_LOG: "warn" },
    stdio: ["ignore", fd, fd],
  });
  const deadline = Date.now() + 30_000;
  for (;;) {
    try {
      if ((await call(api, key, "RegistryService/ListWorkspaces", {})).status === 200) {
        return { api, key, child, log };
      }
    } catch {
      // not listening yet
    }
    if (child.exitCode !== null || Date.now() > deadline) {
      throw new Error(`agentry serve did not come up; its log:\n${readFileSync(log, "utf8")}`);
    }
    await new Promise((ok) => setTimeout(ok, 100));
  }
}

/** Opens the page at `origin` and waits for it to finish; returns what it wrote into #result. */
async function runPage(browser, origin, hash) {
  const page = await browser.newPage();
  const logs = [];
  page.on("console", (m) => logs.push(`${m.type()}: ${m.text()}`));
  page.on("pageerror", (e) => logs.push(`pageerror: ${e}`));
  try {
    await page.goto(`${origin}/#${new URLSearchParams(hash)}`);
    await page.waitForSelector("body[data-state]", { timeout: 45_000 });
    const state = await page.getAttribute("body", "data-state");
    const result = JSON.parse(await page.textContent("#result"));
    assert.equal(state, "done", `the page failed: ${JSON.stringify(result)}\n${logs.join("\n")}`);
    return result;
  } catch (err) {
    process.stderr.write(`browser console:\n${logs.join("\n")}\n`);
    throw err;
  } finally {
    await page.close();
  }
}

function check(name, fn) {
  fn();
  console.log(`ok - ${name}`);
}

/** What the page wrote after its walk (results keyed by step). */
function checkWalk(r) {
  const project = "workspaces/browser/projects/web";
  check("creates a workspace, project, agent, instance and session", () => {
    assert.deepEqual(r.created.slice(0, 4), [
      "workspaces/browser",
      project,
      "workspaces/browser/agents/echo",
      `${project}/instances/echo-1`,
    ]);
    assert.match(r.created[4], new RegExp(`^${project}/sessions/[0-9a-f-]+$`));
  });
  check("GetWorkspace", () =>
    assert.deepEqual(r.getWorkspace, { name: "workspaces/browser", displayName: "From Chromium" }),
  );
  check("WriteContext and ReadContext", () => {
    assert.deepEqual(r.writeContext, { version: 2 });
    assert.deepEqual(r.readContext, { version: 2, data: { todo: ["docs"], done: true } });
  });
  check("WatchContext: the backlog, then a write made after it arrived", () =>
    assert.deepEqual(r.watchContext, [
      { version: 1, data: { todo: ["docs"] } },
      { version: 2, data: { todo: ["docs"], done: true } },
      { version: 3, data: { todo: ["docs"], done: true, live: true } },
    ]),
  );
  check("StreamRunEvents: QUEUED, then the cancel made while it was open, then the stream ends", () =>
    assert.deepEqual(r.streamRunEvents, ["QUEUED", "CANCELLED"]),
  );
  check("NOT_FOUND with its decoded ErrorInfo", () =>
    assert.deepEqual(
      [r.notFound.code, r.notFound.reason, r.notFound.domain, r.notFound.metadata],
      ["NotFound", "RESOURCE_NOT_FOUND", "agentry.dev", { resource: "workspaces/missing" }],
    ),
  );
  check("a stream's error (WatchContext of a missing context) with its decoded ErrorInfo", () =>
    assert.deepEqual(
      [r.streamNotFound.code, r.streamNotFound.reason, r.streamNotFound.metadata],
      ["NotFound", "RESOURCE_NOT_FOUND", { resource: `${project}/contexts/missing` }],
    ),
  );
  check("no key: UNAUTHENTICATED with its reason", () =>
    assert.deepEqual([r.noKey.code, r.noKey.reason], ["Unauthenticated", "MISSING_CREDENTIALS"]),
  );
}

async function main() {
  if (!existsSync(bin)) {
    throw new Error(`agentry binary not found at ${bin} (set AGENTRY_BIN)`);
  }
  const dir = mkdtempSync(join(tmpdir(), "agentry-browser-"));
  const servers = [];
  let agentry;
  let browser;
  try {
    const allowed = await staticServer(servers);
    const other = await staticServer(servers);
    agentry = await startAgentry(dir, allowed);
    // (A container's /dev/shm may be too small for Chromium's shared memory.)
    browser = await chromium.launch({ executablePath: chromiumPath, headless: true, args: ["--disable-dev-shm-usage"] });
    console.log(`page at ${allowed}, agentry at ${agentry.api}, ${browser.version()}`);

    const r = await runPage(browser, allowed, { api: agentry.api, key: agentry.key });
    checkWalk(r);
    const p = await runPage(browser, other, { api: agentry.api, key: agentry.key, mode: "probe" });
    check("an origin not in cors_allowed_origins: the browser refuses the call", () => {
      // fetch() rejects ("Failed to fetch"), which Connect reports as UNKNOWN: the
      // preflight answer names no origin, so the POST is never sent.
      assert.deepEqual([p.probe.code, p.probe.message], ["Unknown", "Failed to fetch"]);
    });
    const after = await call(agentry.api, agentry.key, "RegistryService/GetWorkspace", { name: "workspaces/wrong-origin" });
    check("… and the server never ran it", () => assert.equal(after.status, 404, JSON.stringify(after.body)));
  } catch (err) {
    if (agentry !== undefined) {
      process.stderr.write(`agentry serve log (tail):\n${readFileSync(agentry.log, "utf8").split("\n").slice(-30).join("\n")}\n`);
    }
    throw err;
  } finally {
    await browser?.close();
    agentry?.child.kill("SIGTERM");
    for (const s of servers) {
      s.close();
    }
    rmSync(dir, { recursive: true, force: true });
  }
}

await main();
