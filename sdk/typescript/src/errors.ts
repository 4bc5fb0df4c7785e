/** Errors, one class per wire `code` of the API's error body. */

export interface ErrorInit {
  status?: number;
  code?: string;
  requestId?: string;
  hint?: string;
  body?: Record<string, unknown>;
  retryAfter?: number;
}

/** An error the server answered, or a stream ended with. */
export class StacyVMError extends Error {
  static code = "";
  readonly status: number;
  /** The wire code, such as "NOT_FOUND". */
  readonly code: string;
  /** The request's ID, to quote in a bug report. */
  readonly requestId: string;
  /** The server's advice, when it gave some. */
  readonly hint: string;
  readonly body: Record<string, unknown>;
  /** Seconds from the server's Retry-After, when it sent one. */
  readonly retryAfter?: number;

  constructor(message: string, init: ErrorInit = {}) {
    super(message);
    this.name = new.target.name;
    this.status = init.status ?? 0;
    this.code = init.code || (new.target as typeof StacyVMError).code;
    this.requestId = init.requestId ?? "";
    this.hint = init.hint ?? "";
    this.body = init.body ?? {};
    this.retryAfter = init.retryAfter;
  }
}

export class BadRequestError extends StacyVMError { static code = "BAD_REQUEST"; }
/** A missing or wrong API key (401). */
export class AuthError extends StacyVMError { static code = "UNAUTHORIZED"; }
/** The page's Origin is not in the server's cors_origins (403). */
export class ForbiddenError extends StacyVMError { static code = "FORBIDDEN"; }
export class NotFoundError extends StacyVMError { static code = "NOT_FOUND"; }
export class SandboxDestroyedError extends NotFoundError { static code = "SANDBOX_DESTROYED"; }
export class FileNotFoundError extends NotFoundError { static code = "FILE_NOT_FOUND"; }
export class MethodNotAllowedError extends StacyVMError { static code = "METHOD_NOT_ALLOWED"; }
/** A buffered command ran past its timeout (408); `result` has what it printed. */
export class ExecTimeoutError extends StacyVMError {
  static code = "TIMEOUT";
  result?: import("./types.js").ExecResult;
}
export class ConflictError extends StacyVMError { static code = "CONFLICT"; }
/** A body over the limit (413) or too many sandboxes (429). */
export class LimitError extends StacyVMError { static code = "RESOURCE_LIMIT"; }
export class MisdirectedRequestError extends StacyVMError { static code = "MISDIRECTED_REQUEST"; }
export class UnsupportedMediaTypeError extends StacyVMError { static code = "UNSUPPORTED_MEDIA_TYPE"; }
export class UnimplementedError extends StacyVMError { static code = "UNIMPLEMENTED"; }
/** The provider's runtime is down or missing (503). */
export class UnavailableError extends StacyVMError { static code = "UNAVAILABLE"; }
export class InternalError extends StacyVMError { static code = "INTERNAL_ERROR"; }
/** A stream ended without its exit frame. */
export class IncompleteStreamError extends StacyVMError {}

const classes = [
  BadRequestError, AuthError, ForbiddenError, NotFoundError, SandboxDestroyedError, FileNotFoundError,
  MethodNotAllowedError, ExecTimeoutError, ConflictError, LimitError, MisdirectedRequestError,
  UnsupportedMediaTypeError, UnimplementedError, UnavailableError, InternalError,
];

/** Error classes by wire code. */
export const ERRORS: Record<string, typeof StacyVMError> = Object.fromEntries(classes.map((c) => [c.code, c]));

const byStatus: Record<number, typeof StacyVMError> = {
  400: BadRequestError, 401: AuthError, 403: ForbiddenError, 404: NotFoundError, 405: MethodNotAllowedError,
  408: ExecTimeoutError, 409: ConflictError, 413: LimitError, 415: UnsupportedMediaTypeError,
  421: MisdirectedRequestError, 429: LimitError, 501: UnimplementedError, 503: UnavailableError,
};

/** The typed error for an HTTP error answer: by wire code, else by status. */
export function errorFrom(status: number, text: string, headers?: Headers): StacyVMError {
  let data: Record<string, unknown> = {};
  try {
    const parsed = JSON.parse(text);
    if (parsed && typeof parsed === "object") data = parsed;
  } catch {
    // not JSON: a proxy's page, say
  }
  const code = typeof data.code === "string" ? data.code : "";
  const cls = ERRORS[code] ?? byStatus[status] ?? (status >= 500 ? InternalError : StacyVMError);
  const ra = headers?.get("retry-after");
  return new cls(String(data.message ?? (text.slice(0, 200) || `HTTP ${status}`)), {
    status,
    code: code || cls.code,
    requestId: String(data.request_id ?? headers?.get("x-request-id") ?? ""),
    hint: String(data.hint ?? ""),
    body: data,
    retryAfter: ra && !Number.isNaN(Number(ra)) ? Number(ra) : undefined,
  });
}

/** The typed error for a stream's error frame. */
export function errorFromFrame(f: Record<string, unknown>): StacyVMError {
  const code = String(f.code ?? "");
  const cls = ERRORS[code] ?? StacyVMError;
  return new cls(String(f.message ?? "stream failed"), {
    code, requestId: String(f.request_id ?? ""), hint: String(f.hint ?? ""), body: f,
  });
}
