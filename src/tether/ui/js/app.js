// The web UI's controller: it keeps the thread list live from the feed (v1/events), follows the
// open thread's stream, and turns clicks into API calls. Folding lives in session.js and fold.js,
// drawing in view.js, the sign-in dialog in signin.js.

import { Api } from "./api.js";
import { drawPending, partOf, Pending } from "./attachments.js";
import { ApiError } from "./errors.js";
import { download, fileName, threadJson, threadMarkdown } from "./export.js";
import { Pages } from "./pages.js";
import { ACTIVE, chatBlocks, ThreadSession, threadStatus } from "./session.js";
import { askForToken, drawAccount, signingIn } from "./signin.js";
import { sleep } from "./sse.js";
import { drawAgentPicker, drawApprovals, drawMessages, drawThreadList, drawThreadUsage, statusLabel } from "./view.js";

const $ = (id) => document.getElementById(id);

/** What the UI knows of each thread: {id, title, agent, status, runId, error, stopped, pending}, newest first. */
const threads = new Map();
/** Runs the UI has seen end. */
const endedRuns = new Set();
/** Deleted threads: late news of their last run must not bring them back. */
const deletedThreads = new Set();
let current = null; // {id, session, abort, placeholder: {messages, until} | null, problem: string | null}
let focusInputOnDraw = false; // the composer can take focus only once it is drawn
let focusApprovalsOnDraw = false; // a call was decided from the panel: the focus goes on to what is left to decide
let feed = null; // the feed's AbortController: sign-out closes it
let me = null; // GET v1/me: {user, auth}; null until known (or on a server that cannot say)
let served = null; // GET v1/agents: {agents, default}; null until known
let restarting = null; // after a sign-out: the sign-in that starts everything again
let livePages = null; // the live list's pages (from the feed's last snapshot on)
let search = null; // {q, pages, results, loaded}: what the search box found; null: no search
let searchTimer = null;

const PAGE = 50; // threads per page of the list

const api = new Api(onUnauthorized);
/** The files the next message will carry (attached by the button, pasted or dropped on the composer). */
const pending = new Pending(() => drawPending($("pending-attachments"), pending));
/** Attachments fetched so far: id -> Promise<{blob, url}> (a blob: URL to show or save them). */
let attachmentBlobs = new Map();

/** A stored attachment's bytes, fetched once per page with the user's token. */
function loadAttachment(attachment) {
  if (!attachmentBlobs.has(attachment.id)) {
    const loaded = api.attachment(attachment.id).then((blob) => ({ blob, url: URL.createObjectURL(blob) }));
    loaded.catch(() => attachmentBlobs.delete(attachment.id)); // tried again at the next draw
    attachmentBlobs.set(attachment.id, loaded);
  }
  return attachmentBlobs.get(attachment.id);
}

/** Forget the attachments fetched (at sign-out: the next user must not see them). */
function forgetAttachments() {
  for (const loaded of attachmentBlobs.values()) loaded.then(({ url }) => URL.revokeObjectURL(url), () => {});
  attachmentBlobs = new Map();
}

function info(threadId) {
  if (!threads.has(threadId)) {
    threads.set(threadId, { id: threadId, title: null, agent: null, parent: null, status: "idle", runId: null, error: null, pending: [] });
  }
  return threads.get(threadId);
}

/**
 * Record what a run on a thread is doing. The feed and the thread stream are two connections, so
 * news can arrive late: a run that has ended never looks active again, and the end of an earlier
 * run does not overwrite the state of the run that followed it.
 */
function setRunState(threadId, runId, runStatus, { error = null, pending = null } = {}) {
  if (deletedThreads.has(threadId)) return;
  if (runId && endedRuns.has(runId) && ACTIVE.has(runStatus)) return;
  if (runId && !ACTIVE.has(runStatus)) endedRuns.add(runId);
  const thread = info(threadId);
  const earlierRunEnded = runId && thread.runId && runId !== thread.runId && !ACTIVE.has(runStatus);
  if (earlierRunEnded && ACTIVE.has(thread.status)) return;
  thread.status = threadStatus(runStatus);
  thread.runId = runId ?? thread.runId;
  thread.error = runStatus === "failed" ? error : null;
  thread.stopped = runStatus === "cancelled" ? error : null;
  if (pending !== null) thread.pending = pending;
  if (runStatus !== "awaiting_approval") thread.pending = [];
  redraw();
}

function toTop(threadId) {
  if (deletedThreads.has(threadId)) return;
  const thread = info(threadId);
  threads.delete(threadId);
  const rest = [...threads.entries()];
  threads.clear();
  threads.set(threadId, thread);
  for (const [id, t] of rest) threads.set(id, t);
}

function forgetThread(threadId) {
  deletedThreads.add(threadId);
  threads.delete(threadId);
  ThreadSession.forget(threadId);
  if (current?.id === threadId) {
    location.hash = "";
    openThread(null); // now, not at the next hashchange: nothing may draw the deleted thread again
  }
  redraw();
}

// ---- the feed: every thread's status, live ------------------------------------------------

async function followFeed(signal) {
  let after = null;
  while (!signal.aborted) {
    try {
      await api.follow("v1/events", {
        after,
        signal,
        onEvent: (notice, seq) => {
          if (seq !== null) after = seq;
          onNotice(notice);
        },
        onState: (state) => {
          $("feed-state").textContent = state === "live" ? "" : "Reconnecting…";
        },
      });
    } catch (error) {
      if (signal.aborted) return;
      // The feed's position is unknown here (a new database): start again from a snapshot.
      $("feed-state").textContent = error.message;
      after = null;
      await sleep(2000, signal);
    }
  }
}

/** Notices that arrive while a snapshot's thread list loads; applied once it has loaded. */
let heldNotices = null;

function onNotice(notice) {
  if (notice.type === "snapshot") {
    heldNotices = [];
    resync(notice.activeRuns).catch(showError);
  } else if (heldNotices) {
    heldNotices.push(notice);
  } else {
    applyNotice(notice);
  }
}

function applyNotice(notice) {
  if (deletedThreads.has(notice.threadId)) return;
  switch (notice.type) {
    case "thread.created":
    case "thread.updated":
      info(notice.threadId).title = notice.title ?? null;
      if (notice.type === "thread.created") {
        toTop(notice.threadId);
        info(notice.threadId).parent = notice.parentThreadId ?? null;
        learnAgent(notice.threadId, notice.agent);
      }
      break;
    case "thread.deleted":
      forgetThread(notice.threadId);
      break;
    case "run.created":
      toTop(notice.threadId);
      if (info(notice.threadId).status === "idle") setRunState(notice.threadId, notice.runId, "queued");
      break;
    case "run.status": {
      const pending = notice.pendingApprovals ? notice.pendingApprovals.map((call) => ({ ...call, decision: null })) : null;
      setRunState(notice.threadId, notice.runId, notice.status, { error: notice.error ?? null, pending });
      if (notice.status === "awaiting_approval" && current?.id === notice.threadId) refreshApprovals(notice.runId);
      break;
    }
    case "run.decided":
      if (current?.id === notice.threadId) refreshApprovals(notice.runId);
      break;
    default:
      break;
  }
  redraw();
}

/**
 * A fresh feed connection: the thread list from the API, the snapshot's active runs on top, then
 * the notices that came in meanwhile (the list may already reflect some of them; applying a
 * notice twice changes nothing).
 */
async function resync(activeRuns) {
  const generation = api.generation;
  try {
    const pages = new Pages((cursor) => api.threads({ cursor, limit: PAGE }));
    const list = await pages.next();
    livePages = pages;
    const known = new Map(threads);
    threads.clear();
    for (const thread of list) threads.set(thread.id, { ...(known.get(thread.id) || {}), ...listed(thread) });
    for (const run of activeRuns) {
      const pending = run.pendingApprovals.map((call) => ({ ...call, decision: null }));
      setRunState(run.threadId, run.runId, run.status, { pending });
    }
  } finally {
    // After a sign-out the notices held are the next user's feed's, not this resync's.
    if (generation === api.generation) {
      const held = heldNotices;
      heldNotices = null;
      for (const notice of held) applyNotice(notice);
      redraw();
    }
  }
}

/** A thread of a list page (the API's JSON) as the UI keeps it. */
function listed(thread) {
  return {
    id: thread.id,
    title: thread.title,
    agent: thread.agent ?? null,
    parent: thread.parent_thread_id ?? null,
    status: threadStatus(thread.last_run_status),
    pending: [],
  };
}

/** The next page of the list shown (the live list, or the search's results), when it is scrolled to its end. */
async function loadMore() {
  const pages = search ? search.pages : livePages;
  if (!pages || pages.done || pages.loading) return;
  const generation = api.generation;
  try {
    const page = await pages.next();
    if (generation !== api.generation) return;
    if (search && pages === search.pages) {
      const have = new Set(search.results.map((t) => t.id));
      search.results.push(...page.filter((t) => !have.has(t.id)));
    } else if (pages === livePages) {
      // Threads the feed moved up meanwhile are known already and stay where they are.
      for (const thread of page) if (!threads.has(thread.id) && !deletedThreads.has(thread.id)) threads.set(thread.id, listed(thread));
    }
    redraw();
  } catch (error) {
    pages.done = true; // no retry storm from every redraw: the next snapshot or search starts afresh
    showError(error);
  }
}

function onListScroll() {
  const list = $("thread-list");
  if (list.scrollTop + list.clientHeight >= list.scrollHeight - 120) loadMore();
}

/** Search as one types: a moment after the last key, the first page of what matches. */
function onSearchInput() {
  clearTimeout(searchTimer);
  searchTimer = setTimeout(() => startSearch($("thread-search").value.trim()), 200);
}

async function startSearch(q) {
  if (search?.q === q) return;
  $("thread-list").scrollTop = 0;
  if (!q) {
    search = null;
    redraw();
    return;
  }
  const mine = { q, pages: new Pages((cursor) => api.threads({ q, cursor, limit: PAGE })), results: [], loaded: false };
  search = mine;
  redraw();
  try {
    const page = await mine.pages.next();
    if (search !== mine) return; // typed on meanwhile
    mine.results = page;
    mine.loaded = true;
  } catch (error) {
    if (search === mine) showError(error);
  }
  redraw();
}

/**
 * A thread created elsewhere: its agent, from the notice or else from the API (only worth
 * asking when the server has more than one agent to tell apart).
 */
async function learnAgent(threadId, agent) {
  const thread = info(threadId);
  if (agent) thread.agent = agent;
  if (thread.agent || !served || served.agents.length < 2) return;
  try {
    thread.agent = (await api.thread(threadId)).agent ?? null;
    redraw();
  } catch {
    // Deleted meanwhile, or signed out: nothing to name.
  }
}

// ---- the open thread --------------------------------------------------------------------

async function openThread(threadId) {
  current?.abort.abort();
  $("app").classList.remove("threads-open");
  if (!threadId) {
    current = null;
    redraw();
    return;
  }
  const abort = new AbortController();
  const restored = ThreadSession.restore(threadId);
  current = { id: threadId, session: restored, abort, placeholder: null, problem: null, loading: true };
  redraw();

  const detail = await loadThread(threadId, abort.signal);
  if (!detail) return;
  current.problem = null;
  current.loading = false;
  const thread = info(threadId);
  thread.title = detail.title;
  thread.agent = detail.agent ?? null;
  thread.parent = detail.parent_thread_id ?? null;
  const run = detail.active_run;
  setRunState(threadId, run?.id ?? null, run ? run.status : detail.last_run_status, { pending: run ? pendingOf(run) : [] });
  loadRuns(threadId, !run && detail.last_run_status === "failed");
  if (!restored) {
    if (detail.messages_seq !== null) {
      current.session = new ThreadSession(threadId, detail.messages, detail.messages_seq);
    } else {
      // A run is under way: only the log holds its partial answer, so fold the log from the
      // start, and show the stored history until the fold has caught up.
      current.session = new ThreadSession(threadId);
      current.placeholder = { messages: detail.messages, until: detail.last_seq };
    }
  }
  redraw();
  followThread(current, detail.last_seq, abort.signal);
}

/** The thread's state from the API, retried while the server is unreachable or restarting. */
async function loadThread(threadId, signal) {
  for (let delay = 500; !signal.aborted; delay = Math.min(delay * 2, 5000)) {
    try {
      return await api.thread(threadId);
    } catch (error) {
      if (signal.aborted) return null;
      current.session ||= new ThreadSession(threadId);
      if (error.status === 404) {
        current.problem = "This thread does not exist (it may have been deleted).";
        redraw();
        return null;
      }
      current.problem = error.status === 0 || error.status === 503 ? `${error.message} Retrying…` : error.message;
      redraw();
      if (error.status !== 0 && error.status !== 503) return null;
      await sleep(delay, signal);
    }
  }
  return null;
}

/**
 * Follow the open thread's stream from where its session is. Events up to `knownSeq` (what the
 * thread's GET answer already reflected) fold into the transcript but do not move the run state
 * back in time.
 */
async function followThread(open, knownSeq, signal) {
  const { session } = open;
  const generation = api.generation; // signed out meanwhile: nothing of this thread is kept
  let saveTimer = null;
  let keep = true; // whether this tab's record of the thread is worth saving when the follow ends
  const saveSoon = () => {
    saveTimer ??= setTimeout(() => {
      saveTimer = null;
      if (generation === api.generation) session.save();
    }, 200);
  };
  try {
    await api.follow(`v1/threads/${session.threadId}/stream`, {
      after: session.seq,
      signal,
      onEvent: (event, seq) => {
        session.apply(event, seq);
        if (seq > knownSeq) onThreadEvent(session.threadId, event, session);
        if (open.placeholder && session.seq >= open.placeholder.until) open.placeholder = null;
        saveSoon();
        redraw();
      },
      onState: (state) => {
        $("stream-state").textContent = state === "live" ? "" : "Reconnecting…";
        $("stream-state").dataset.state = state;
      },
    });
  } catch (error) {
    if (signal.aborted) return;
    if (error.code === "invalid_last_event_id") {
      // This tab's saved position is not in the log (a different database): start afresh.
      keep = false;
      ThreadSession.forget(session.threadId);
      if (current === open) openThread(session.threadId);
      return;
    }
    open.problem = error.message;
    redraw();
  } finally {
    clearTimeout(saveTimer);
    if (keep && generation === api.generation && !deletedThreads.has(session.threadId)) session.save();
  }
}

function onThreadEvent(threadId, event, session) {
  if (event.type === "RUN_STARTED") setRunState(threadId, event.runId, "running");
  else if (event.type === "RUN_FINISHED" || event.type === "RUN_ERROR") {
    const run = session.run;
    const pending = run.status === "awaiting_approval" ? session.pending : null;
    setRunState(threadId, run.id, run.status, { error: run.error, pending });
  }
}

/** The open thread's runs: what each used (for the answers the stream has not told of), and why the last failed. */
async function loadRuns(threadId, failed) {
  try {
    const { runs } = await api.runs(threadId);
    if (current?.id === threadId) current.session?.learnUsage(runs);
    const last = runs.at(-1);
    if (failed && last?.status === "failed" && info(threadId).status === "failed") info(threadId).error = last.error;
    redraw();
  } catch (error) {
    showError(error);
  }
}

async function refreshApprovals(runId) {
  try {
    const run = await api.run(runId);
    setRunState(run.thread_id, run.id, run.status, { error: run.error, pending: pendingOf(run) });
  } catch (error) {
    showError(error);
  }
}

function pendingOf(run) {
  return (run.pending_approvals || []).map((call) => ({
    toolCallId: call.tool_call_id,
    toolName: call.tool_name,
    args: call.args,
    decision: call.decision,
  }));
}

async function decide(call, decision, onError) {
  const thread = info(current.id);
  // The panel's buttons are disabled while the decision is sent, which takes their focus: it is given
  // back once the panel is drawn anew.
  const fromPanel = $("approvals").contains(document.activeElement);
  try {
    const run = await api.decide(thread.runId, call.toolCallId, decision);
    focusApprovalsOnDraw = fromPanel;
    setRunState(run.thread_id, run.id, run.status, { error: run.error, pending: pendingOf(run) });
  } catch (error) {
    if (error instanceof ApiError && error.status === 409) refreshApprovals(thread.runId);
    else onError(error.message);
  }
}

// ---- drawing --------------------------------------------------------------------------

let drawQueued = false;

/** Draw on the next frame: a burst of events costs one redraw. */
function redraw() {
  if (drawQueued) return;
  drawQueued = true;
  requestAnimationFrame(() => {
    drawQueued = false;
    draw();
  });
}

/** The agent to name beside a thread: none while the server serves one agent and the thread has it. */
function agentLabel(thread) {
  if (!thread.agent || !served) return "";
  const onlyOne = served.agents.length === 1 && served.agents[0].name === thread.agent;
  return onlyOne ? "" : thread.agent;
}

function draw() {
  const shown = search
    ? search.results.filter((t) => !deletedThreads.has(t.id)).map((t) => threads.get(t.id) ?? listed(t))
    : [...threads.values()];
  drawThreadList($("thread-list"), shown, current?.id ?? null, agentLabel);
  $("search-state").textContent = !search ? "" : !search.loaded ? "Searching…" : shown.length ? "" : "No thread matches.";
  const list = $("thread-list");
  if (list.scrollHeight <= list.clientHeight) loadMore(); // a page that does not fill the list: the next one
  drawAgentPicker($("agent-select"), served);
  const open = current && current.session;
  $("empty").hidden = Boolean(current);
  setHidden($("messages"), !current);
  setHidden($("delete-thread"), !current);
  setHidden($("export"), !current);
  $("chat-agent").textContent = current ? agentLabel(info(current.id)) : "";
  $("chat-agent").hidden = !$("chat-agent").textContent;
  drawBranchOf(current ? info(current.id) : null);
  if (!current) {
    $("chat-title").textContent = "Tether";
    $("chat-status").textContent = "";
    setHidden($("approvals"), true);
    setHidden($("run-error"), true);
    $("thread-usage").hidden = true;
    document.title = "Tether";
    drawComposer(null, [], false);
    return;
  }
  const thread = info(current.id);
  if (!$("chat-title").isContentEditable) $("chat-title").textContent = thread.title || "Untitled";
  document.title = `${thread.title || "Untitled"} · Tether`;
  // Until the thread's state has loaded, nothing claims it is idle (or offers to send).
  const status = current.loading ? "loading" : thread.status;
  $("chat-status").textContent = status === "idle" ? "" : status === "loading" ? "loading…" : statusLabel(status);
  $("chat-status").dataset.status = status;
  const active = ACTIVE.has(thread.status);
  if (open) {
    const session = current.session;
    const messages = current.placeholder ? current.placeholder.messages : session.transcript.messages;
    const blocks = chatBlocks(messages, { timings: session.timings, pending: thread.pending, active, usage: session.usage });
    drawThreadUsage($("thread-usage"), session.totalUsage());
    const editable = !active && !current.loading && !current.placeholder;
    drawMessages($("messages"), blocks, thread.status === "running", { editable, onEdit: editMessage, loadAttachment });
    drawApprovals($("approvals"), thread.pending, decide, (tool) => toolSchema(thread, tool));
    if (focusApprovalsOnDraw) {
      focusApprovalsOnDraw = false;
      const next = $("approvals").hidden ? null : $("approvals").querySelector("button:enabled");
      (next ?? $("input")).focus();
    }
    drawComposer(thread, blocks, current.loading);
    if (focusInputOnDraw) {
      focusInputOnDraw = false;
      $("input").focus();
    }
  }
  if (current.problem) showRunError(current.problem);
  else if (thread.status === "failed") showRunError(`The run failed: ${thread.error || "see the server log"}`, true);
  else if (thread.stopped && !active) showRunError(`Stopped: ${thread.stopped}.`, false, true);
  else setHidden($("run-error"), true);
}

/** Hide or show an element. Focus in one that hides goes to the message box, not to nowhere. */
function setHidden(element, hidden) {
  if (hidden && !element.hidden && element.contains(document.activeElement)) $("input").focus();
  element.hidden = hidden;
}

/** The JSON schema of the arguments of a tool of the thread's agent (GET v1/agents), or null if unknown. */
function toolSchema(thread, toolName) {
  const agent = served?.agents.find((a) => a.name === (thread.agent ?? served.default));
  return agent?.tools.find((t) => t.name === toolName)?.parameters ?? null;
}

/** A branch names the thread it was forked from, as a link back to it. */
function drawBranchOf(thread) {
  const link = $("branch-of");
  link.hidden = !thread?.parent;
  if (!thread?.parent) return;
  link.href = `#/t/${thread.parent}`;
  link.querySelector(".parent-title").textContent = threads.get(thread.parent)?.title || "its parent thread";
}

/** @param {object|null} thread null: the first screen, where the message starts a thread */
function drawComposer(thread, blocks, loading) {
  const active = Boolean(thread) && ACTIVE.has(thread.status);
  setHidden($("send"), active || loading);
  setHidden($("steer"), !active || loading);
  setHidden($("stop"), !active || loading);
  setHidden($("retry"), active || loading || !blocks.some((b) => b.kind === "user"));
  $("input").placeholder = active
    ? "Steer the running agent (Enter), or Stop (Esc)"
    : thread
      ? "Message (Enter to send, Shift+Enter for a new line)"
      : "Message to start a thread (Enter to send, Shift+Enter for a new line)";
}

function showRunError(message, withRetry = false, quiet = false) {
  const box = $("run-error");
  box.hidden = false;
  box.classList.toggle("stopped", quiet);
  box.querySelector(".run-error-text").textContent = message;
  box.querySelector(".retry-button").hidden = !withRetry;
}

function showError(error) {
  if (error?.code === "signed_out") return; // what was under way when the user signed out
  const message = error?.message || String(error);
  if (current) $("composer-error").textContent = message;
  else $("feed-state").textContent = message;
}

// ---- actions --------------------------------------------------------------------------

async function act(action) {
  $("composer-error").textContent = "";
  try {
    await action();
  } catch (error) {
    showError(error);
  }
}

let sending = false; // a message is on its way: a second Enter meanwhile must not send it again

/**
 * The composer's message: it steers the open thread's run under way or starts one; on the first
 * screen it creates a thread, titled by it, opens it and sends it there. A message with attachments
 * is never a steer (steering is text only): it waits for the run under way, as a queued run.
 */
async function send() {
  const input = $("input");
  const text = input.value.trim();
  if ((!text && !pending.files.length) || sending) return;
  sending = true;
  const title = titleFrom(text || pending.files.map((f) => f.file.name).join(", "));
  try {
    await act(async () => {
      const threadId = current?.id ?? (await createAndOpen(title));
      const thread = info(threadId);
      if (pending.files.length) await api.send(threadId, await pending.parts(text));
      else if (ACTIVE.has(thread.status)) await api.steer(threadId, text);
      else await api.send(threadId, text);
      input.value = "";
      pending.clear();
      resizeInput();
      if (!thread.title) await api.rename(threadId, title);
    });
  } finally {
    sending = false;
  }
}

/** Create a thread (for the agent picked, if the server has several) and open it; its id. */
async function createAndOpen(title = null) {
  const picker = $("agent-select");
  const thread = await api.createThread(picker.hidden ? null : picker.value, title);
  info(thread.id).title = thread.title;
  info(thread.id).agent = thread.agent ?? null;
  toTop(thread.id);
  location.hash = `#/t/${thread.id}`;
  focusInputOnDraw = true;
  return thread.id;
}

function titleFrom(text) {
  const line = text.split("\n")[0];
  return line.length > 60 ? `${line.slice(0, 57)}…` : line;
}

/**
 * Edit an earlier message: a branch of the thread from just before it (the thread itself stays as it
 * is), and the edited message sent there. The branch opens.
 */
async function editMessage(messageId, text, onError) {
  const parentId = current.id;
  const attached = current.session.transcript.byId.get(messageId)?.attachments || [];
  try {
    const branch = await api.fork(parentId, messageId);
    info(branch.id).title = branch.title;
    info(branch.id).agent = branch.agent ?? null;
    info(branch.id).parent = parentId;
    toTop(branch.id);
    await api.send(branch.id, attached.length ? await editedParts(text, attached) : text);
    location.hash = `#/t/${branch.id}`;
    focusInputOnDraw = true;
  } catch (error) {
    onError(error.message);
  }
}

/** An edited message's parts: its new text, and the attachments it had, sent again. */
async function editedParts(text, attached) {
  const again = await Promise.all(
    attached.map(async (a) =>
      a.id ? partOf((await loadAttachment(a)).blob, a.media_type, a.name) : { type: a.type, media_type: a.media_type, url: a.url },
    ),
  );
  return [...(text ? [{ type: "text", text }] : []), ...again];
}

/** Save the open thread's stored history as a file: Markdown or JSON. */
function exportThread(format) {
  if (!current) return;
  const threadId = current.id;
  $("export").open = false;
  act(async () => {
    const thread = await api.thread(threadId);
    if (format === "json") download(fileName(thread, "json"), "application/json", threadJson(thread));
    else download(fileName(thread, "md"), "text/markdown", threadMarkdown(thread));
  });
}

function stop() {
  const thread = current && info(current.id);
  if (!thread || !ACTIVE.has(thread.status) || !thread.runId) return;
  act(async () => {
    try {
      await api.cancel(thread.runId);
    } catch (error) {
      if (error.code !== "run_ended") throw error;
    }
  });
}

function retry() {
  if (!current) return;
  const threadId = current.id;
  act(async () => {
    const accepted = await api.retry(threadId);
    setRunState(threadId, accepted.run_id, "queued");
  });
}

function resizeInput() {
  const input = $("input");
  input.style.height = "auto";
  input.style.height = `${Math.min(input.scrollHeight, 192)}px`;
}

function renameInline() {
  if (!current) return;
  const title = $("chat-title");
  const threadId = current.id;
  const before = info(threadId).title || "";
  title.contentEditable = "true";
  title.textContent = before;
  title.focus();
  document.getSelection().selectAllChildren(title);
  const finish = async (save) => {
    title.removeEventListener("keydown", onKey);
    title.removeEventListener("blur", onBlur);
    title.contentEditable = "false";
    const after = title.textContent.trim().slice(0, 200);
    if (save && after !== before) {
      await act(async () => {
        const thread = await api.rename(threadId, after || null);
        info(threadId).title = thread.title;
      });
    }
    redraw();
  };
  const onKey = (event) => {
    if (event.key === "Enter") {
      event.preventDefault();
      finish(true);
    } else if (event.key === "Escape") {
      event.stopPropagation();
      finish(false);
    }
  };
  const onBlur = () => finish(true);
  title.addEventListener("keydown", onKey);
  title.addEventListener("blur", onBlur);
}

// ---- signing in and out ---------------------------------------------------------------

function storeToken(token) {
  api.token = token;
}

/** A 401: ask for a token. Once signed in, a refused token signs out first: the next token may be someone else's. */
function onUnauthorized(reason) {
  if (me) {
    signOut(reason);
    return Promise.resolve(); // the refused request ends as signed out; signOut starts afresh
  }
  return askForToken({ refused: api.token ? reason : null }, storeToken);
}

/** Everything that is the signed-in user's: who they are, the agents, the feed, the open thread. */
function start() {
  identify(api.generation);
  loadAgents(api.generation);
  feed = new AbortController();
  followFeed(feed.signal);
  route();
}

/**
 * Forget the token and everything seen with it (threads, the open chat, this tab's saved
 * transcripts), close the streams, and sign in again.
 *
 * @param {string|null} refused the server's reason, when it refused the token
 */
function signOut(refused = null) {
  api.signOut();
  pending.clear();
  forgetAttachments();
  feed?.abort();
  current?.abort.abort();
  current = null;
  threads.clear();
  endedRuns.clear();
  deletedThreads.clear();
  heldNotices = null;
  ThreadSession.forgetAll();
  me = null;
  served = null;
  livePages = null;
  search = null;
  $("thread-search").value = "";
  drawAccount(null);
  $("feed-state").textContent = "";
  $("stream-state").textContent = "";
  $("composer-error").textContent = "";
  history.replaceState(null, "", location.pathname + location.search); // no thread open, no hashchange
  redraw();
  // Once, however many refusals and other tabs' sign-outs come in while the dialog is open.
  restarting ??= askForToken({ refused }, storeToken).then(() => {
    restarting = null;
    start();
  });
}

/** Ask for something signed-in users need, retrying while the server is unreachable or restarting. */
async function loadForUser(generation, load) {
  for (let delay = 500; generation === api.generation; delay = Math.min(delay * 2, 5000)) {
    try {
      return await load();
    } catch (error) {
      // 404: a server from before this endpoint; it has no users or agents to tell apart.
      if (error.status === 404 || error.code === "signed_out") return null;
      if (error.status !== 0 && error.status !== 503) throw error;
      await sleep(delay);
    }
  }
  return null;
}

async function identify(generation) {
  const who = await loadForUser(generation, () => api.me()).catch(showError);
  if (generation !== api.generation) return;
  me = who ?? null;
  drawAccount(me, Boolean(api.token));
}

async function loadAgents(generation) {
  const agents = await loadForUser(generation, () => api.agents()).catch(showError);
  if (generation !== api.generation) return;
  served = agents ?? null;
  redraw();
}

/** Files join the next message from the attach button, pasted into the message box, or dropped on the composer. */
function wireAttaching() {
  const picker = $("attach-input");
  $("attach").addEventListener("click", () => picker.click());
  picker.addEventListener("change", () => {
    pending.add(picker.files);
    picker.value = ""; // the same file may be picked again
    $("input").focus();
  });
  $("input").addEventListener("paste", (event) => {
    const files = event.clipboardData?.files;
    if (!files?.length) return;
    pending.add(files);
    if (!event.clipboardData.types.includes("text/plain")) event.preventDefault();
  });
  const composer = $("composer");
  const carriesFiles = (event) => event.dataTransfer?.types.includes("Files");
  composer.addEventListener("dragover", (event) => {
    if (!carriesFiles(event)) return;
    event.preventDefault();
    composer.classList.add("dropping");
  });
  composer.addEventListener("dragleave", (event) => {
    if (!composer.contains(event.relatedTarget)) composer.classList.remove("dropping");
  });
  composer.addEventListener("drop", (event) => {
    composer.classList.remove("dropping");
    if (!carriesFiles(event)) return;
    event.preventDefault();
    pending.add(event.dataTransfer.files);
    $("input").focus();
  });
}

function route() {
  const match = location.hash.match(/^#\/t\/([\w-]+)$/);
  openThread(match ? match[1] : null);
}

function wire() {
  $("composer").addEventListener("submit", (event) => {
    event.preventDefault();
    send();
  });
  $("steer").addEventListener("click", send);
  $("stop").addEventListener("click", stop);
  $("retry").addEventListener("click", retry);
  $("run-error").querySelector(".retry-button").addEventListener("click", retry);
  $("input").addEventListener("input", resizeInput);
  wireAttaching();
  $("input").addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      send();
    }
  });
  document.addEventListener("keydown", (event) => {
    // Esc stops the run, unless it is closing something else (a reason being typed, a dialog).
    const elsewhere = event.target instanceof HTMLInputElement || signingIn();
    if (event.key === "Escape" && !elsewhere) stop();
  });
  // Nothing works without the token, so the dialog cannot be dismissed without one.
  $("token-dialog").addEventListener("cancel", (event) => event.preventDefault());
  $("new-thread").addEventListener("click", () => act(() => createAndOpen()));
  $("delete-thread").addEventListener("click", () => {
    if (!current) return;
    const threadId = current.id;
    if (!confirm(`Delete "${info(threadId).title || "Untitled"}" and its whole history?`)) return;
    act(async () => {
      await api.remove(threadId);
      forgetThread(threadId);
    });
  });
  $("export-markdown").addEventListener("click", () => exportThread("markdown"));
  $("export-json").addEventListener("click", () => exportThread("json"));
  $("chat-title").addEventListener("click", renameInline);
  $("chat-title").addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !$("chat-title").isContentEditable) renameInline();
  });
  $("show-threads").addEventListener("click", () => $("app").classList.toggle("threads-open"));
  $("thread-search").addEventListener("input", onSearchInput);
  $("thread-list").addEventListener("scroll", onListScroll);
  window.addEventListener("hashchange", route);
  window.addEventListener("pagehide", () => current?.session?.save());
  window.addEventListener("unhandledrejection", (event) => showError(event.reason));
  $("sign-out").addEventListener("click", () => signOut());
  window.addEventListener("storage", (event) => {
    if (event.storageArea !== localStorage || (event.key !== Api.tokenKey && event.key !== null)) return;
    // Another tab signed out, or in: what this tab shows may be someone else's now.
    if (!api.token) {
      signOut();
    } else {
      ThreadSession.forgetAll();
      location.reload();
    }
  });
}

wire();
start();
