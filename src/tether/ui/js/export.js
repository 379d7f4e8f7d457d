// Exporting a thread: its stored history (GET v1/threads/{tid}) as JSON, or as a Markdown document.

/** The JSON export: the thread's fields that say what it is, and its messages exactly as stored. */
export function threadJson(thread) {
  const { id, title, agent, user_id, parent_thread_id, created_at, updated_at, messages } = thread;
  return JSON.stringify({ id, title, agent, user_id, parent_thread_id, created_at, updated_at, messages }, null, 2);
}

/** The Markdown export: a heading per message, its text as written (the answers are Markdown already), tool calls with their results. */
export function threadMarkdown(thread) {
  const results = new Map(thread.messages.filter((m) => m.role === "tool").map((m) => [m.toolCallId, m.content]));
  const lines = [`# ${thread.title || "Untitled"}`, "", `Thread \`${thread.id}\`${thread.agent ? `, agent ${thread.agent}` : ""}.`];
  for (const message of thread.messages) {
    if (message.role === "user") lines.push("", "## User", "", fence(textOf(message.content)), ...attachedLines(message));
    if (message.role !== "assistant") continue;
    lines.push("", "## Assistant");
    if (message.content) lines.push("", textOf(message.content));
    for (const call of message.toolCalls || []) {
      lines.push("", `Tool call \`${call.function.name}\`:`, "", codeBlock(call.function.arguments || "{}", "json"));
      if (results.has(call.id)) lines.push("", "Result:", "", codeBlock(textOf(results.get(call.id))));
    }
  }
  return `${lines.join("\n")}\n`;
}

/** A user message's attachments, one line each: its name (or url), type and size. */
function attachedLines(message) {
  return (message.attachments || []).map((a) => `\n${fence(`Attached: ${a.name || a.url} (${[a.media_type, a.size && `${a.size} bytes`].filter(Boolean).join(", ")})`)}`);
}

/** A fenced code block whose fence is longer than any run of backticks inside it. */
function codeBlock(text, language = "") {
  const longest = Math.max(0, ...(text.match(/`+/g) || []).map((run) => run.length));
  const fence = "`".repeat(Math.max(3, longest + 1));
  return `${fence}${language}\n${text}\n${fence}`;
}

/** A user's words are shown as typed: as Markdown they would be read as markup, so they are quoted. */
function fence(text) {
  return text
    .split("\n")
    .map((line) => `> ${line}`.trimEnd())
    .join("\n");
}

function textOf(content) {
  if (typeof content === "string") return content;
  if (Array.isArray(content)) return content.map((part) => part.text ?? "").join("");
  return "";
}

/** Have the browser save `text` as a file named `name`. */
export function download(name, type, text) {
  const url = URL.createObjectURL(new Blob([text], { type }));
  save(url, name);
  setTimeout(() => URL.revokeObjectURL(url), 60_000);
}

/** Have the browser save what `url` holds as a file named `name`. */
export function save(url, name) {
  const link = document.createElement("a");
  link.href = url;
  link.download = name;
  link.hidden = true;
  document.body.append(link);
  link.click();
  link.remove();
}

/** A file name for a thread: its title in plain letters, else its id. */
export function fileName(thread, extension) {
  const stem = (thread.title || "").normalize("NFKD").replace(/[^\w-]+/g, "-").replace(/^-+|-+$/g, "").slice(0, 60);
  return `${stem || thread.id}.${extension}`;
}
