// A resuming reader of a run's event log (ExecutionService.StreamRunEvents).

import { Code, ConnectError, type Client } from "@connectrpc/connect";
import { type RunEvent, RunStatus, ExecutionService } from "./gen/agentry/v1/execution_pb.js";
import { AGENTRY_ERROR_DOMAIN, type AgentryError, toAgentryError } from "./errors.js";

/** Statuses a run never leaves. */
export const TERMINAL_RUN_STATUSES: ReadonlySet<RunStatus> = new Set([
  RunStatus.SUCCEEDED,
  RunStatus.FAILED,
  RunStatus.CANCELLED,
  RunStatus.TIMED_OUT,
]);

/** True for the status_changed event into SUCCEEDED, FAILED, CANCELLED or TIMED_OUT: the log's last event. */
export function isTerminalEvent(event: RunEvent): boolean {
  return event.kind.case === "statusChanged" && TERMINAL_RUN_STATUSES.has(event.kind.value.status);
}

export interface StreamRunEventsOptions {
  /** The run: `workspaces/{w}/projects/{p}/sessions/{s}/runs/{r}`. */
  name: string;
  /** Events with a greater sequence are read; 0 (the default) reads the whole log. */
  afterSequence?: bigint | number;
  /** Stops the iteration (it then throws a CanceledError). */
  signal?: AbortSignal;
  /**
   * Reconnections allowed in a row without receiving an event in between before the last
   * error is thrown. Default 10.
   */
  maxReconnects?: number;
  /** First delay before reconnecting, doubled per failure in a row up to 5 s. Default 100 ms. */
  reconnectDelayMs?: number;
  /** Told about every reconnection, with the error that caused it. */
  onReconnect?: (info: { error: AgentryError; afterSequence: bigint; attempt: number }) => void;
}

type ExecutionClient = Client<typeof ExecutionService>;

/**
 * The events of a run, in order, each once, ending after the terminal status event.
 *
 * When the connection drops (UNAVAILABLE, or a broken HTTP/2 stream), the stream is opened
 * again after the last sequence seen, with backoff; the log is durable and gapless, so
 * nothing is lost or repeated. Errors the server returns (NOT_FOUND, PERMISSION_DENIED,
 * OUT_OF_RANGE …) are thrown as `AgentryError`s. Leaving the loop early cancels the call.
 *
 * ```ts
 * for await (const event of streamRunEvents(client, { name: run.name })) { … }
 * ```
 */
export async function* streamRunEvents(
  client: { execution: ExecutionClient } | ExecutionClient,
  options: StreamRunEventsOptions,
): AsyncGenerator<RunEvent, void, undefined> {
  const execution = "execution" in client ? client.execution : client;
  const maxReconnects = options.maxReconnects ?? 10;
  const firstDelay = options.reconnectDelayMs ?? 100;
  let last = BigInt(options.afterSequence ?? 0);
  let failures = 0;

  for (;;) {
    if (options.signal?.aborted) {
      throw abortError(options.signal);
    }
    const call = new AbortController();
    const cancel = () => call.abort(options.signal?.reason);
    options.signal?.addEventListener("abort", cancel);
    let error: AgentryError;
    try {
      // No deadline: a stream lives as long as the run.
      const stream = execution.streamRunEvents(
        { name: options.name, afterSequence: last },
        { signal: call.signal, timeoutMs: 0 },
      );
      for await (const response of stream) {
        const event = response.event;
        if (event === undefined || event.sequence <= last) {
          continue;
        }
        last = event.sequence;
        failures = 0;
        yield event;
        if (isTerminalEvent(event)) {
          return;
        }
      }
      // The server ended the stream without the terminal event (it was shutting down,
      // or we resumed after the terminal event). Find out which.
      const run = await execution.getRun({ name: options.name });
      if (TERMINAL_RUN_STATUSES.has(run.status) && run.lastSequence <= last) {
        return;
      }
      error = toAgentryError(
        new ConnectError("the event stream ended before the run finished", Code.Unavailable),
      );
    } catch (err) {
      if (options.signal?.aborted) {
        throw abortError(options.signal);
      }
      error = toAgentryError(err);
      if (!isResumable(error)) {
        throw error;
      }
    } finally {
      options.signal?.removeEventListener("abort", cancel);
      call.abort();
    }
    failures += 1;
    if (failures > maxReconnects) {
      throw error;
    }
    options.onReconnect?.({ error, afterSequence: last, attempt: failures });
    await sleep(Math.min(firstDelay * 2 ** (failures - 1), 5000), options.signal);
  }
}

/**
 * Whether a failed stream may be opened again: UNAVAILABLE, or an INTERNAL / UNKNOWN /
 * CANCELED that the transport produced (a reset or closed HTTP/2 stream) rather than the
 * server (whose errors always carry an ErrorInfo of domain `agentry.dev`).
 */
function isResumable(error: AgentryError): boolean {
  if (error.code === Code.Unavailable) {
    return true;
  }
  const fromServer = error.domain === AGENTRY_ERROR_DOMAIN;
  return (
    !fromServer &&
    (error.code === Code.Internal || error.code === Code.Unknown || error.code === Code.Canceled)
  );
}

function sleep(ms: number, signal: AbortSignal | undefined): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) {
      reject(abortError(signal));
      return;
    }
    const onAbort = () => {
      clearTimeout(timer);
      reject(abortError(signal!));
    };
    const timer = setTimeout(() => {
      signal?.removeEventListener("abort", onAbort);
      resolve();
    }, ms);
    signal?.addEventListener("abort", onAbort, { once: true });
  });
}

/** The CanceledError (or the AgentryError it already is) for an aborted signal's reason. */
function abortError(signal: AbortSignal): AgentryError {
  const reason: unknown = signal.reason;
  if (reason instanceof ConnectError) {
    return toAgentryError(reason);
  }
  const message = reason instanceof Error ? reason.message : "the operation was aborted";
  return toAgentryError(new ConnectError(message, Code.Canceled, undefined, undefined, reason));
}
