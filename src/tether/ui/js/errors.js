// The server's error answers: `{error: {code, message}}` with an HTTP status.

/** An error answer: `status` and the server's `{error: {code, message}}`. */
export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

/** The ApiError a non-OK response carries (a proxy's page without Tether's JSON keeps its status line). */
export async function errorOf(response) {
  try {
    const body = await response.json();
    return new ApiError(response.status, body.error.code, body.error.message);
  } catch {
    return new ApiError(response.status, `http_${response.status}`, response.statusText || "request failed");
  }
}
