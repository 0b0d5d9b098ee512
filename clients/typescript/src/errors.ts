// Typed errors from the gRPC status details the server attaches to every failure:
// google.rpc.ErrorInfo (stable `reason`, domain `agentry.dev`, metadata) always, plus
// BadRequest (field violations), QuotaFailure or RetryInfo where they apply.

import { Code, ConnectError, type Interceptor } from "@connectrpc/connect";
import {
  BadRequestSchema,
  ErrorInfoSchema,
  QuotaFailureSchema,
  RetryInfoSchema,
} from "./gen/google/rpc/error_details_pb.js";

/** The ErrorInfo domain of errors raised by the Agentry server. */
export const AGENTRY_ERROR_DOMAIN = "agentry.dev";

/** A request field the server refused (google.rpc.BadRequest.FieldViolation). */
export interface FieldViolation {
  /** Path of the field, e.g. `instance.config/temperature`. */
  field: string;
  description: string;
}

/** A quota that was exceeded (google.rpc.QuotaFailure.Violation). */
export interface QuotaViolation {
  subject: string;
  description: string;
}

/**
 * An error returned by (or on the way to) an Agentry server.
 *
 * It is a `ConnectError` (so `code`, `rawMessage`, the response `metadata` headers and the raw
 * `details` are there, and `err instanceof ConnectError` holds), with the decoded status
 * details on top. Use the subclasses (`err instanceof VersionConflictError`) or `code` and
 * `reason` to branch.
 */
export class AgentryError extends ConnectError {
  /** ErrorInfo.reason, e.g. `VERSION_CONFLICT`, `SESSION_BUSY`; empty when the server sent none. */
  readonly reason: string;
  /** ErrorInfo.domain: `agentry.dev` for server errors; empty for transport errors. */
  readonly domain: string;
  /**
   * ErrorInfo.metadata, e.g. `{ current_version: "3" }` or `{ resource: "workspaces/w" }`.
   * (Not `metadata`: on a ConnectError that name holds the response headers and trailers.)
   */
  readonly errorMetadata: Readonly<Record<string, string>>;
  /** BadRequest field violations (INVALID_ARGUMENT). */
  readonly fieldViolations: readonly FieldViolation[];
  /** QuotaFailure violations (RESOURCE_EXHAUSTED). */
  readonly quotaViolations: readonly QuotaViolation[];
  /** RetryInfo.retry_delay in milliseconds, when the server suggested when to retry. */
  readonly retryDelayMs: number | undefined;

  // ConnectError answers `instanceof` structurally (by name and fields), which its
  // subclasses inherit; restore the prototype-chain check so that
  // `err instanceof VersionConflictError` means what it says.
  static override [Symbol.hasInstance](value: unknown): boolean {
    return Function.prototype[Symbol.hasInstance].call(this, value);
  }

  constructor(source: ConnectError) {
    super(source.rawMessage, source.code, source.metadata, undefined, source.cause);
    // Keep the name ConnectError's own `instanceof` check (and ConnectError.from) relies on.
    this.name = "ConnectError";
    this.details = source.details;
    const info = source.findDetails(ErrorInfoSchema)[0];
    this.reason = info?.reason ?? "";
    this.domain = info?.domain ?? "";
    this.errorMetadata = Object.freeze({ ...(info?.metadata ?? {}) });
    this.fieldViolations = source
      .findDetails(BadRequestSchema)
      .flatMap((d) => d.fieldViolations.map((v) => ({ field: v.field, description: v.description })));
    this.quotaViolations = source
      .findDetails(QuotaFailureSchema)
      .flatMap((d) => d.violations.map((v) => ({ subject: v.subject, description: v.description })));
    const delay = source.findDetails(RetryInfoSchema)[0]?.retryDelay;
    this.retryDelayMs =
      delay === undefined ? undefined : Number(delay.seconds) * 1000 + Math.round(delay.nanos / 1e6);
  }
}

/** INVALID_ARGUMENT; see `fieldViolations`. */
export class InvalidArgumentError extends AgentryError {}
/** UNAUTHENTICATED: no, an unknown, a revoked or an expired API key. */
export class UnauthenticatedError extends AgentryError {}
/** PERMISSION_DENIED, e.g. reason `ROLE_NOT_ALLOWED` or `WORKSPACE_MISMATCH`. */
export class PermissionDeniedError extends AgentryError {}
/** NOT_FOUND; `resource` names what is missing. */
export class NotFoundError extends AgentryError {
  get resource(): string | undefined {
    return this.errorMetadata["resource"];
  }
}
/** ALREADY_EXISTS; `resource` names what exists. */
export class AlreadyExistsError extends AgentryError {
  get resource(): string | undefined {
    return this.errorMetadata["resource"];
  }
}
/** FAILED_PRECONDITION, e.g. reason `SESSION_BUSY`, `INVALID_TRANSITION`, `RUN_FINISHED`. */
export class FailedPreconditionError extends AgentryError {}
/** FAILED_PRECONDITION `STALE_TASK`: the worker's task token is no longer current. */
export class StaleTaskError extends FailedPreconditionError {}
/** ABORTED (a concurrency conflict); retry after re-reading. */
export class AbortedError extends AgentryError {}
/** ABORTED `VERSION_CONFLICT`: a compare-and-swap write lost; `currentVersion` is the head now. */
export class VersionConflictError extends AbortedError {
  get currentVersion(): bigint | undefined {
    const v = this.errorMetadata["current_version"];
    return v === undefined || !/^-?\d+$/.test(v) ? undefined : BigInt(v);
  }
}
/** OUT_OF_RANGE: `VERSION_COMPACTED` (a context version below the retention floor), or
 * `SEQUENCE_OUT_OF_RANGE` (StreamRunEvents after a sequence the run has not reached). */
export class OutOfRangeError extends AgentryError {}
/** RESOURCE_EXHAUSTED: a quota; see `quotaViolations` and `retryDelayMs`. */
export class QuotaExceededError extends AgentryError {}
/** UNAVAILABLE: the server (or a dependency of it) cannot be reached now; retryable. */
export class UnavailableError extends AgentryError {}
/** DEADLINE_EXCEEDED: the call's timeout passed. */
export class DeadlineExceededError extends AgentryError {}
/** CANCELED: the call was cancelled (usually by the caller's AbortSignal). */
export class CanceledError extends AgentryError {}
/** INTERNAL (details are logged on the server, never sent) or a broken connection. */
export class InternalError extends AgentryError {}

function errorClass(code: Code, reason: string): new (source: ConnectError) => AgentryError {
  switch (code) {
    case Code.InvalidArgument:
      return InvalidArgumentError;
    case Code.Unauthenticated:
      return UnauthenticatedError;
    case Code.PermissionDenied:
      return PermissionDeniedError;
    case Code.NotFound:
      return NotFoundError;
    case Code.AlreadyExists:
      return AlreadyExistsError;
    case Code.FailedPrecondition:
      return reason === "STALE_TASK" ? StaleTaskError : FailedPreconditionError;
    case Code.Aborted:
      return reason === "VERSION_CONFLICT" ? VersionConflictError : AbortedError;
    case Code.OutOfRange:
      return OutOfRangeError;
    case Code.ResourceExhausted:
      return QuotaExceededError;
    case Code.Unavailable:
      return UnavailableError;
    case Code.DeadlineExceeded:
      return DeadlineExceededError;
    case Code.Canceled:
      return CanceledError;
    case Code.Internal:
      return InternalError;
    default:
      return AgentryError;
  }
}

/**
 * Converts anything a call threw into the matching `AgentryError` subclass (an
 * `AgentryError` is returned as is). Clients made by `createAgentryClient` already throw
 * these; use this with clients built on your own transport.
 */
export function toAgentryError(err: unknown): AgentryError {
  if (err instanceof AgentryError) {
    return err;
  }
  const source = ConnectError.from(err);
  const reason = source.findDetails(ErrorInfoSchema)[0]?.reason ?? "";
  const Class = errorClass(source.code, reason);
  return new Class(source);
}

async function* convertErrors<T>(stream: AsyncIterable<T>): AsyncIterable<T> {
  try {
    yield* stream;
  } catch (err) {
    throw toAgentryError(err);
  }
}

/** An interceptor that turns every error of a call (unary or streamed) into an AgentryError. */
export const agentryErrorInterceptor: Interceptor = (next) => async (req) => {
  try {
    const res = await next(req);
    if (!res.stream) {
      return res;
    }
    return { ...res, message: convertErrors(res.message) };
  } catch (err) {
    throw toAgentryError(err);
  }
};
