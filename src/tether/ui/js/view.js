// Drawing: the thread list, the messages with their tool cards, and the approval panel.
//
// Each function takes plain data and updates the DOM in place, touching only what changed, so a
// message that streams in word by word does not redraw the chat, and an open tool card or a
// half-typed denial reason survives the next event.

import { drawAttachments } from "./attachments.js";
import { copyButton } from "./copy.js";
import { changes, check } from "./schema.js";
import { StreamedMarkdown } from "./streamed.js";

/** Each answer's view of its Markdown, drawn a block at a time as it streams (see streamed.js). */
const answers = new WeakMap();

/**
 * @param {HTMLElement} list
 * @param {object[]} threads newest first
 * @param {string|null} currentId
 * @param {(thread: object) => string} agentLabel the agent to name beside a thread ("": none)
 */
export function drawThreadList(list, threads, currentId, agentLabel = () => "") {
  const old = new Map([...list.children].map((li) => [li.dataset.threadId, li]));
  let previous = null;
  for (const thread of threads) {
    let li = old.get(thread.id);
    old.delete(thread.id);
    if (!li) {
      li = document.createElement("li");
      li.dataset.threadId = thread.id;
      li.innerHTML = `<a><span class="dot"></span><span class="title"></span><span class="branch-tag" title="A branch of another thread">branch</span><span class="agent" data-testid="thread-agent"></span></a>`;
    }
    const link = li.firstElementChild;
    link.href = `#/t/${thread.id}`;
    if (thread.id === currentId) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
    link.title = statusLabel(thread.status);
    li.querySelector(".dot").dataset.status = thread.status;
    li.dataset.status = thread.status;
    li.querySelector(".title").textContent = thread.title || "Untitled";
    li.querySelector(".branch-tag").hidden = !thread.parent;
    const agent = li.querySelector(".agent");
    agent.textContent = agentLabel(thread);
    agent.hidden = !agent.textContent;
    // Rows already in place stay put: a row taken out and put back would lose the keyboard's focus.
    const expected = previous ? previous.nextSibling : list.firstChild;
    if (expected !== li) list.insertBefore(li, expected);
    previous = li;
  }
  for (const li of old.values()) li.remove();
}

/**
 * The agent picker beside "New thread": shown only when the server has more than one agent.
 * A choice made stays chosen across redraws.
 *
 * @param {HTMLSelectElement} select
 * @param {{agents: object[], default: string} | null} served
 */
export function drawAgentPicker(select, served) {
  const agents = served?.agents ?? [];
  select.hidden = agents.length < 2;
  const signature = JSON.stringify(agents.map((a) => [a.name, a.description]));
  if (select.dataset.signature === signature) return;
  select.dataset.signature = signature;
  const chosen = select.value;
  select.replaceChildren(
    ...agents.map((agent) => {
      const option = document.createElement("option");
      option.value = agent.name;
      option.textContent = agent.name;
      option.title = agent.description || "";
      return option;
    }),
  );
  select.value = agents.some((a) => a.name === chosen) ? chosen : served?.default ?? "";
}

export function statusLabel(status) {
  return { queued: "queued", running: "running", awaiting_approval: "waiting for approval", failed: "failed" }[status] || "idle";
}

/**
 * @param {HTMLOListElement} list
 * @param {object[]} blocks from chatBlocks()
 * @param {boolean} streaming whether the last assistant message is still being written
 */
export function drawMessages(list, blocks, streaming, { editable = false, onEdit = () => {}, loadAttachment = null } = {}) {
  const nearBottom = list.scrollHeight - list.scrollTop - list.clientHeight < 80;
  const old = new Map([...list.children].map((li) => [li.dataset.key, li]));
  const lastAssistant = blocks.findLastIndex((b) => b.kind === "assistant");
  let previous = null;
  blocks.forEach((block, index) => {
    const key = `${block.kind}:${block.id}`;
    let li = old.get(key);
    old.delete(key);
    if (!li) {
      li = document.createElement("li");
      li.dataset.key = key;
      li.dataset.role = block.kind;
      li.className = `message ${block.kind}`;
    }
    li.classList.toggle("streaming", streaming && index === lastAssistant && index === blocks.length - 1);
    if (block.kind === "user") drawUser(li, block, editable, onEdit, loadAttachment);
    else drawAssistant(li, block);
    const expected = previous ? previous.nextSibling : list.firstChild;
    if (expected !== li) list.insertBefore(li, expected);
    previous = li;
  });
  for (const li of old.values()) li.remove();
  if (nearBottom) list.scrollTop = list.scrollHeight;
}

/**
 * A user's message and its attachments, with an Edit button while the thread is idle: editing it
 * opens the message in a box; saving it gives `onEdit(messageId, text)` the new text (which branches
 * the thread from there).
 */
function drawUser(li, block, editable, onEdit, loadAttachment) {
  const signature = JSON.stringify([block.text, block.attachments.map((a) => a.id ?? a.url)]);
  if (li.dataset.signature !== signature) {
    li.dataset.signature = signature;
    const bubble = document.createElement("div");
    bubble.className = "bubble";
    bubble.textContent = block.text; // a user's words are shown as typed, never as HTML
    bubble.hidden = !block.text;
    const attached = document.createElement("ul");
    attached.className = "attachments";
    attached.setAttribute("aria-label", "Attachments");
    drawAttachments(attached, block.attachments, loadAttachment);
    const edit = document.createElement("button");
    edit.type = "button";
    edit.className = "quiet edit";
    edit.dataset.testid = "edit-message";
    edit.textContent = "Edit";
    edit.setAttribute("aria-label", "Edit this message (the edited message is answered in a new branch)");
    edit.addEventListener("click", () => openEditor(li, block, onEdit));
    li.replaceChildren(bubble, attached, edit);
  }
  const editing = Boolean(li.querySelector(".editor"));
  li.querySelector(".edit").hidden = !editable || editing;
  if (!editable && editing) closeEditor(li, false);
}

function openEditor(li, block, onEdit) {
  const editor = document.createElement("form");
  editor.className = "editor";
  editor.innerHTML = `
    <textarea class="edit-text" rows="3" aria-label="Edited message" data-testid="edit-text"></textarea>
    <div class="editor-actions">
      <button type="submit" class="primary" data-testid="edit-save">Send in a new branch</button>
      <button type="button" class="cancel">Cancel</button>
      <span class="error" role="alert"></span>
    </div>`;
  const text = editor.querySelector("textarea");
  text.value = block.text;
  editor.addEventListener("submit", (event) => {
    event.preventDefault();
    const edited = text.value.trim();
    if (!edited && !block.attachments.length) return; // its attachments go with it to the branch
    for (const button of editor.querySelectorAll("button")) button.disabled = true;
    onEdit(block.id, edited, (message) => {
      editor.querySelector(".error").textContent = message;
      for (const button of editor.querySelectorAll("button")) button.disabled = false;
    });
  });
  editor.querySelector(".cancel").addEventListener("click", () => closeEditor(li, true));
  text.addEventListener("keydown", (event) => {
    if (event.key === "Escape") {
      event.stopPropagation(); // closes the editor; does not stop a run
      closeEditor(li, true);
    } else if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      editor.requestSubmit();
    }
  });
  li.querySelector(".bubble").hidden = true;
  li.querySelector(".edit").hidden = true;
  li.append(editor);
  text.focus();
}

function closeEditor(li, refocus) {
  li.querySelector(".editor")?.remove();
  const bubble = li.querySelector(".bubble");
  bubble.hidden = !bubble.textContent;
  const edit = li.querySelector(".edit");
  if (refocus) {
    edit.hidden = false;
    edit.focus();
  }
}

function drawAssistant(li, block) {
  let text = li.querySelector(":scope > .text");
  if (!text) {
    text = document.createElement("div");
    text.className = "text";
    li.prepend(text);
  }
  if (!answers.has(text)) answers.set(text, new StreamedMarkdown(text));
  answers.get(text).update(block.text);
  text.hidden = !block.text;
  const cards = new Map([...li.querySelectorAll(":scope > .tool")].map((card) => [card.dataset.callId, card]));
  for (const call of block.calls) {
    let card = cards.get(call.id);
    cards.delete(call.id);
    if (!card) {
      card = toolCard(call.id);
      li.append(card);
    }
    drawToolCard(card, call);
  }
  for (const card of cards.values()) card.remove();
  drawFoot(li, block, answers.get(text));
}

/** Under an answer: what its run used (the model, requests, tokens, how long the run took), and Copy. */
function drawFoot(li, block, answer) {
  let foot = li.querySelector(":scope > .foot");
  if (!foot) {
    foot = document.createElement("div");
    foot.className = "foot";
    foot.append(copyButton("Copy this answer as Markdown", () => answer.text));
  }
  li.append(foot); // last, after any tool card added since
  foot.querySelector(".copy").hidden = !block.text;
  foot.hidden = !block.text && !block.usage;
  let line = foot.querySelector(".usage");
  if (!block.usage) {
    line?.remove();
    return;
  }
  if (!line) {
    line = document.createElement("p");
    line.className = "usage";
    line.dataset.testid = "usage";
    foot.prepend(line);
  }
  line.textContent = usageLine(block.usage.usage, block.usage.durationMs);
}

export function usageLine(usage, durationMs = null) {
  const parts = [
    usage.model,
    plural(usage.requests, "request"),
    `${count(usage.input_tokens)} in + ${count(usage.output_tokens)} out tokens`,
    durationMs === null || durationMs === undefined ? null : formatDuration(durationMs),
  ];
  return parts.filter(Boolean).join(" · ");
}

function plural(n, word) {
  return `${count(n)} ${word}${n === 1 ? "" : "s"}`;
}

function count(n) {
  return n.toLocaleString("en-US");
}

/** The thread's total: runs, model requests and tokens. */
export function drawThreadUsage(element, total) {
  element.hidden = total.runs === 0;
  element.textContent = total.runs ? `${plural(total.runs, "run")} · ${plural(total.requests, "request")} · ${count(total.tokens)} tokens` : "";
}

function toolCard(callId) {
  const card = document.createElement("details");
  card.className = "tool";
  card.dataset.callId = callId;
  card.dataset.testid = "tool-card";
  card.innerHTML = `<summary><span class="name"></span><span class="args"></span><span class="duration"></span><span class="state"></span></summary><pre class="result" tabindex="0"></pre>`;
  return card;
}

function drawToolCard(card, call) {
  card.dataset.status = call.status;
  card.querySelector(".name").textContent = call.name;
  card.querySelector(".args").textContent = compactArgs(call.args);
  card.querySelector(".args").title = call.args;
  card.querySelector(".state").textContent = call.status;
  card.querySelector(".duration").textContent = call.durationMs === null ? "" : formatDuration(call.durationMs);
  card.querySelector(".result").textContent = call.result ?? "No result yet.";
}

function compactArgs(args) {
  try {
    return JSON.stringify(JSON.parse(args || "{}"));
  } catch {
    return args;
  }
}

function formatDuration(ms) {
  return ms < 1000 ? `${Math.max(0, Math.round(ms))} ms` : `${(ms / 1000).toFixed(1)} s`;
}

/**
 * The approval panel: one row per pending call, each decided on its own, its arguments editable.
 *
 * @param {HTMLElement} panel
 * @param {object[]} pending [{toolCallId, toolName, args, decision}]
 * @param {(call: object, decision: object) => void} onDecide
 * @param {(toolName: string) => object|null} schemaOf the JSON schema of a tool's arguments, if known
 */
export function drawApprovals(panel, pending, onDecide, schemaOf = () => null) {
  const signature = JSON.stringify(pending);
  if (panel.dataset.signature === signature) return;
  panel.dataset.signature = signature;
  panel.hidden = pending.length === 0;
  const heading = document.createElement("h2");
  heading.textContent = pending.length > 1 ? `${pending.length} tool calls wait for your approval` : "A tool call waits for your approval";
  panel.replaceChildren(heading, ...pending.map((call) => approvalRow(call, onDecide, schemaOf)));
}

function approvalRow(call, onDecide, schemaOf) {
  const row = document.createElement("div");
  row.className = "approval";
  row.dataset.toolCallId = call.toolCallId;
  row.dataset.testid = "approval";
  row.setAttribute("role", "group"); // its Approve and Deny are this call's
  row.setAttribute("aria-label", `Call to ${call.toolName}`);
  const what = document.createElement("code");
  what.textContent = `${call.toolName}(${JSON.stringify(call.args)})`;
  row.append(what);
  if (call.decision) {
    const decided = document.createElement("span");
    decided.className = "decided";
    decided.textContent = call.decision.approved ? "Approved; waiting for the other calls." : "Denied; waiting for the other calls.";
    row.append(decided);
    return row;
  }
  const editor = argsEditor(call, schemaOf(call.toolName));
  const actions = document.createElement("div");
  actions.className = "actions";
  actions.innerHTML = `
    <button type="button" class="edit-args" data-testid="edit-args" aria-expanded="false">Edit arguments</button>
    <input type="text" class="reason" placeholder="Why deny? (optional)" aria-label="Reason for a denial">
    <label><input type="checkbox" class="remember"> Always allow <span class="tool-name"></span> in this thread</label>
    <button type="button" class="primary approve">Approve</button>
    <button type="button" class="danger deny">Deny</button>
    <span class="error" role="alert"></span>`;
  actions.querySelector(".tool-name").textContent = call.toolName;
  const approve = actions.querySelector(".approve");
  const toggle = actions.querySelector(".edit-args");
  toggle.addEventListener("click", () => {
    const open = editor.element.hidden;
    editor.element.hidden = !open;
    toggle.setAttribute("aria-expanded", String(open));
    toggle.textContent = open ? "Keep the arguments" : "Edit arguments";
    editor.reset();
    if (open) editor.focus();
  });
  editor.onChange = (ok) => {
    approve.disabled = !ok;
    approve.textContent = editor.edited() ? "Approve with these arguments" : "Approve";
  };
  const decide = (approved) => {
    const decision = { approved };
    const reason = actions.querySelector(".reason").value.trim();
    if (!approved && reason) decision.reason = reason;
    if (approved && actions.querySelector(".remember").checked) decision.remember = true;
    const edited = editor.edited();
    if (approved && edited) decision.args = edited;
    for (const button of actions.querySelectorAll("button")) button.disabled = true;
    onDecide(call, decision, (message) => {
      actions.querySelector(".error").textContent = message;
      for (const button of actions.querySelectorAll("button")) button.disabled = false;
    });
  };
  approve.addEventListener("click", () => decide(true));
  actions.querySelector(".deny").addEventListener("click", () => decide(false));
  row.append(editor.element, actions);
  return row;
}

/**
 * A call's arguments as editable JSON, checked as one types against the tool's schema, with what the
 * edit changes. `edited()`: the new arguments, or null while they are the model's (or the box is closed).
 */
function argsEditor(call, schema) {
  const element = document.createElement("div");
  element.className = "args-editor";
  element.hidden = true;
  element.innerHTML = `
    <textarea class="args" rows="4" spellcheck="false" data-testid="args-text"></textarea>
    <ul class="args-changes" data-testid="args-changes" aria-label="What the edit changes"></ul>
    <p class="args-problem" role="alert" data-testid="args-problem"></p>`;
  const text = element.querySelector("textarea");
  text.setAttribute("aria-label", `Arguments of ${call.toolName} as JSON`);
  const editor = { element, onChange: () => {}, value: null };
  const update = () => {
    const [value, problems] = parse(text.value, schema);
    editor.value = problems.length ? null : value;
    element.querySelector(".args-problem").textContent = problems.join("; ");
    const changed = value && !problems.length ? changes(call.args, value) : [];
    element.querySelector(".args-changes").replaceChildren(
      ...changed.map(({ name, before, after }) => {
        const item = document.createElement("li");
        item.textContent =
          before === undefined
            ? `${name}: added ${JSON.stringify(after)}`
            : after === undefined
              ? `${name}: removed (was ${JSON.stringify(before)})`
              : `${name}: ${JSON.stringify(before)} → ${JSON.stringify(after)}`;
        return item;
      }),
    );
    editor.onChange(element.hidden || problems.length === 0);
  };
  editor.reset = () => {
    text.value = JSON.stringify(call.args, null, 2);
    update();
  };
  editor.focus = () => text.focus();
  editor.edited = () =>
    !element.hidden && editor.value && changes(call.args, editor.value).length ? editor.value : null;
  text.addEventListener("input", update);
  text.addEventListener("keydown", (event) => {
    if (event.key === "Escape") event.stopPropagation(); // Esc here must not stop the run
  });
  return editor;
}

/** The arguments typed, and what is wrong with them (not JSON, not an object, not what the tool takes). */
function parse(source, schema) {
  let value;
  try {
    value = JSON.parse(source);
  } catch (error) {
    return [null, [`not JSON: ${error.message}`]];
  }
  if (value === null || typeof value !== "object" || Array.isArray(value)) return [null, ["the arguments must be a JSON object"]];
  return [value, schema ? check(schema, value) : []];
}
