// Folding a thread's AG-UI events into its transcript.
//
// This mirrors src/tether/transcript.py (the reference fold): text and tool-call events append to
// messages, a CUSTOM tether.attachments gives a user message its `attachments`, and a
// MESSAGES_SNAPSHOT replaces everything folded so far. Folding a thread's log from
// its first event renders the same messages as the server's stored history (DESIGN.md invariant 3),
// and the browser tests check this module against the server on real threads.

export class Transcript {
  /** @param {object[]} messages AG-UI messages to start from (a stored history), copied. */
  constructor(messages = []) {
    this.reset(messages);
  }

  reset(messages) {
    this.messages = messages.map((m) => structuredClone(m));
    this.byId = new Map(this.messages.map((m) => [m.id, m]));
    this.calls = new Map();
    for (const m of this.messages) for (const c of m.toolCalls || []) this.calls.set(c.id, c);
  }

  /** Apply one event. Events that do not change the transcript are ignored. */
  apply(event) {
    switch (event.type) {
      case "TEXT_MESSAGE_START":
        this.#message(event.messageId, event.role || "assistant");
        break;
      case "TEXT_MESSAGE_CONTENT":
        this.#message(event.messageId, "assistant").content += event.delta;
        break;
      case "TOOL_CALL_START": {
        const parentId = event.parentMessageId || event.toolCallId;
        const parent = this.#message(parentId, "assistant");
        const call = { id: event.toolCallId, type: "function", function: { name: event.toolCallName, arguments: "" } };
        (parent.toolCalls ||= []).push(call);
        this.calls.set(call.id, call);
        break;
      }
      case "TOOL_CALL_ARGS": {
        const call = this.calls.get(event.toolCallId);
        if (call) call.function.arguments += event.delta;
        break;
      }
      case "TOOL_CALL_RESULT": {
        const message = { id: event.messageId, role: "tool", content: event.content, toolCallId: event.toolCallId };
        this.messages.push(message);
        this.byId.set(message.id, message);
        break;
      }
      case "CUSTOM": {
        const message = event.name === "tether.attachments" ? this.byId.get(event.value.messageId) : null;
        if (message) message.attachments = event.value.attachments;
        break;
      }
      case "MESSAGES_SNAPSHOT":
        this.reset(event.messages);
        break;
      default:
        break;
    }
  }

  #message(id, role) {
    let message = this.byId.get(id);
    if (!message) {
      message = { id, role, content: "" };
      this.messages.push(message);
      this.byId.set(id, message);
    }
    return message;
  }
}

/** The transcript of a list of events, folded from an empty history. */
export function fold(events) {
  const transcript = new Transcript();
  for (const event of events) transcript.apply(event);
  return transcript.messages;
}
