// The Tether HTTP API, as the UI uses it: JSON in, JSON out, errors as ApiError.
//
// Every URL is relative to the page (`v1/threads`, not `/v1/threads`), so the UI works wherever
// the app is mounted: at `/`, or under a prefix such as `/chat/` inside another app.

import { ApiError, errorOf } from "./errors.js";
import { follow } from "./sse.js";

const TOKEN_KEY = "tether.token";

export class Api {
  /** @param {(reason: string) => Promise<void>} askForToken called on 401; resolves once a new token is stored. */
  constructor(askForToken) {
    this.askForToken = askForToken;
    // Bumped at each sign-out: a request begun by one user is never answered to, or retried as, the next.
    this.generation = 0;
  }

  get token() {
    return localStorage.getItem(TOKEN_KEY);
  }

  set token(value) {
    if (value) localStorage.setItem(TOKEN_KEY, value);
    else localStorage.removeItem(TOKEN_KEY);
  }

  static get tokenKey() {
    return TOKEN_KEY;
  }

  /** Forget the token; requests still under way end with a "signed_out" ApiError. */
  signOut() {
    this.token = null;
    this.generation += 1;
  }

  headers() {
    return this.token ? { Authorization: `Bearer ${this.token}` } : {};
  }

  #checkGeneration(generation) {
    if (generation !== this.generation) throw new ApiError(401, "signed_out", "Signed out.");
  }

  /** One request; a 401 asks for the token and tries again. Its answer, as JSON. */
  async request(method, path, body = undefined) {
    const response = await this.#fetch(method, path, body);
    return response.status === 204 ? null : response.json();
  }

  async #fetch(method, path, body) {
    const generation = this.generation;
    for (;;) {
      let response;
      try {
        response = await fetch(path, {
          method,
          headers: { ...this.headers(), ...(body !== undefined ? { "Content-Type": "application/json" } : {}) },
          body: body !== undefined ? JSON.stringify(body) : undefined,
          cache: "no-store",
        });
      } catch {
        this.#checkGeneration(generation);
        throw new ApiError(0, "network", "The server cannot be reached. Check that Tether is running.");
      }
      this.#checkGeneration(generation);
      if (response.status === 401) {
        await this.askForToken((await errorOf(response)).message);
        this.#checkGeneration(generation);
        continue;
      }
      if (!response.ok) throw await errorOf(response);
      return response;
    }
  }

  /** Who the caller is: {user, auth} (auth "none" | "token" | "users" | "custom"). */
  me() {
    return this.request("GET", "v1/me");
  }
  /** The agents the server serves: {agents: [{name, description, model, tools}], default}. */
  agents() {
    return this.request("GET", "v1/agents");
  }
  /** A page of the caller's threads, newest first: {threads, next_cursor}; `q` searches them. */
  threads({ q = null, cursor = null, limit = 50 } = {}) {
    const query = new URLSearchParams({ limit: String(limit) });
    if (q) query.set("q", q);
    if (cursor) query.set("cursor", cursor);
    return this.request("GET", `v1/threads?${query}`);
  }
  thread(id) {
    return this.request("GET", `v1/threads/${id}`);
  }
  runs(threadId) {
    return this.request("GET", `v1/threads/${threadId}/runs`);
  }
  run(id) {
    return this.request("GET", `v1/runs/${id}`);
  }
  /**
   * @param {string|null} agent null: the server's default agent
   * @param {string|null} title null: untitled (the first message names it)
   */
  createThread(agent = null, title = null) {
    return this.request("POST", "v1/threads", { ...(agent ? { agent } : {}), ...(title ? { title } : {}) });
  }
  /** A new thread holding this one's history before the user message `messageId`: the new thread. */
  fork(id, messageId) {
    return this.request("POST", `v1/threads/${id}/fork`, { before_message_id: messageId });
  }
  rename(id, title) {
    return this.request("PATCH", `v1/threads/${id}`, { title });
  }
  remove(id) {
    return this.request("DELETE", `v1/threads/${id}`);
  }
  /** @param {string|object[]} input the message's text, or its parts (text and attachments) */
  send(threadId, input) {
    return this.request("POST", `v1/threads/${threadId}/runs`, { input, multitask: "enqueue" });
  }
  /** An attachment's bytes, as a Blob. */
  async attachment(id) {
    return (await this.#fetch("GET", `v1/attachments/${id}`)).blob();
  }
  steer(threadId, input) {
    return this.request("POST", `v1/threads/${threadId}/steer`, { input });
  }
  retry(threadId) {
    return this.request("POST", `v1/threads/${threadId}/retry`);
  }
  cancel(runId) {
    return this.request("POST", `v1/runs/${runId}/cancel`);
  }
  decide(runId, toolCallId, decision) {
    return this.request("POST", `v1/runs/${runId}/approvals`, { decisions: { [toolCallId]: decision } });
  }

  /** Follow an event stream (see sse.js), asking for the token if the server wants one. */
  async follow(path, options) {
    const generation = this.generation;
    let after = options.after ?? null;
    const onEvent = (event, seq) => {
      options.onEvent(event, seq);
      if (seq !== null) after = seq;
    };
    for (;;) {
      try {
        return await follow(path, { ...options, after, onEvent, headers: () => this.headers() });
      } catch (error) {
        if (error.status !== 401) throw error;
        this.#checkGeneration(generation);
        await this.askForToken(error.message);
        this.#checkGeneration(generation);
      }
    }
  }
}
