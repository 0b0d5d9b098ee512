// A worker's hold on one attempt of a run, and the calls it makes under it.
//
// The lease lives in the server's database, not in a server process: a server that
// restarts (a rolling deploy, a crash) still honours it afterwards. So a worker that
// cannot reach the server does not give the attempt up, and never reports its own
// transport failure as the handler's: the handler keeps running, its events stay
// buffered, and every call is retried with jittered backoff and the same `requestId`
// (the server replays a call that did arrive) until the lease the server last granted
// would have run out. Only then is the attempt abandoned: no FailTask; the server
// re-queues the run when it sees the lapse.
//
// Failures of the transport: UNAVAILABLE (server gone, restarting, connection refused or
// reset), DEADLINE_EXCEEDED (no answer in time), and INTERNAL, UNKNOWN, CANCELED or ABORTED without
// the ErrorInfo every error of the server carries (a stream reset by a dying connection).
// Everything else is the server's answer.

import { Code } from "@connectrpc/connect";
import { type AgentryError, AGENTRY_ERROR_DOMAIN, toAgentryError } from "./errors.js";

/** Whether `error` is the transport's (retry the call) rather than the server's answer. */
export function isTransientError(error: AgentryError): boolean {
  if (error.code === Code.Unavailable || error.code === Code.DeadlineExceeded) {
    return true;
  }
  // Without the server's ErrorInfo these come from the transport, not from a decision of the
  // server: connect-node reports a connection reset under an HTTP/2 session as ABORTED.
  const transportCodes = [Code.Internal, Code.Unknown, Code.Canceled, Code.Aborted];
  return transportCodes.includes(error.code) && error.domain !== AGENTRY_ERROR_DOMAIN;
}

/** Thrown when the server stayed out of reach until the lease ran out: the attempt is abandoned. */
export class LeaseExpiredError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = "LeaseExpiredError";
  }
}

/** Backoff between attempts of a worker call: 50-100 ms at first, growing to 0.5-1 s. */
export function backoffMs(failures: number, error: AgentryError, initialMs = 100, maxMs = 1000): number {
  if (error.retryDelayMs !== undefined && error.retryDelayMs > 0) {
    return Math.min(error.retryDelayMs, maxMs);
  }
  const ceiling = Math.min(maxMs, initialMs * 2 ** (failures - 1));
  return ceiling / 2 + (Math.random() * ceiling) / 2;
}

export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal?.aborted) {
      resolve();
      return;
    }
    const done = () => {
      clearTimeout(timer);
      signal?.removeEventListener("abort", done);
      resolve();
    };
    const timer = setTimeout(done, ms);
    signal?.addEventListener("abort", done, { once: true });
  });
}

export interface LeaseLogger {
  info(message: string): void;
  warn(message: string): void;
  error(message: string): void;
}

/** The lease of one attempt: its token, when it runs out, and calls made under it. */
export class Lease {
  private expiresAt: number;

  constructor(
    readonly run: string,
    readonly token: string,
    /** When the lease PollTask granted runs out (wall clock, ms since the epoch). */
    expiresAt: number,
    private readonly callTimeoutMs: number,
    private readonly log: LeaseLogger,
  ) {
    this.expiresAt = expiresAt;
  }

  /** Records a renewal (HeartbeatTask's answer). */
  grant(expiresAt: number): void {
    this.expiresAt = Math.max(this.expiresAt, expiresAt);
  }

  /** Milliseconds until the lease runs out, as far as this worker knows. */
  remainingMs(): number {
    return this.expiresAt - Date.now();
  }

  /**
   * `method(request)`, retried on transport failures until the lease runs out. `waitMs`
   * is how long the server may hold the call by design (a heartbeat's wait); each
   * attempt gets that plus the call timeout. A request that has a `requestId` keeps it
   * across attempts. `signal` stops the call (and its retries) at once.
   *
   * Throws `LeaseExpiredError` when the lease ran out before the server could be
   * reached, else the server's answer as an `AgentryError`.
   */
  async call<Req, Res>(
    name: string,
    method: (request: Req, options: { timeoutMs: number; signal?: AbortSignal }) => Promise<Res>,
    request: Req,
    options: { waitMs?: number; signal?: AbortSignal } = {},
  ): Promise<Res> {
    const waitMs = options.waitMs ?? 0;
    let failures = 0;
    for (;;) {
      // Never wait on one attempt past the lease: the answer would come too late.
      const timeoutMs = Math.max(Math.min(waitMs + this.callTimeoutMs, this.remainingMs()), waitMs + 500);
      try {
        const callOptions = options.signal === undefined ? { timeoutMs } : { timeoutMs, signal: options.signal };
        return await method(request, callOptions);
      } catch (err) {
        const error = toAgentryError(err);
        if (options.signal?.aborted || !isTransientError(error)) {
          throw error;
        }
        failures += 1;
        const delay = backoffMs(failures, error);
        const left = this.remainingMs();
        if (left <= delay) {
          this.log.warn(
            `run ${this.run}: ${name} failed (${error.rawMessage}) and the lease runs out in ` +
              `${Math.max(left, 0)} ms; abandoning the attempt`,
          );
          throw new LeaseExpiredError(
            `${name}: the server was out of reach until the lease ran out (${error.rawMessage})`,
            { cause: error },
          );
        }
        if (failures === 1 || failures % 10 === 0) {
          this.log.warn(
            `run ${this.run}: ${name} failed (${error.rawMessage}); retrying (attempt ${failures + 1}, ` +
              `lease left ${left} ms)`,
          );
        }
        await sleep(delay, options.signal);
      }
    }
  }
}
