// Drives the `ai` package's chat (AbstractChat, what useChat wraps, with an in-memory state as
// @ai-sdk/react's Chat has a React one) and its DefaultChatTransport, unchanged, against a Tether server.
//
//   node ai_sdk.mjs URL PROGRAM_JSON
//
// PROGRAM: {chatId, headers?, steps: [step…]}:
//   {send: TEXT, stopAfter?: N}   sendMessage (stop() after N chunks: the tab goes away mid-answer)
//   {approve: {approved, reason?}} answer every approval request of the last message; the chat sends
//                                  the answers by itself (sendAutomaticallyWhen)
//   {regenerate: true}            regenerate the last answer
//   {reload: true}                a new chat (a reloaded page): load its messages, then resumeStream()
// Prints one JSON array: per step, the chunks the transport parsed, the chat's messages, status and error.
import {
  AbstractChat,
  DefaultChatTransport,
  lastAssistantMessageIsCompleteWithApprovalResponses,
} from "ai";

const [url, programText] = process.argv.slice(2);
const program = JSON.parse(programText);
const headers = program.headers ?? {};

class MemoryState {
  constructor(messages) {
    this.messages = messages;
    this.status = "ready";
    this.error = undefined;
  }
  pushMessage = (message) => { this.messages = [...this.messages, message]; };
  popMessage = () => { this.messages = this.messages.slice(0, -1); };
  replaceMessage = (index, message) => {
    this.messages = [...this.messages.slice(0, index), message, ...this.messages.slice(index + 1)];
  };
  snapshot = (value) => structuredClone(value);
}

let record = { chunks: [] };
let stopAfter;
let chat;

class RecordingTransport extends DefaultChatTransport {
  processResponseStream(stream) {
    return super.processResponseStream(stream).pipeThrough(
      new TransformStream({
        transform(chunk, controller) {
          record.chunks.push(chunk);
          controller.enqueue(chunk);
          if (record.chunks.length === stopAfter) void chat.stop();
        },
      }),
    );
  }
}

let finished = () => {};
const newChat = (messages) =>
  new (class Chat extends AbstractChat {})({
    id: program.chatId,
    state: new MemoryState(messages),
    transport: new RecordingTransport({ api: `${url}/v1/ai-sdk/chat`, headers }),
    sendAutomaticallyWhen: lastAssistantMessageIsCompleteWithApprovalResponses,
    onFinish: () => finished(),
  });

chat = newChat([]);
const results = [];
for (const step of program.steps) {
  record = { chunks: [] };
  stopAfter = step.stopAfter;
  results.push(record);
  try {
    if (step.send !== undefined) {
      await chat.sendMessage({ text: step.send });
    } else if (step.approve) {
      const done = new Promise((resolve) => { finished = resolve; });
      for (const part of chat.messages.at(-1).parts) {
        if (part.state === "approval-requested") {
          await chat.addToolApprovalResponse({ id: part.approval.id, ...step.approve });
        }
      }
      await done;
    } else if (step.regenerate) {
      await chat.regenerate();
    } else if (step.reload) {
      const response = await fetch(`${url}/v1/ai-sdk/chat/${encodeURIComponent(program.chatId)}`, { headers });
      record.loaded = await response.json();
      chat = newChat(record.loaded.messages);
      await chat.resumeStream();
    }
  } catch (error) {
    record.thrown = String(error?.message ?? error);
  } finally {
    record.messages = structuredClone(chat.messages);
    record.status = chat.status;
    record.error = chat.error ? String(chat.error.message) : null;
  }
}
console.log(JSON.stringify(results));
