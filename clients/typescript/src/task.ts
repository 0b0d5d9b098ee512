// One leased attempt of a run as a handler sees it: its input, the steps it yields turned
// into run events, plans, and the cancel or lost lease that interrupts it.
//
// Steps are buffered and sent in batches (AppendRunEvents) by a timer or when a batch is
// full, one batch at a time, each with its own `requestId` kept across retries, so a batch
// the server already appended is replayed rather than appended twice. While a batch is
// retried (the server is out of reach) the handler keeps running and its steps keep
// buffering, up to `maxBuffered` events; past that its `yield` waits.

import { randomUUID } from "node:crypto";
import type { JsonObject, JsonValue } from "@bufbuild/protobuf";
import { create, fromJson, type MessageInitShape } from "@bufbuild/protobuf";
import { timestampMs, ValueSchema } from "@bufbuild/protobuf/wkt";
import type { AgentryClient } from "./index.js";
import {
  type Approval,
  type Message,
  type ProposePlanResponse,
  type Run,
  type RunEventInput,
  type Task,
  MessageRole,
  MessageSchema,
  RunEventInputSchema,
} from "./gen/agentry/v1/execution_pb.js";
import type { Agent, Instance } from "./gen/agentry/v1/registry_pb.js";
import { StaleTaskError, type AgentryError, toAgentryError } from "./errors.js";
import { Lease, LeaseExpiredError, type LeaseLogger } from "./lease.js";
import type { Step } from "./steps.js";

const MAX_BATCH = 1000; // the server's limit per AppendRunEvents

/** Why a handler's `signal` was aborted: the run was cancelled. */
export class RunCancelledError extends Error {
  constructor(message = "run cancelled") {
    super(message);
    this.name = "RunCancelledError";
  }
}

/** Why a handler's `signal` was aborted: this attempt lost its lease (or its events were refused). */
export class AttemptEndedError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = "AttemptEndedError";
  }
}

/** A plan step as `proposePlan` takes it. */
export interface PlanStepInput {
  tool: string;
  arguments?: JsonValue;
  description?: string;
}

/** The worker settings a TaskContext needs. */
export interface AttemptSettings {
  batchSize: number;
  flushIntervalMs: number;
  maxBuffered: number;
  callTimeoutMs: number;
  log: LeaseLogger;
}

function value(json: JsonValue | undefined) {
  return fromJson(ValueSchema, json ?? null);
}

/** One leased attempt of a run, as the handler sees it. */
export class TaskContext {
  /** Aborted when the run is cancelled (reason: `RunCancelledError`) or the attempt can no longer go on. */
  readonly signal: AbortSignal;
  /** Set once the run was cancelled. */
  cancelRequested = false;
  /** Set once this attempt can no longer write to the run (a plan went to a human, or the lease was lost). */
  leaseEnded = false;
  /** The lease, for calls made under it. */
  readonly lease: Lease;

  /** @internal a background flush failed (the server refused the events). */
  failure: AgentryError | undefined;
  /** @internal CompleteTask or FailTask is under way. */
  ending = false;
  /** @internal Message steps not followed by anything yet: the output if the handler ends now. */
  trailing: Message[] = [];

  private readonly abort = new AbortController();
  private buffer: RunEventInput[] = [];
  private readonly tools = new Map<string, string>();
  private messageIndex = 0;
  private flushChain: Promise<void> = Promise.resolve();
  private flushing = 0;
  private timer: NodeJS.Timeout | undefined;
  private closed = false;

  constructor(
    /** The leased task (run, instance, agent at the pinned revision, deadline). */
    readonly task: Task,
    /** A client for the handler's own calls (reading the transcript, writing a context). */
    readonly client: AgentryClient,
    private readonly settings: AttemptSettings,
  ) {
    this.signal = this.abort.signal;
    const expiresAt = task.leaseExpireTime === undefined ? Date.now() : timestampMs(task.leaseExpireTime);
    this.lease = new Lease(task.run?.name ?? "", task.taskToken, expiresAt, settings.callTimeoutMs, settings.log);
  }

  get run(): Run {
    return this.task.run!;
  }

  /** The instance the run belongs to. */
  get instance(): Instance {
    return this.task.instance!;
  }

  /** The agent at the revision the instance pins (its tools, config schema …). */
  get agent(): Agent {
    return this.task.agent!;
  }

  /** The instance's effective config (its config over the agent's defaults). */
  get config(): JsonObject {
    return this.task.instance?.effectiveConfig ?? {};
  }

  /** The run's input messages. */
  get input(): Message[] {
    return this.run.input;
  }

  get attempt(): number {
    return this.task.attempt;
  }

  /** The decision on this run's plan, when the run resumes after REQUIRES_ACTION. */
  get resume(): Approval | undefined {
    return this.task.resume?.approval;
  }

  /**
   * Proposes tool steps; resolves with the server's answer. `approved` true: go on.
   * False: the run waits for a human and this lease has ended; the handler should
   * return, and the decision comes back as `resume` on a later task.
   */
  async proposePlan(steps: PlanStepInput[]): Promise<ProposePlanResponse> {
    const plan = steps.map((s) => ({ tool: s.tool, arguments: value(s.arguments), description: s.description ?? "" }));
    this.flushTrailing();
    await this.flush();
    const execution = this.client.execution;
    try {
      const response = await this.lease.call(
        "ProposePlan",
        (req, opts) => execution.proposePlan(req, opts),
        { taskToken: this.task.taskToken, steps: plan, requestId: randomUUID() },
      );
      if (!response.approved) {
        this.leaseEnded = true;
      }
      return response;
    } catch (err) {
      if (err instanceof StaleTaskError || err instanceof LeaseExpiredError) {
        this.lost(err);
      }
      throw err;
    }
  }

  /** Sends the buffered events now (the worker also does this on its own). */
  async flush(): Promise<void> {
    const previous = this.flushChain;
    let release!: () => void;
    this.flushChain = new Promise((ok) => (release = ok));
    this.flushing += 1;
    try {
      await previous;
      clearTimeout(this.timer);
      this.timer = undefined;
      while (this.buffer.length > 0) {
        const batch = this.buffer.slice(0, MAX_BATCH);
        const execution = this.client.execution;
        const response = await this.lease.call(
          "AppendRunEvents",
          (req, opts) => execution.appendRunEvents(req, opts),
          { taskToken: this.task.taskToken, events: batch, requestId: randomUUID() },
        );
        this.buffer = this.buffer.slice(batch.length);
        if (response.cancelRequested) {
          this.cancel();
        }
      }
    } finally {
      this.flushing -= 1;
      release();
    }
  }

  // Steps → events.

  /** @internal Turns a step into buffered events; flushes when a batch is full. */
  async emit(step: Step): Promise<void> {
    if (step.type !== "usage") {
      this.flushTrailing();
    }
    switch (step.type) {
      case "textDelta": {
        const messageId = step.messageId || `a${this.attempt}-m${this.messageIndex}`;
        this.add({ case: "messageDelta", value: { messageId, text: step.text } });
        break;
      }
      case "message":
        this.trailing.push(create(MessageSchema, { role: step.role ?? MessageRole.ASSISTANT, content: step.content }));
        this.messageIndex += 1;
        break;
      case "toolCall":
        this.tools.set(step.id, step.tool);
        this.add({
          case: "toolCallStarted",
          value: { toolCall: { id: step.id, tool: step.tool, arguments: value(step.arguments) } },
        });
        break;
      case "toolResult": {
        const tool = this.tools.get(step.id) ?? "";
        this.tools.delete(step.id);
        const call = { id: step.id, tool, result: value(step.result), isError: step.isError ?? false };
        this.add({ case: "toolCallCompleted", value: { toolCall: call } });
        break;
      }
      case "usage":
        this.add({
          case: "usage",
          value: {
            inputTokens: BigInt(step.inputTokens ?? 0),
            outputTokens: BigInt(step.outputTokens ?? 0),
            costUsd: step.costUsd ?? 0,
          },
        });
        break;
      case "custom":
        this.add({ case: "custom", value: { name: step.name, data: step.data ?? {} } });
        break;
      default:
        throw new TypeError(`a handler yielded ${JSON.stringify(step)}, which is not an agentry step`);
    }
    if (this.buffer.length >= this.settings.batchSize) {
      // A batch in flight (perhaps retried through an outage) sends these too when it is
      // done; the handler only waits once the buffer is too full.
      if (this.flushing === 0 || this.buffer.length >= this.settings.maxBuffered) {
        await this.flush();
      }
    }
  }

  /** @internal The trailing messages become events (a later step, a plan, or a failed attempt follows them). */
  flushTrailing(): void {
    for (const message of this.trailing) {
      this.add({ case: "messageCompleted", value: { message } });
    }
    this.trailing = [];
  }

  private add(kind: MessageInitShape<typeof RunEventInputSchema>["kind"]): void {
    this.buffer.push(create(RunEventInputSchema, { kind }));
    if (this.timer === undefined && !this.closed) {
      this.timer = setTimeout(() => void this.flushLater(), this.settings.flushIntervalMs);
    }
  }

  private async flushLater(): Promise<void> {
    this.timer = undefined;
    try {
      await this.flush();
    } catch (err) {
      if (err instanceof StaleTaskError || err instanceof LeaseExpiredError) {
        this.lost(err);
        return;
      }
      const error = toAgentryError(err);
      this.settings.log.warn(`run ${this.run.name}: appending events failed: ${error.rawMessage}`);
      this.failure ??= error;
      this.interrupt(new AttemptEndedError(`appending events failed: ${error.rawMessage}`, { cause: error }));
    }
  }

  /** @internal Stops background sends (the attempt is over). */
  close(): void {
    this.closed = true;
    clearTimeout(this.timer);
    this.timer = undefined;
  }

  // Cancellation.

  /** @internal Delivers a cancel into the handler. */
  cancel(): void {
    if (this.cancelRequested) {
      return;
    }
    this.cancelRequested = true;
    this.settings.log.info(`run ${this.run.name}: cancel requested`);
    this.interrupt(new RunCancelledError());
  }

  /** @internal The lease is gone: the handler is stopped and nothing more is reported. */
  lost(error: unknown): void {
    if (this.leaseEnded) {
      return;
    }
    this.leaseEnded = true;
    const why = error instanceof Error ? error.message : String(error);
    this.settings.log.warn(`run ${this.run.name}: lease lost (${why}); stopping the handler`);
    this.interrupt(new AttemptEndedError(`lease lost: ${why}`, { cause: error }));
  }

  private interrupt(reason: Error): void {
    if (!this.abort.signal.aborted) {
      this.abort.abort(reason);
    }
  }
}
