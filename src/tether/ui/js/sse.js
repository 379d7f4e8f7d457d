// Following a Tether event stream over fetch, resuming from the last seq after any break.
//
// EventSource cannot send an Authorization header, and its reconnects cannot be watched or
// paused, so streams are read with fetch: each frame's `id:` is remembered and sent back as
// Last-Event-ID on the next connection, which makes the server replay exactly what was missed.

import { ApiError, errorOf } from "./errors.js";

/** Splits a text/event-stream into frames ({id, data}); comments become {comment}. */
export class FrameParser {
  constructor() {
    this.buffer = "";
    this.carriedCR = false; // a chunk that ends in "\r" may be half of a "\r\n"
  }

  /** Feed decoded text; returns the frames it completed. */
  push(text) {
    if (this.carriedCR) text = `\r${text}`;
    this.carriedCR = text.endsWith("\r");
    if (this.carriedCR) text = text.slice(0, -1);
    this.buffer += text.replace(/\r\n?/g, "\n");
    const frames = [];
    let end;
    while ((end = this.buffer.indexOf("\n\n")) >= 0) {
      const block = this.buffer.slice(0, end);
      this.buffer = this.buffer.slice(end + 2);
      const frame = parseBlock(block);
      if (frame) frames.push(frame);
    }
    return frames;
  }
}

function parseBlock(block) {
  let id = null;
  const data = [];
  const comments = [];
  for (const line of block.split("\n")) {
    if (line.startsWith(":")) {
      comments.push(line.slice(1).trim());
      continue;
    }
    const colon = line.indexOf(":");
    const field = colon < 0 ? line : line.slice(0, colon);
    let value = colon < 0 ? "" : line.slice(colon + 1);
    if (value.startsWith(" ")) value = value.slice(1);
    if (field === "id") id = value;
    else if (field === "data") data.push(value);
  }
  if (data.length) return { id, data: data.join("\n") };
  if (comments.length) return { comment: comments.join("\n") };
  return null;
}

/**
 * Follow `url` until `signal` aborts, reconnecting with backoff after network errors and server
 * restarts. `onEvent(payload, seq)` gets each event in order; `onState("live" | "reconnecting")`
 * says whether the stream is connected. An HTTP error answer (401, 404, 400…) ends the follow by
 * rejecting with an ApiError, since retrying it would not help.
 *
 * @param {string} url
 * @param {{after?: number|null, headers?: () => object, onEvent: Function, onState?: Function,
 *          signal: AbortSignal, silenceMs?: number}} options
 */
export async function follow(url, { after = null, headers = () => ({}), onEvent, onState = () => {}, signal, silenceMs = 40000 }) {
  let lastId = after;
  let delay = 250;
  while (!signal.aborted) {
    const attempt = new AbortController();
    const stop = () => attempt.abort();
    signal.addEventListener("abort", stop, { once: true });
    // The browser knows first when the network goes: don't wait for the socket to notice.
    globalThis.addEventListener?.("offline", stop);
    // A connection that hears nothing, not even a keep-alive, for this long is dead.
    let watchdog = setTimeout(stop, silenceMs);
    try {
      const response = await fetch(url, {
        headers: { Accept: "text/event-stream", ...headers(), ...(lastId !== null ? { "Last-Event-ID": String(lastId) } : {}) },
        signal: attempt.signal,
        cache: "no-store",
      });
      if (!response.ok) throw await refusal(response);
      onState("live");
      delay = 250;
      const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
      const parser = new FrameParser();
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        clearTimeout(watchdog);
        watchdog = setTimeout(stop, silenceMs);
        for (const frame of parser.push(value)) {
          if (frame.data === undefined) continue;
          const seq = frame.id === null ? null : Number(frame.id);
          onEvent(JSON.parse(frame.data), seq);
          if (seq !== null) lastId = seq;
        }
      }
    } catch (error) {
      if (error instanceof ApiError) throw error;
    } finally {
      clearTimeout(watchdog);
      signal.removeEventListener("abort", stop);
      globalThis.removeEventListener?.("offline", stop);
    }
    if (signal.aborted) break;
    onState("reconnecting");
    await sleep(delay, signal, "online");
    delay = Math.min(delay * 2, 5000);
  }
}

async function refusal(response) {
  const error = await errorOf(response);
  // 502–504 are a server shutting down, restarting or behind a restarting proxy: worth retrying,
  // unlike the others. A plain Error is caught by the reconnect loop.
  return [502, 503, 504].includes(response.status) ? new Error(error.message) : error;
}

/** Resolves after `ms`, or at once when `signal` aborts or the window fires `wakeOn`. */
export function sleep(ms, signal, wakeOn = null) {
  return new Promise((resolve) => {
    const done = () => {
      clearTimeout(timer);
      signal?.removeEventListener("abort", done);
      if (wakeOn) globalThis.removeEventListener?.(wakeOn, done);
      resolve();
    };
    const timer = setTimeout(done, ms);
    signal?.addEventListener("abort", done, { once: true });
    if (wakeOn) globalThis.addEventListener?.(wakeOn, done);
  });
}
