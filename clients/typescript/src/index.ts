// @agentry/client: Connect clients for Agentry's gRPC API (Node, HTTP/2), with bearer
// auth, typed errors from the status details and a resuming run-event stream.

import { fromJson, toJson, type JsonValue } from "@bufbuild/protobuf";
import { ValueSchema, type Value } from "@bufbuild/protobuf/wkt";
import { createClient, type Client, type Interceptor, type Transport } from "@connectrpc/connect";
import { createGrpcTransport, Http2SessionManager } from "@connectrpc/connect-node";
import { ContextService } from "./gen/agentry/v1/context_pb.js";
import { ExecutionService } from "./gen/agentry/v1/execution_pb.js";
import { RegistryService } from "./gen/agentry/v1/registry_pb.js";
import { agentryErrorInterceptor } from "./errors.js";
import { type TlsOptions, secureSessionOptions } from "./tls.js";

export * from "./gen/agentry/v1/common_pb.js";
export * from "./gen/agentry/v1/context_pb.js";
export * from "./gen/agentry/v1/execution_pb.js";
export * from "./gen/agentry/v1/registry_pb.js";
export * from "./errors.js";
export * from "./stream.js";
export * from "./tls.js";
export * from "./steps.js";
export * from "./lease.js";
export * from "./task.js";
export * from "./worker.js";
export { Code, ConnectError } from "@connectrpc/connect";

export interface AgentryClientOptions {
  /**
   * The server, e.g. `http://127.0.0.1:50051` (plaintext HTTP/2) or `https://agentry.example.com`
   * (TLS). Without a scheme: `https://` when `tls` is set, else `http://`.
   */
  baseUrl: string;
  /**
   * TLS settings: the CA to trust for the server's certificate and, for mutual TLS, the
   * client's certificate and key. Set: the connection uses TLS (the URL must not say `http://`).
   */
  tls?: TlsOptions;
  /** The API key, sent as `authorization: Bearer …` on every call. */
  apiKey?: string;
  /**
   * Default deadline of every call in milliseconds; a call may override it with
   * `{ timeoutMs }` (0: none). Unset: no deadline. `streamRunEvents` never uses one.
   */
  timeoutMs?: number;
  /** More interceptors, run inside the auth and error ones. */
  interceptors?: Interceptor[];
}

export interface AgentryClient {
  registry: Client<typeof RegistryService>;
  contexts: Client<typeof ContextService>;
  execution: Client<typeof ExecutionService>;
  /** The gRPC transport the three clients share (for `createClient` of other services). */
  transport: Transport;
  /** Closes the HTTP/2 connection; calls in flight fail. (Idle connections do not keep Node alive.) */
  close(): void;
}

/**
 * Clients of the three Agentry services over one gRPC (HTTP/2) connection. Every call
 * carries the API key, and every error is an `AgentryError` subclass.
 */
export function createAgentryClient(options: AgentryClientOptions): AgentryClient {
  const baseUrl = agentryBaseUrl(options);
  const apiKey = options.apiKey;
  const bearer: Interceptor = (next) => (req) => {
    if (apiKey !== undefined && apiKey !== "") {
      req.header.set("authorization", `Bearer ${apiKey}`);
    }
    return next(req);
  };
  const sessionManager = new Http2SessionManager(
    baseUrl,
    undefined,
    options.tls === undefined ? undefined : secureSessionOptions(options.tls),
  );
  const transport = createGrpcTransport({
    baseUrl,
    sessionManager,
    defaultTimeoutMs: options.timeoutMs,
    interceptors: [agentryErrorInterceptor, bearer, ...(options.interceptors ?? [])],
  });
  return {
    registry: createClient(RegistryService, transport),
    contexts: createClient(ContextService, transport),
    execution: createClient(ExecutionService, transport),
    transport,
    close: () => sessionManager.abort(),
  };
}

/** The URL a client of `options` connects to: a scheme added, and TLS and scheme checked against each other. */
export function agentryBaseUrl(options: Pick<AgentryClientOptions, "baseUrl" | "tls">): string {
  const hasScheme = /^[a-z][a-z0-9+.-]*:\/\//i.test(options.baseUrl);
  if (!hasScheme) {
    return `${options.tls === undefined ? "http" : "https"}://${options.baseUrl}`;
  }
  if (options.tls !== undefined && !/^https:/i.test(options.baseUrl)) {
    throw new TypeError(`tls options need an https:// baseUrl (or one without a scheme), got ${options.baseUrl}`);
  }
  return options.baseUrl;
}

/** A `google.protobuf.Value` from plain JSON, for fields such as `ToolCall.arguments` or context `data`. */
export function jsonValue(json: JsonValue): Value {
  return fromJson(ValueSchema, json);
}

/** Plain JSON from a `google.protobuf.Value` (`null` when unset). */
export function fromJsonValue(value: Value | undefined): JsonValue {
  return value === undefined ? null : toJson(ValueSchema, value);
}
