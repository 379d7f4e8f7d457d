// Runs docs/ai-sdk.md's React front end, as written there, against a Tether server: esbuild compiles
// its JSX, react-dom renders it in jsdom, and the program uses it as a person would: types, presses
// Enter, reads the page, clicks its buttons, reloads the page.
//
//   node ai_sdk_react.mjs URL PROGRAM_JSON
//
// PROGRAM: {code, chatId, steps: [step…]}; code: the doc's JSX, which exports Chat({id, initialMessages}),
// with its transport's address replaced by URL. Each step ends once the page has settled (see settled()):
//   {open: true}                  load the page: GET the chat's messages ([] for a new chat), mount <Chat>
//   {send: TEXT, reloadAt?: SEEN} type TEXT and press Enter; with reloadAt, reload the page as soon as the
//                                 last message shows SEEN (the answer still streaming)
//   {click: LABEL}                click the last button labelled LABEL
// Prints one JSON array: per step, what the page shows (each message's text, the buttons, whether the
// message box can be typed in; `beforeReload`: the same just before a reload), the requests it made, and
// what was logged to console.error (React's warnings).
import { build } from "esbuild";
import { JSDOM } from "jsdom";

const [url, programText] = process.argv.slice(2);
const program = JSON.parse(programText);

// A page on a dev server, as in the doc. The requests are Node's fetch, so CORS is not in play here.
const dom = new JSDOM("<!doctype html><html><body></body></html>", { url: "http://localhost:5173/" });
const { window } = dom;
for (const name of ["window", "document", "navigator"]) {
  Object.defineProperty(globalThis, name, { value: window[name], configurable: true, writable: true });
}
// Imported only now: react-dom looks for a DOM once, when it is loaded.
const { createElement } = await import("react");
const { createRoot } = await import("react-dom/client");

// The doc's module, compiled as written. Its imports stay imports, resolved here, so it shares this
// script's React and react-dom (two Reacts would break its hooks).
const compiled = await build({
  stdin: { contents: program.code, loader: "jsx", resolveDir: import.meta.dirname, sourcefile: "docs/ai-sdk.md" },
  bundle: true,
  format: "esm",
  jsx: "automatic",
  write: false,
  logLevel: "silent",
  plugins: [
    {
      name: "packages-from-here",
      setup(b) {
        b.onResolve({ filter: /^[^./]/ }, (args) => ({ path: import.meta.resolve(args.path), external: true }));
      },
    },
  ],
});
const moduleText = compiled.outputFiles[0].text;

// A page: its own instance of the doc's module (a reload evaluates it again: a new transport), and every
// request it makes, which a reload cuts off as a browser does.
let page;
const realFetch = globalThis.fetch;
globalThis.fetch = async (input, init = {}) => {
  const request = { method: init.method ?? "GET", path: new URL(String(input)).pathname };
  page.requests.push(request);
  const signal = AbortSignal.any([page.aborts.signal, init.signal].filter(Boolean));
  const response = await realFetch(input, { ...init, signal });
  request.status = response.status;
  return response;
};

let warnings = [];
const consoleError = console.error;
console.error = (...args) => {
  warnings.push(args.map(String).join(" "));
  consoleError(...args);
};

let loads = 0;
async function openPage() {
  page = { requests: [], aborts: new AbortController(), changedAt: Date.now(), busySeen: false };
  loads += 1;
  const { Chat } = await import(`data:text/javascript,${encodeURIComponent(`${moduleText}\n// load ${loads}`)}`);
  const response = await fetch(`${url}/v1/ai-sdk/chat/${encodeURIComponent(program.chatId)}`);
  const initialMessages = response.status === 404 ? [] : (await response.json()).messages;
  page.container = document.body.appendChild(document.createElement("div"));
  new window.MutationObserver((records) => {
    page.changedAt = Date.now();
    if (records.some((r) => r.attributeName === "disabled")) page.busySeen = true;
  }).observe(page.container, { subtree: true, childList: true, characterData: true, attributes: true });
  page.root = createRoot(page.container);
  page.root.render(createElement(Chat, { id: program.chatId, initialMessages }));
}

function closePage() {
  page.aborts.abort();
  page.root.unmount();
  page.container.remove();
}

const input = () => page.container.querySelector("input");
const messageTexts = () => [...page.container.querySelectorAll(":scope > div > div")].map((m) => m.textContent);
const view = () => ({
  text: page.container.textContent,
  messages: messageTexts(),
  buttons: [...page.container.querySelectorAll("button")].map((b) => b.textContent),
  usable: input() != null && !input().disabled,
});

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
async function until(what, test, timeoutMs = 60000) {
  for (const deadline = Date.now() + timeoutMs; !test(); await sleep(10)) {
    if (Date.now() > deadline) {
      throw new Error(`timed out waiting for ${what}; the page: ${JSON.stringify({ ...view(), requests: page.requests })}`);
    }
  }
}
// Settled: the message box can be typed in again and nothing on the page has changed for a while (a
// person's "it's done"); after an action, only once the box has been busy (the request has begun).
async function settled({ afterAction = false } = {}) {
  await until("the page to settle", () =>
    (!afterAction || page.busySeen) && view().usable && Date.now() - page.changedAt > 300);
}

async function type(text) {
  await until("the message box", () => view().usable);
  // React's onChange listens for input events and reads the value through the element's own setter.
  Object.getOwnPropertyDescriptor(window.HTMLInputElement.prototype, "value").set.call(input(), text);
  input().dispatchEvent(new window.Event("input", { bubbles: true }));
  await sleep(20); // a person's Enter comes after React has rendered what was typed
  page.busySeen = false;
  // Enter in a form's only text box submits it (jsdom has no implicit submission of its own).
  input().form.requestSubmit();
}

const results = [];
for (const step of program.steps) {
  const record = {};
  results.push(record);
  if (step.open) {
    await openPage();
    await settled();
  } else if (step.send !== undefined) {
    await type(step.send);
    if (step.reloadAt !== undefined) {
      await until(`"${step.reloadAt}" in the answer`, () => messageTexts().at(-1)?.includes(step.reloadAt));
      record.beforeReload = { ...view(), requests: page.requests };
      closePage();
      await openPage();
      await settled();
    } else {
      await settled({ afterAction: true });
    }
  } else if (step.click !== undefined) {
    const button = [...page.container.querySelectorAll("button")].findLast((b) => b.textContent === step.click);
    if (button === undefined) throw new Error(`no button "${step.click}" on the page: ${JSON.stringify(view())}`);
    page.busySeen = false;
    button.click();
    await settled({ afterAction: true });
  }
  Object.assign(record, view(), { requests: page.requests, warnings });
  page.requests = [];
  warnings = [];
}
closePage();
console.log(JSON.stringify(results));
