// One open thread in the browser: its folded transcript, how far the stream got, and what the
// runs on it are doing. No DOM here; view.js draws what this holds.
//
// The session is saved to sessionStorage as one record (transcript and seq together), so a
// reloaded page draws the chat at once and resumes the stream exactly after the saved seq.

import { Transcript } from "./fold.js";

const DENIED = "The user denied this tool call";
const UNKNOWN = "The outcome of this tool call is unknown";
const NOT_RUN = "Not run:";
const INTERRUPTED = "The tool call was interrupted"; // pydantic-ai's words for a call cut off by a stop
const VERSION = 2; // 2: message ids are the log's (the server's GET gives them too), so a fork can name one

export class ThreadSession {
  constructor(threadId, messages = [], seq = 0) {
    this.threadId = threadId;
    this.transcript = new Transcript(messages);
    this.seq = seq;
    this.timings = {}; // toolCallId -> {start, end} (ms), from the events seen
    this.run = null; // {id, status, error} of the latest run the stream has shown
    this.pending = []; // calls waiting for approval: {toolCallId, toolName, args, decision}
    this.usage = {}; // runId -> {usage, durationMs}: what each run used (GET v1/runs/{rid} → usage)
  }

  static key(threadId) {
    return `tether.thread.${threadId}`;
  }

  /** The saved session of a thread in this tab, or null. */
  static restore(threadId) {
    try {
      const saved = JSON.parse(sessionStorage.getItem(ThreadSession.key(threadId)));
      if (!saved || saved.version !== VERSION) return null;
      const session = new ThreadSession(threadId, saved.messages, saved.seq);
      session.timings = saved.timings;
      session.usage = saved.usage ?? {};
      return session;
    } catch {
      return null;
    }
  }

  save() {
    const record = { version: VERSION, seq: this.seq, messages: this.transcript.messages, timings: this.timings, usage: this.usage };
    try {
      sessionStorage.setItem(ThreadSession.key(this.threadId), JSON.stringify(record));
    } catch {
      // Storage full: a reload then replays the stream instead, which is slower but exact.
    }
  }

  static forget(threadId) {
    sessionStorage.removeItem(ThreadSession.key(threadId));
  }

  /** Forget every thread this tab saved (at sign-out: the next user must not see them). */
  static forgetAll() {
    const prefix = ThreadSession.key("");
    for (const key of Object.keys(sessionStorage)) if (key.startsWith(prefix)) sessionStorage.removeItem(key);
  }

  /** What the thread's runs used, as the API lists them: the runs the stream has not told of yet. */
  learnUsage(runs) {
    for (const run of runs) {
      if (!run.usage || this.usage[run.id]) continue;
      const took = run.started_at && run.finished_at ? Math.round((run.finished_at - run.started_at) * 1000) : null;
      this.usage[run.id] = { usage: run.usage, durationMs: took };
    }
  }

  /** The whole thread's usage: {runs, requests, tokens}. */
  totalUsage() {
    const all = Object.values(this.usage);
    return {
      runs: all.length,
      requests: all.reduce((n, u) => n + u.usage.requests, 0),
      tokens: all.reduce((n, u) => n + u.usage.total_tokens, 0),
    };
  }

  /** Apply the event with sequence number `seq` from the thread stream. */
  apply(event, seq) {
    this.transcript.apply(event);
    if (seq !== null) this.seq = seq;
    const at = event.timestamp ?? Date.now();
    switch (event.type) {
      case "RUN_STARTED":
        this.run = { id: event.runId, status: "running", error: null };
        // Calls that were waiting for approval start now, not when the model asked for them.
        for (const timing of Object.values(this.timings)) if (timing.end === undefined) timing.start = at;
        break;
      case "RUN_FINISHED":
        if (event.outcome?.type === "interrupt") this.#setRun(event.runId, "awaiting_approval");
        else if (this.run?.status !== "cancelled") this.#setRun(event.runId, "completed");
        break;
      case "RUN_ERROR":
        this.#setRun(event.runId ?? this.run?.id, "failed", event.message);
        break;
      case "TOOL_CALL_END":
        this.timings[event.toolCallId] = { start: at };
        break;
      case "TOOL_CALL_RESULT":
        if (this.timings[event.toolCallId]) this.timings[event.toolCallId].end = at;
        break;
      case "CUSTOM":
        if (event.name === "tether.run_cancelled") this.#setRun(this.run?.id, "cancelled", event.value.reason);
        if (event.name === "tether.approval_requested") {
          this.pending = event.value.calls.map((c) => ({ ...c, decision: null }));
        }
        if (event.name === "tether.usage") this.usage[event.value.runId] = { usage: event.value.usage, durationMs: event.value.durationMs };
        break;
      default:
        break;
    }
  }

  #setRun(id, status, error = null) {
    this.run = { id: id ?? null, status, error };
  }
}

/**
 * What to draw: user and assistant messages, with each tool call's result folded into its card.
 *
 * @param {object[]} messages AG-UI messages
 * @param {{timings?: object, pending?: object[], active?: boolean, usage?: object}} context usage: runId -> {usage, durationMs}
 */
export function chatBlocks(messages, { timings = {}, pending = [], active = false, usage = {} } = {}) {
  const results = new Map(messages.filter((m) => m.role === "tool").map((m) => [m.toolCallId, m.content]));
  const used = new Map(Object.values(usage).filter((u) => u.usage.message_id).map((u) => [u.usage.message_id, u]));
  const waiting = new Set(pending.filter((p) => !p.decision).map((p) => p.toolCallId));
  const blocks = [];
  for (const message of messages) {
    if (message.role === "user") {
      blocks.push({ kind: "user", id: message.id, text: textOf(message.content), attachments: message.attachments || [] });
    }
    if (message.role !== "assistant") continue;
    const calls = (message.toolCalls || []).map((call) => {
      const result = results.get(call.id);
      const timing = timings[call.id];
      return {
        id: call.id,
        name: call.function.name,
        args: call.function.arguments,
        result: result ?? null,
        status: callStatus(result, waiting.has(call.id), active),
        durationMs: timing && timing.end !== undefined ? timing.end - timing.start : null,
      };
    });
    if (message.content || calls.length) {
      blocks.push({ kind: "assistant", id: message.id, text: message.content || "", calls, usage: used.get(message.id) ?? null });
    }
  }
  return blocks;
}

function callStatus(result, waiting, active) {
  if (waiting) return "awaiting approval";
  if (result === undefined) return active ? "running" : "failed";
  if (result.startsWith(DENIED)) return "denied";
  if (result.startsWith(UNKNOWN)) return "unknown";
  if (result.startsWith(NOT_RUN)) return "not run";
  if (result.startsWith(INTERRUPTED)) return "interrupted";
  return "done";
}

function textOf(content) {
  if (typeof content === "string") return content;
  if (Array.isArray(content)) return content.map((part) => part.text ?? "").join("");
  return "";
}

/** The status a thread list shows: idle, queued, running, awaiting_approval or failed. */
export function threadStatus(runStatus) {
  if (!runStatus || runStatus === "completed" || runStatus === "cancelled") return "idle";
  return runStatus;
}

export const ACTIVE = new Set(["queued", "running", "awaiting_approval"]);
