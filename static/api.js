// Talking to the gateway. Every request is same-origin, carries X-CSRF: 1, and relies on the
// gateway's HttpOnly cookie: this code never sees a token.

/** The session ended (401): the caller should show the sign-in form. */
export class SignedOut extends Error {}

/** The gateway or its store cannot answer right now (network error, 502, 503, 504). */
export class Unavailable extends Error {
  constructor(message, retryAfter) {
    super(message);
    this.retryAfter = retryAfter;
  }
}

/** Any other error answer, with the gateway's problem details when present. */
export class Failed extends Error {
  constructor(status, problem, retryAfter) {
    super((problem && (problem.title || problem.detail)) || `HTTP ${status}`);
    this.status = status;
    this.problem = problem;
    this.retryAfter = retryAfter;
  }
}

async function problemOf(res) {
  try {
    return await res.json();
  } catch {
    return null;
  }
}

/**
 * fetch() for the gateway: JSON in and out, errors as the classes above.
 * `allow401` lets sign-in handle wrong credentials itself.
 */
export async function call(path, { method = 'GET', body, allow401 = false } = {}) {
  const headers = { 'X-CSRF': '1', Accept: 'application/json' };
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  let res;
  try {
    res = await fetch(path, {
      method,
      headers,
      credentials: 'same-origin',
      body: body === undefined ? undefined : JSON.stringify(body),
    });
  } catch {
    throw new Unavailable('The gateway is unreachable. Check your connection.');
  }
  if (res.status === 401 && !allow401) throw new SignedOut();
  if ([502, 503, 504].includes(res.status)) {
    const problem = await problemOf(res);
    throw new Unavailable(
      (problem && problem.detail) || 'The service is temporarily unavailable.',
      Number(res.headers.get('Retry-After')) || undefined,
    );
  }
  if (!res.ok) {
    const retryAfter = Number(res.headers.get('Retry-After')) || undefined;
    throw new Failed(res.status, await problemOf(res), retryAfter);
  }
  if (res.status === 204) return null;
  return res.json();
}
