// createAgentryClient and the Worker over TLS and mutual TLS, against a real `agentry
// serve` started with --tls-cert-file/--tls-key-file (and --tls-client-ca-file).
// Certificates come from scripts/gen-test-certs: a CA, a server certificate for
// 127.0.0.1, a client certificate, and a second CA with a client certificate of its own
// that the server must refuse.

import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import {
  AgentryError,
  Code,
  type AgentryClient,
  RunStatus,
  type TlsOptions,
  createAgentryClient,
  message,
} from "@agentry/client";
import { bootstrapTenant, repoRoot, startServer, type TestServer } from "./harness.js";
import { followRun, makeAgent, startRun, withWorker } from "./worker-support.js";

const pki = mkdtempSync(join(tmpdir(), "agentry-ts-pki-"));
const file = (name: string) => join(pki, name);
let tlsServer: TestServer;
let mtlsServer: TestServer;

const serverArgs = (mutual: boolean) => [
  "--tls-cert-file",
  file("server.pem"),
  "--tls-key-file",
  file("server-key.pem"),
  ...(mutual ? ["--tls-client-ca-file", file("ca.pem")] : []),
];
const clientCert: TlsOptions = { caFile: file("ca.pem"), certFile: file("client.pem"), keyFile: file("client-key.pem") };

before(async () => {
  execFileSync(join(repoRoot, "scripts/gen-test-certs"), [pki], { stdio: "ignore" });
  tlsServer = await startServer({ args: serverArgs(false), tls: { caFile: file("ca.pem") } });
  mtlsServer = await startServer({ args: serverArgs(true), tls: clientCert });
});

after(async () => {
  await tlsServer?.stop();
  await mtlsServer?.stop();
  rmSync(pki, { recursive: true, force: true });
});

async function listWorkspaces(client: AgentryClient): Promise<number> {
  try {
    return (await client.registry.listWorkspaces({}, { timeoutMs: 5_000 })).workspaces.length;
  } finally {
    client.close();
  }
}

/** The call fails, with a message that says why (`why`). */
async function refused(client: AgentryClient, why: RegExp): Promise<AgentryError> {
  const err = await listWorkspaces(client).then(
    () => assert.fail("the call went through"),
    (e: unknown) => e,
  );
  assert.ok(err instanceof AgentryError, `got ${String(err)}`);
  assert.match(`${Code[err.code]}: ${err.rawMessage}`, why);
  return err;
}

describe("TLS", () => {
  test("a client trusting the server's CA connects (CA from a file, or as PEM text)", async () => {
    const url = tlsServer.baseUrl;
    assert.match(url, /^https:/);
    const key = tlsServer.rootKey;
    assert.ok((await listWorkspaces(createAgentryClient({ baseUrl: url, apiKey: key, tls: { caFile: file("ca.pem") } }))) >= 0);
    const ca = readFileSync(file("ca.pem"), "utf8");
    assert.ok((await listWorkspaces(createAgentryClient({ baseUrl: url, apiKey: key, tls: { ca } }))) >= 0);
    // Without a scheme, TLS options mean https://.
    const bare = url.replace(/^https:\/\//, "");
    assert.ok((await listWorkspaces(createAgentryClient({ baseUrl: bare, apiKey: key, tls: { ca } }))) >= 0);
  });

  test("a client with another CA, or in plaintext, is refused", async () => {
    const url = tlsServer.baseUrl;
    const key = tlsServer.rootKey;
    await refused(createAgentryClient({ baseUrl: url, apiKey: key, tls: { caFile: file("other-ca.pem") } }), /verify/);
    await refused(createAgentryClient({ baseUrl: url.replace(/^https:/, "http:"), apiKey: key }), /stream closed|ECONNRESET|protocol/i);
  });

  test("mutual TLS takes the client certificate and refuses others", async () => {
    const url = mtlsServer.baseUrl;
    const key = mtlsServer.rootKey;
    assert.ok((await listWorkspaces(createAgentryClient({ baseUrl: url, apiKey: key, tls: clientCert }))) >= 0);
    const ca = file("ca.pem");
    await refused(createAgentryClient({ baseUrl: url, apiKey: key, tls: { caFile: ca } }), /certificate required/);
    const stranger = { caFile: ca, certFile: file("other-client.pem"), keyFile: file("other-client-key.pem") };
    await refused(createAgentryClient({ baseUrl: url, apiKey: key, tls: stranger }), /unknown ca/);
  });

  test("a Worker serves a run over mutual TLS", async () => {
    const tenant = await bootstrapTenant(mtlsServer, "ts-mtls");
    const { agent, session } = await makeAgent(mtlsServer, tenant, "secure");
    const dev = mtlsServer.client(tenant.developerKey);
    const finished = await withWorker(
      { baseUrl: mtlsServer.baseUrl, apiKey: tenant.workerKey, tls: clientCert },
      { [agent]: async function* (task) { yield message(`over mTLS: ${task.input[0]!.content}`); } },
      async () => followRun(dev, (await startRun(dev, session, "hi")).name),
    );
    assert.equal(finished.run.status, RunStatus.SUCCEEDED);
    assert.deepEqual(finished.run.output.map((m) => m.content), ["over mTLS: hi"]);
  });

  test("bad TLS options are refused up front", () => {
    assert.throws(
      () => createAgentryClient({ baseUrl: "https://127.0.0.1:1", tls: { caFile: file("ca.pem"), certFile: file("client.pem") } }),
      /needs its key/,
    );
    assert.throws(() => createAgentryClient({ baseUrl: "http://127.0.0.1:1", tls: {} }), /https:\/\//);
  });
});
