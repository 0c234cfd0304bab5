/**
 * One error type for everything the user can cause or fix. `code` is stable (clients and tests
 * key on it), `message` is for people, `httpStatus` is what the API answers with.
 */
export class KagamiError extends Error {
  constructor(
    readonly code: string,
    message: string,
    readonly httpStatus = 400,
    options?: { cause?: unknown },
  ) {
    super(message, options);
    this.name = 'KagamiError';
  }
}

/** The input file (video or image) could not be used: not a video, truncated, unknown codec, too big. */
export class InvalidMediaError extends KagamiError {
  constructor(readonly file: string, reason: string, options?: { cause?: unknown }) {
    super('invalid_media', `${file}: ${reason}`, 422, options);
  }
}

export class NotFoundError extends KagamiError {
  constructor(what: string, id: string) {
    super('not_found', `${what} not found: ${id}`, 404);
  }
}

export class ValidationError extends KagamiError {
  constructor(message: string) {
    super('invalid_request', message, 400);
  }
}

/** The reference library is missing, unreadable, or was built with another model. */
export class LibraryError extends KagamiError {
  constructor(code: string, message: string) {
    super(code, message, 409);
  }
}

export function isKagamiError(e: unknown): e is KagamiError {
  return e instanceof KagamiError;
}
