// The worker side: serve agents by turning async generators into leased runs.
//
// A handler is an `async function*` taking a `TaskContext` and yielding steps
// (`textDelta`, `message`, `toolCall`, `toolResult`, `usage`, `custom`). For every run it
// leases (PollTask, long-polled) the worker
// - heartbeats in the background with HeartbeatTask(wait), which the server answers at
//   once when the run is cancelled, so a cancel reaches the handler without delay;
// - batches the yielded steps into AppendRunEvents (every `flushIntervalMs` or
//   `batchSize` events, and always before a plan or the end);
// - delivers a cancel as `task.signal` aborting (pass it to fetch, SDK calls, timers);
//   the worker stops waiting for the handler at once and closes the generator at its
//   next `yield` (its `finally` blocks run);
// - ends the attempt: CompleteTask when the generator finishes (the trailing `message`
//   steps as output), FailTask when it throws (retryable only for `RetryableError`),
//   nothing when the lease was lost (the server re-queues the run) or a plan awaits a human.
//
// The worker's own calls ride out a server restart (see lease.ts): a transport failure
// is retried with the same request id until the lease would have run out, and is never
// reported as the handler's failure; PollTask is retried for as long as it takes.
// `stop()` stops polling and lets running handlers finish. A worker process that dies
// simply stops heartbeating: its leases lapse and the runs are retried elsewhere.

import { randomUUID } from "node:crypto";
import { hostname } from "node:os";
import type { MessageInitShape } from "@bufbuild/protobuf";
import { timestampMs } from "@bufbuild/protobuf/wkt";
import { Code } from "@connectrpc/connect";
import { type AgentryClient, type AgentryClientOptions, createAgentryClient } from "./index.js";
import type { FailTaskRequestSchema, Task } from "./gen/agentry/v1/execution_pb.js";
import { StopReason } from "./gen/agentry/v1/execution_pb.js";
import { AgentryError, StaleTaskError, toAgentryError } from "./errors.js";
import { backoffMs, isTransientError, LeaseExpiredError, type LeaseLogger, sleep } from "./lease.js";
import { RetryableError, type Step } from "./steps.js";
import { RunCancelledError, TaskContext } from "./task.js";

export type Handler = (task: TaskContext) => AsyncIterable<Step>;

export interface WorkerOptions {
  /** The server and a WORKER key (and TLS settings), as for `createAgentryClient`. */
  baseUrl?: string;
  apiKey?: string;
  tls?: AgentryClientOptions["tls"];
  /** A client to use instead (then `baseUrl`, `apiKey` and `tls` are ignored). */
  client?: AgentryClient;
  /** Recorded on leased runs; `host/pid` by default. */
  identity?: string;
  /** Runs handled at once. Default 4. */
  concurrency?: number;
  /** How long a PollTask waits for a run (at most 60 s). Default 30 s. */
  pollWaitMs?: number;
  /** How long a lease lasts without a heartbeat (1 s to 10 min). Default 30 s. */
  leaseDurationMs?: number;
  /**
   * How long each HeartbeatTask is held open waiting for a cancel. The server extends the
   * lease to `heartbeatWaitMs + leaseDurationMs` from each heartbeat: how long a crashed
   * worker holds its runs, and how long a server may be out of reach before a live worker
   * gives an attempt up. Default 20 s.
   */
  heartbeatWaitMs?: number;
  /** Events buffered before a flush. Default 100. */
  batchSize?: number;
  /** How long an event may wait in the buffer. Default 50 ms. */
  flushIntervalMs?: number;
  /** Events a handler may yield while a batch is still being sent before its `yield` waits. Default 10 000. */
  maxBuffered?: number;
  /** Deadline of each attempt of a worker call (a heartbeat gets its wait on top). Default 10 s. */
  callTimeoutMs?: number;
  /** Where the worker logs; default: warnings and errors to `console.error`. */
  logger?: LeaseLogger;
}

const defaultLogger: LeaseLogger = {
  info: () => {},
  warn: (m) => console.error(`agentry worker: ${m}`),
  error: (m) => console.error(`agentry worker: ${m}`),
};

function duration(ms: number) {
  return { seconds: BigInt(Math.floor(ms / 1000)), nanos: Math.round((ms % 1000) * 1e6) };
}

function workspaceOf(agent: string): string {
  const parts = agent.split("/");
  if (parts.length !== 4 || parts[0] !== "workspaces" || parts[2] !== "agents") {
    throw new TypeError(`expected workspaces/{w}/agents/{a}, got ${JSON.stringify(agent)}`);
  }
  return parts.slice(0, 2).join("/");
}

/** What became of a handler: finished, stopped by a cancel, failed, or cut off from its lease. */
type Outcome = { kind: "done" } | { kind: "cancelled" } | { kind: "failed"; error: unknown } | { kind: "lost" };

/**
 * Serves agents: leases their runs and drives a handler per run.
 *
 * ```ts
 * const worker = new Worker({ baseUrl, apiKey: workerKey });
 * worker.register("workspaces/acme/agents/echo", async function* (task) {
 *   yield message(task.input.at(-1)?.content ?? "");
 * });
 * await worker.run();
 * ```
 */
export class Worker {
  readonly identity: string;
  private readonly settings: Required<Omit<WorkerOptions, "baseUrl" | "apiKey" | "tls" | "client" | "identity">>;
  private readonly handlers = new Map<string, Handler>();
  private readonly stopping = new AbortController();
  private running: Promise<void> | undefined;

  constructor(private readonly options: WorkerOptions) {
    if (options.client === undefined && options.baseUrl === undefined) {
      throw new TypeError("a Worker needs baseUrl (and apiKey) or client");
    }
    this.identity = options.identity ?? `${hostname()}/${process.pid}`;
    this.settings = {
      concurrency: options.concurrency ?? 4,
      pollWaitMs: options.pollWaitMs ?? 30_000,
      leaseDurationMs: options.leaseDurationMs ?? 30_000,
      heartbeatWaitMs: options.heartbeatWaitMs ?? 20_000,
      batchSize: options.batchSize ?? 100,
      flushIntervalMs: options.flushIntervalMs ?? 50,
      maxBuffered: options.maxBuffered ?? 10_000,
      callTimeoutMs: options.callTimeoutMs ?? 10_000,
      logger: options.logger ?? defaultLogger,
    };
  }

  /** Serves `agent` (`workspaces/{w}/agents/{a}`) with `handler`. */
  register(agent: string, handler: Handler): this {
    const workspace = workspaceOf(agent);
    const first = this.handlers.keys().next();
    if (!first.done && workspaceOf(first.value) !== workspace) {
      throw new TypeError("a worker serves the agents of one workspace (its key's)");
    }
    this.handlers.set(agent, handler);
    return this;
  }

  /** Stops polling; resolves once `run()` has returned (the running handlers have finished). */
  async stop(): Promise<void> {
    this.stopping.abort();
    await this.running?.catch(() => {});
  }

  /**
   * Polls for runs and handles them until `stop()`; rejects on a fatal error (a key that
   * is refused, an agent that does not exist).
   */
  run(): Promise<void> {
    if (this.handlers.size === 0) {
      return Promise.reject(new TypeError("no agent registered"));
    }
    if (this.running !== undefined) {
      return Promise.reject(new Error("the worker is already running"));
    }
    this.running = this.serve();
    return this.running;
  }

  private async serve(): Promise<void> {
    const client =
      this.options.client ??
      createAgentryClient({ baseUrl: this.options.baseUrl!, apiKey: this.options.apiKey, tls: this.options.tls });
    const active = new Map<Promise<void>, TaskContext>();
    let free = this.settings.concurrency;
    let slotFreed: (() => void) | undefined;
    try {
      while (!this.stopping.signal.aborted) {
        while (free === 0) {
          await new Promise<void>((ok) => (slotFreed = ok));
        }
        const task = await this.poll(client);
        if (task === undefined) {
          continue;
        }
        free -= 1;
        const ctx = new TaskContext(task, client, this.attemptSettings());
        const job = this.execute(ctx).finally(() => {
          active.delete(job);
          free += 1;
          slotFreed?.();
          slotFreed = undefined;
        });
        active.set(job, ctx);
      }
    } catch (err) {
      // A fatal error (a refused key …): give the attempts in hand up, as a dead worker
      // would; their leases lapse and the server retries the runs.
      for (const ctx of active.values()) {
        ctx.lost(err);
      }
      throw err;
    } finally {
      await Promise.allSettled(active.keys());
      if (this.options.client === undefined) {
        client.close();
      }
    }
  }

  private attemptSettings() {
    const s = this.settings;
    const log = s.logger;
    return { batchSize: s.batchSize, flushIntervalMs: s.flushIntervalMs, maxBuffered: s.maxBuffered, callTimeoutMs: s.callTimeoutMs, log };
  }

  /**
   * One leased task, or undefined when the wait passed or the worker is stopping.
   * Transport failures (and INTERNAL) are retried with backoff for as long as they last:
   * a worker outlives a server that restarts or is down for a while.
   */
  private async poll(client: AgentryClient): Promise<Task | undefined> {
    const agents = [...this.handlers.keys()];
    const request = {
      parent: workspaceOf(agents[0]!),
      agents,
      identity: this.identity,
      wait: duration(this.settings.pollWaitMs),
      leaseDuration: duration(this.settings.leaseDurationMs),
    };
    let failures = 0;
    const signal = this.stopping.signal;
    while (!signal.aborted) {
      try {
        // A run leased in the instant of a stop is retried once its lease lapses.
        const response = await client.execution.pollTask(request, {
          signal,
          timeoutMs: this.settings.pollWaitMs + this.settings.callTimeoutMs,
        });
        if (failures > 0) {
          this.settings.logger.info(`poll succeeded again after ${failures} failures`);
        }
        return response.task;
      } catch (err) {
        const error = toAgentryError(err);
        if (signal.aborted) {
          return undefined;
        }
        if (!isTransientError(error) && error.code !== Code.Internal) {
          throw error;
        }
        failures += 1;
        if (failures === 1 || failures % 10 === 0) {
          this.settings.logger.warn(`poll failed (${error.rawMessage}); retrying (attempt ${failures + 1})`);
        }
        await sleep(backoffMs(failures, error), signal);
      }
    }
    return undefined;
  }

  private async execute(ctx: TaskContext): Promise<void> {
    const task = ctx.task;
    const log = this.settings.logger;
    const handler = this.handlers.get(task.run?.agent ?? "") ?? this.handlers.get(task.agent?.name ?? "")!;
    log.info(`run ${ctx.run.name}: attempt ${task.attempt} leased`);
    const heartbeatStop = new AbortController();
    const heartbeat = this.heartbeat(ctx, heartbeatStop.signal);
    const execution = ctx.client.execution;
    const token = task.taskToken;
    try {
      const outcome = await this.drive(ctx, handler);
      if (outcome.kind === "lost" || ctx.leaseEnded) {
        return;
      }
      let failure: unknown = outcome.kind === "failed" ? outcome.error : undefined;
      if (outcome.kind !== "done") {
        ctx.flushTrailing(); // an unfinished attempt's messages are events, not output
      }
      try {
        await ctx.flush();
      } catch (err) {
        if (err instanceof StaleTaskError || err instanceof LeaseExpiredError) {
          throw err;
        }
        // The server refused the events (a tool the revision lacks …): the attempt cannot
        // succeed, and a handler's own failure is reported before this one.
        failure ??= err;
      }
      // A batch the timer sent may have been refused after the handler finished.
      failure ??= ctx.failure;
      ctx.ending = true;
      const complete = (req: Parameters<typeof execution.completeTask>[0], opts: object) => execution.completeTask(req, opts);
      if (failure === undefined && outcome.kind === "done") {
        await ctx.lease.call("CompleteTask", complete, { taskToken: token, output: ctx.trailing, requestId: randomUUID() });
      } else if (failure === undefined) {
        // On a CANCELLING run this confirms the cancel: the run ends CANCELLED.
        const request = { taskToken: token, stopReason: StopReason.CANCELLED, requestId: randomUUID() };
        await ctx.lease.call("CompleteTask", complete, request);
      } else {
        log.warn(`run ${ctx.run.name}: attempt ${task.attempt} failed: ${String(failure)}`);
        await ctx.lease.call("FailTask", (req, opts) => execution.failTask(req, opts), failRequest(token, failure));
      }
    } catch (err) {
      if (err instanceof StaleTaskError || err instanceof LeaseExpiredError) {
        log.warn(`run ${ctx.run.name}: lease lost before the attempt ended (${err.message})`);
      } else {
        log.error(`run ${ctx.run.name}: could not end the attempt: ${String(err)}`);
      }
    } finally {
      ctx.ending = true;
      heartbeatStop.abort();
      ctx.close();
      await heartbeat;
    }
  }

  /** Runs the handler to its end, or until a cancel or a lost lease interrupts it. */
  private async drive(ctx: TaskContext, handler: Handler): Promise<Outcome> {
    let steps: AsyncIterator<Step>;
    try {
      steps = handler(ctx)[Symbol.asyncIterator]();
    } catch (error) {
      return { kind: "failed", error };
    }
    const interrupted = new Promise<"interrupted">((ok) => {
      if (ctx.signal.aborted) ok("interrupted");
      ctx.signal.addEventListener("abort", () => ok("interrupted"), { once: true });
    });
    const stopped = (): Outcome => {
      // The generator may be parked at an await that ignores the signal: stop it as soon
      // as it gets back to its yield, without waiting for that here.
      void Promise.resolve(steps.return?.(undefined)).catch(() => {});
      if (ctx.failure !== undefined) return { kind: "failed", error: ctx.failure };
      if (ctx.leaseEnded) return { kind: "lost" };
      return { kind: "cancelled" };
    };
    for (;;) {
      if (ctx.signal.aborted) {
        // Between steps (the worker was busy sending): the cancel is thrown at the yield.
        void Promise.resolve(steps.throw?.(ctx.signal.reason)).catch(() => {});
        return stopped();
      }
      let result: IteratorResult<Step> | "interrupted";
      try {
        result = await Promise.race([steps.next(), interrupted]);
      } catch (error) {
        if (ctx.signal.aborted) {
          return stopped(); // the handler gave up because of the abort (e.g. a fetch that took the signal)
        }
        return ctx.leaseEnded ? { kind: "lost" } : { kind: "failed", error };
      }
      if (result === "interrupted") {
        return stopped();
      }
      if (result.done) {
        return ctx.leaseEnded ? { kind: "lost" } : { kind: "done" };
      }
      if (ctx.leaseEnded) {
        void Promise.resolve(steps.return?.(undefined)).catch(() => {});
        return { kind: "lost" };
      }
      try {
        await ctx.emit(result.value);
      } catch (error) {
        if (error instanceof StaleTaskError || error instanceof LeaseExpiredError) {
          ctx.lost(error);
          continue;
        }
        void Promise.resolve(steps.return?.(undefined)).catch(() => {});
        return { kind: "failed", error };
      }
    }
  }

  /**
   * Renews the lease until the attempt ends, and delivers a cancel. A heartbeat the
   * server cannot answer is retried until the lease runs out; then the attempt is
   * abandoned. After a cancel the server answers at once, so the handler's wind-down is
   * covered by plain renewals, as is the final CompleteTask or FailTask.
   */
  private async heartbeat(ctx: TaskContext, stop: AbortSignal): Promise<void> {
    const execution = ctx.client.execution;
    let waitMs = this.settings.heartbeatWaitMs;
    while (!ctx.leaseEnded && !stop.aborted) {
      try {
        const response = await ctx.lease.call(
          "HeartbeatTask",
          (req, opts) => execution.heartbeatTask(req, opts),
          { taskToken: ctx.task.taskToken, wait: duration(waitMs) },
          { waitMs, signal: stop },
        );
        if (response.leaseExpireTime !== undefined) {
          ctx.lease.grant(timestampMs(response.leaseExpireTime));
        }
        if (response.cancelRequested && !ctx.ending) {
          ctx.cancel();
        }
      } catch (err) {
        if (!stop.aborted && !ctx.ending) {
          ctx.lost(err); // once the attempt is ending, its own last call reports
        }
        return;
      }
      if (ctx.cancelRequested || ctx.ending) {
        waitMs = 0;
        await sleep(Math.max(this.settings.leaseDurationMs / 3, 200), stop);
      }
    }
  }
}

function failRequest(token: string, failure: unknown): MessageInitShape<typeof FailTaskRequestSchema> {
  const requestId = randomUUID();
  if (failure instanceof RetryableError) {
    const request = {
      taskToken: token,
      error: { type: failure.type, message: failure.message, details: failure.details },
      retryable: true,
      requestId,
    };
    return failure.retryAfterMs === undefined
      ? request
      : { ...request, nextRetryDelay: duration(failure.retryAfterMs) };
  }
  // An AgentryError's name is "ConnectError", and a subclass that sets no name of its own
  // is "Error": the class name says more.
  const generic = failure instanceof AgentryError || (failure instanceof Error && failure.name === "Error");
  const type = failure instanceof Error ? (generic ? failure.constructor.name : failure.name) : typeof failure;
  const message =
    failure instanceof AgentryError ? failure.rawMessage : failure instanceof Error ? failure.message : String(failure);
  return { taskToken: token, error: { type, message, details: {} }, retryable: false, requestId };
}

export { RunCancelledError };
