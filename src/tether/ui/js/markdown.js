// Model output is untrusted: Markdown is rendered, then sanitised, before it touches the DOM.

import { Marked } from "../vendor/marked.esm.js";
import DOMPurify from "../vendor/purify.es.mjs";

const marked = new Marked({ gfm: true, breaks: false });

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
