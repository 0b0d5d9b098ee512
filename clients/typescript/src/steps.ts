// What an agent handler yields, and the error that asks for a retry. A handler is an
// async generator of these steps; the `Worker` turns them into run events
// (AppendRunEvents) and, at the end, into CompleteTask.

import type { JsonObject, JsonValue } from "@bufbuild/protobuf";
import { MessageRole } from "./gen/agentry/v1/execution_pb.js";

/**
 * A piece of streamed text (a `messageDelta` event). `messageId` groups the deltas of one
 * message; by default the worker uses one id per message, moving on after each `message` step.
 */
export interface TextDeltaStep {
  type: "textDelta";
  text: string;
  messageId?: string;
}

/**
 * A complete message that joins the session transcript (`messageCompleted`). The messages
 * a handler yields last (followed by nothing but usage) go with CompleteTask instead and
 * become the run's `output`.
 */
export interface MessageStep {
  type: "message";
  content: string;
  /** Default ASSISTANT. */
  role?: MessageRole;
}

/** The agent calls a tool (`toolCallStarted`); `id` is unique within the run. */
export interface ToolCallStep {
  type: "toolCall";
  id: string;
  tool: string;
  arguments?: JsonValue;
}

/** A tool answered the call `id` (`toolCallCompleted`). */
export interface ToolResultStep {
  type: "toolResult";
  id: string;
  result?: JsonValue;
  isError?: boolean;
}

/** Tokens and cost spent since the last usage step (a `usage` event). */
export interface UsageStep {
  type: "usage";
  inputTokens?: number;
  outputTokens?: number;
  costUsd?: number;
}

/** Anything else worth recording (a `custom` event with a JSON object). */
export interface CustomStep {
  type: "custom";
  name: string;
  data?: JsonObject;
}

export type Step = TextDeltaStep | MessageStep | ToolCallStep | ToolResultStep | UsageStep | CustomStep;

export function textDelta(text: string, messageId?: string): TextDeltaStep {
  return messageId === undefined ? { type: "textDelta", text } : { type: "textDelta", text, messageId };
}

export function message(content: string, role: MessageRole = MessageRole.ASSISTANT): MessageStep {
  return { type: "message", content, role };
}

export function toolCall(id: string, tool: string, args?: JsonValue): ToolCallStep {
  return { type: "toolCall", id, tool, arguments: args ?? null };
}

export function toolResult(id: string, result?: JsonValue, options: { isError?: boolean } = {}): ToolResultStep {
  return { type: "toolResult", id, result: result ?? null, isError: options.isError ?? false };
}

export function usage(spent: Omit<UsageStep, "type">): UsageStep {
  return { type: "usage", ...spent };
}

export function custom(name: string, data: JsonObject = {}): CustomStep {
  return { type: "custom", name, data };
}

export interface RetryableErrorOptions {
  /** A stable classification (RunError.type), e.g. `RateLimited`; default `RetryableError`. */
  type?: string;
  /** Overrides the retry policy's backoff before the next attempt. */
  retryAfterMs?: number;
  /** Recorded with the error (RunError.details). */
  details?: JsonObject;
}

/**
 * Throw from a handler to fail the attempt with `retryable = true`: the run is queued again
 * with backoff unless its retry policy is used up or lists `type` as non-retryable. Any
 * other error fails the run for good.
 */
export class RetryableError extends Error {
  readonly type: string;
  readonly retryAfterMs: number | undefined;
  readonly details: JsonObject;

  constructor(message: string, options: RetryableErrorOptions = {}) {
    super(message);
    this.name = "RetryableError";
    this.type = options.type ?? "RetryableError";
    this.retryAfterMs = options.retryAfterMs;
    this.details = options.details ?? {};
  }
}
