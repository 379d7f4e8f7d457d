// Model output is untrusted: Markdown is rendered, then sanitised, before it touches the DOM.
//
// Fenced code in a language highlight.js knows is highlighted once its closing fence is there; a fence
// still open (an answer streaming in) is drawn plain, as it would otherwise be highlighted again at
// every word. highlight.js escapes the code and adds only <span class="hljs-…">; DOMPurify still
// checks its output with the rest.

import hljs from "../vendor/highlight.min.js";
import { Marked } from "../vendor/marked.esm.js";
import DOMPurify from "../vendor/purify.es.mjs";

const marked = new Marked({ gfm: true, breaks: false }, { renderer: { code: highlighted } });

// Links open in a new tab and cannot reach back into this page.
DOMPurify.addHook("afterSanitizeAttributes", (node) => {
  if (node.tagName === "A" && node.hasAttribute("href")) {
    node.setAttribute("target", "_blank");
    node.setAttribute("rel", "noopener noreferrer nofollow");
  }
});

const SANITIZE = { USE_PROFILES: { html: true }, FORBID_TAGS: ["style", "form", "input", "button"] };

/** Safe HTML for a Markdown string: no script, no event handler, no `javascript:` URL survives. */
export function renderMarkdown(text) {
  return DOMPurify.sanitize(marked.parse(text, { async: false }), SANITIZE);
}

/** Safe HTML for Markdown inline content (the words of a paragraph): emphasis, code, links. */
export function renderInline(text) {
  return DOMPurify.sanitize(marked.parseInline(text, { async: false }), SANITIZE);
}

/** A closed fence in a language highlight.js knows, highlighted; false leaves any other code to marked. */
function highlighted({ text, lang, raw }) {
  const language = lang?.match(/^[\w+#-]+/)?.[0];
  if (!language || !hljs.getLanguage(language) || !closed(raw)) return false;
  const code = text ? `${hljs.highlight(text, { language, ignoreIllegals: true }).value}\n` : "";
  return `<pre><code class="hljs language-${language}">${code}</code></pre>\n`;
}

/** Whether a fenced block's closing fence is there (marked takes an open fence to the end of the text). */
function closed(raw) {
  const fence = raw.match(/^ {0,3}(`{3,}|~{3,})/)?.[1];
  const lines = raw.trimEnd().split("\n");
  return Boolean(fence) && lines.length > 1 && new RegExp(`^ {0,3}[${fence[0]}]{${fence.length},}\\s*$`).test(lines.at(-1));
}
