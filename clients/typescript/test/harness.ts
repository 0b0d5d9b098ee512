// Starts a real `agentry serve` (SQLite in a temp dir) for a test file, and bootstraps
// tenants on it with the root key.

import { spawn, type ChildProcess } from "node:child_process";
import { randomBytes } from "node:crypto";
import { existsSync, openSync, closeSync, readFileSync } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import { createServer, type Server, type Socket, connect as tcpConnect } from "node:net";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import {
  type AgentryClient,
  type TlsOptions,
  createAgentryClient,
  Role,
  ToolRisk,
  type Task,
} from "@agentry/client";
import { timestampDate } from "@bufbuild/protobuf/wkt";

export const packageDir = resolve(dirname(fileURLToPath(import.meta.url)), "..");
export const repoRoot = resolve(packageDir, "../..");

function serverBinary(): string {
  const bin =
    process.env.AGENTRY_BIN ??
    join(process.env.CARGO_TARGET_DIR ?? join(repoRoot, "target"), "debug", "agentry");
  if (!existsSync(bin)) {
    throw new Error(
      `agentry binary not found at ${bin}: run \`cargo build -p agentry-server --bin agentry\` ` +
        "or set AGENTRY_BIN (clients/typescript/scripts/test builds it)",
    );
  }
  return bin;
}

export async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((ok) => server.listen(0, "127.0.0.1", ok));
  const address = server.address();
  await new Promise<void>((ok) => server.close(() => ok()));
  if (address === null || typeof address === "string") {
    throw new Error("no port");
  }
  return address.port;
}

export interface TestServer {
  baseUrl: string;
  port: number;
  rootKey: string;
  client(apiKey?: string): AgentryClient;
  /** Stops the server process (SIGTERM, SIGKILL after `graceMs`) and starts it again on the same port and database. */
  restart(options?: { graceMs?: number; downMs?: number }): Promise<{ stopMs: number }>;
  /** Sends the server process a signal (SIGSTOP freezes it, SIGCONT thaws it). */
  signal(signal: NodeJS.Signals): void;
  stop(): Promise<void>;
}

export interface ServerOptions {
  /** More `agentry serve` arguments (e.g. `--tls-cert-file …`). */
  args?: string[];
  /** More environment variables for the server. */
  env?: Record<string, string>;
  /** TLS settings of the test's own clients (then the base URL is https://). */
  tls?: TlsOptions;
}

export async function startServer(options: ServerOptions = {}): Promise<TestServer> {
  const bin = serverBinary();
  const dir = await mkdtemp(join(tmpdir(), "agentry-ts-"));
  const port = await freePort();
  const rootKey = randomBytes(24).toString("hex");
  const logPath = join(dir, "server.log");
  const baseUrl = `${options.tls === undefined ? "http" : "https"}://127.0.0.1:${port}`;
  const tls = options.tls;
  const clients: AgentryClient[] = [];
  const client = (apiKey?: string) => {
    const c = createAgentryClient({ baseUrl, apiKey, timeoutMs: 30_000, tls });
    clients.push(c);
    return c;
  };
  const serverLog = () => readFileSync(logPath, "utf8").split("\n").slice(-40).join("\n");

  let child: ChildProcess;
  let exited: Promise<void>;
  let hasExited = false;
  const spawnServer = () => {
    const log = openSync(logPath, "a");
    child = spawn(
      bin,
      ["serve", "--listen", `127.0.0.1:${port}`, "--database-url", `sqlite://${dir}/a.db`, ...(options.args ?? [])],
      {
        env: {
          ...process.env,
          AGENTRY_ROOT_KEY: rootKey,
          RUST_LOG: process.env.RUST_LOG ?? "warn",
          ...options.env,
        },
        stdio: ["ignore", log, log],
      },
    );
    closeSync(log);
    hasExited = false;
    exited = new Promise((ok) =>
      child.once("exit", () => {
        hasExited = true;
        ok();
      }),
    );
  };
  // Ready when an authenticated call answers.
  const ready = async (probe: AgentryClient) => {
    const deadline = Date.now() + 30_000;
    for (;;) {
      if (hasExited) {
        throw new Error(`agentry serve exited early; its log:\n${serverLog()}`);
      }
      try {
        await probe.registry.listWorkspaces({}, { timeoutMs: 1000 });
        return;
      } catch (err) {
        if (Date.now() > deadline) {
          child.kill("SIGKILL");
          throw new Error(`agentry serve did not answer within 30 s (${String(err)}); its log:\n${serverLog()}`);
        }
        await new Promise((ok) => setTimeout(ok, 100));
      }
    }
  };
  const kill = async (graceMs: number) => {
    if (hasExited) {
      return;
    }
    child.kill("SIGTERM");
    const timer = setTimeout(() => child.kill("SIGKILL"), graceMs);
    await exited;
    clearTimeout(timer);
  };

  spawnServer();
  const probe = createAgentryClient({ baseUrl, apiKey: rootKey, tls });
  clients.push(probe);
  await ready(probe);

  return {
    baseUrl,
    port,
    rootKey,
    client,
    async restart({ graceMs = 15_000, downMs = 300 } = {}) {
      const started = Date.now();
      await kill(graceMs);
      const stopMs = Date.now() - started;
      await new Promise((ok) => setTimeout(ok, downMs));
      spawnServer();
      await ready(probe);
      return { stopMs };
    },
    signal(signal: NodeJS.Signals) {
      child.kill(signal);
    },
    async stop() {
      child.kill("SIGCONT");
      for (const c of clients) {
        c.close();
      }
      await kill(10_000);
      await rm(dir, { recursive: true, force: true });
    },
  };
}

export interface Tenant {
  workspace: string;
  project: string;
  agent: string;
  instance: string;
  adminKey: string;
  developerKey: string;
  workerKey: string;
  readerKey: string;
}

/** A workspace with a project, keys of each role, an agent (tool `search`) and an instance. */
export async function bootstrapTenant(server: TestServer, workspaceId: string): Promise<Tenant> {
  const root = server.client(server.rootKey);
  const workspace = (await root.registry.createWorkspace({ workspaceId, workspace: { displayName: workspaceId } }))
    .name;
  const project = (await root.registry.createProject({ parent: workspace, projectId: "web", project: {} })).name;
  const key = async (role: Role) =>
    (await root.registry.createApiKey({ parent: workspace, apiKey: { displayName: Role[role], role } })).secret;
  const adminKey = await key(Role.ADMIN);
  const developerKey = await key(Role.DEVELOPER);
  const workerKey = await key(Role.WORKER);
  const readerKey = await key(Role.READER);
  const dev = server.client(developerKey);
  const agent = (
    await dev.registry.createAgent({
      parent: workspace,
      agentId: "echo",
      agent: {
        displayName: "Echo",
        tools: [{ name: "search", risk: ToolRisk.READ_ONLY }],
        configSchema: { type: "object", properties: { temperature: { type: "number", maximum: 2 } } },
        defaultConfig: { temperature: 1 },
      },
    })
  ).name;
  const instance = (
    await dev.registry.createInstance({
      parent: project,
      instanceId: "echo-1",
      instance: { agent, config: { temperature: 0.5 } },
    })
  ).name;
  return { workspace, project, agent, instance, adminKey, developerKey, workerKey, readerKey };
}

/** Leases the next run of the tenant's agent as a worker, waiting up to 10 s. */
export async function pollTask(worker: AgentryClient, tenant: Tenant): Promise<Task> {
  const deadline = Date.now() + 10_000;
  while (Date.now() < deadline) {
    const { task } = await worker.execution.pollTask({
      parent: tenant.workspace,
      agents: [tenant.agent],
      identity: "ts-test",
      wait: { seconds: 5n, nanos: 0 },
      leaseDuration: { seconds: 30n, nanos: 0 },
    });
    if (task !== undefined) {
      if (task.leaseExpireTime !== undefined && timestampDate(task.leaseExpireTime) < new Date()) {
        throw new Error("lease already expired");
      }
      return task;
    }
  }
  throw new Error("no task within 10 s");
}

/**
 * A TCP proxy in front of the server whose connections the test can cut, to simulate a
 * dropped network connection.
 */
export interface Proxy {
  baseUrl: string;
  /** Destroys every open connection (new ones are accepted). */
  dropConnections(): number;
  close(): Promise<void>;
}

export async function startProxy(targetPort: number): Promise<Proxy> {
  const sockets = new Set<Socket>();
  const server: Server = createServer((inbound) => {
    const outbound = tcpConnect(targetPort, "127.0.0.1");
    sockets.add(inbound);
    sockets.add(outbound);
    inbound.pipe(outbound);
    outbound.pipe(inbound);
    const done = () => {
      inbound.destroy();
      outbound.destroy();
      sockets.delete(inbound);
      sockets.delete(outbound);
    };
    inbound.on("error", done);
    outbound.on("error", done);
    inbound.on("close", done);
    outbound.on("close", done);
  });
  const port = await freePort();
  await new Promise<void>((ok) => server.listen(port, "127.0.0.1", ok));
  return {
    baseUrl: `http://127.0.0.1:${port}`,
    dropConnections() {
      const n = sockets.size;
      for (const s of sockets) {
        s.destroy();
      }
      sockets.clear();
      return n;
    },
    close() {
      for (const s of sockets) {
        s.destroy();
      }
      return new Promise<void>((ok) => server.close(() => ok()));
    },
  };
}
