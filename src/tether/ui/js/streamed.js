// Markdown drawn as it streams in: only the open block is rendered again.
//
// An answer is cut into blocks at its blank lines (outside fenced code). A block that is complete (a
// blank line follows it) is rendered once and kept; only the last, open block is rendered again as
// text arrives. An open block that is one long paragraph (a long answer often is: the demo's
// `/stream 100000` is 700 KB of one line) is cut further into runs of words, rendered once each when
// the next run begins: only the last run is rendered again. Each run is laid out as a block of its own
// (Chromium lays a paragraph out whole when any of it changes: 57 ms a word at 700 KB, 2 ms in runs),
// so such a paragraph starts a new line every 4 KB or so. Where the cuts fall depends on the text
// alone, so an answer drawn as it streams and the same answer drawn at once after a reload are the same.

import { copyButton } from "./copy.js";
import { renderInline, renderMarkdown } from "./markdown.js";

const RUN = 4096; // characters of a paragraph's words rendered together, at least
const NOT_A_PARAGRAPH = /^( {4}|\t| {0,3}(#{1,6}(\s|$)|>|[-*+](\s|$)|\d{1,9}[.)](\s|$)|```|~~~|\||<|[-*_=]{3,}\s*$))/;
const FENCE = /^ {0,3}(`{3,}|~{3,})/;

export class StreamedMarkdown {
  /** @param {HTMLElement} element where the answer is drawn (its children are this view's) */
  constructor(element) {
    this.element = element;
    this.reset();
  }

  reset() {
    this.text = "";
    this.settled = 0; // characters of the text in complete blocks, drawn
    this.open = null; // the open block's element, if the open block has any text
    this.runs = null; // for an open paragraph: {end, counts, scanned, tail} (end: characters drawn in closed runs)
    this.element.replaceChildren();
  }

  /** Draw `text`: what it adds to the text drawn before, or all of it if it is another text. */
  update(text) {
    if (text === this.text) return;
    if (text.length < this.settled || !text.startsWith(this.text.slice(0, this.settled))) this.reset();
    this.text = text;
    for (let end = blockEnd(text, this.settled); end !== -1; end = blockEnd(text, this.settled)) {
      const block = document.createElement("div");
      block.className = "md-block";
      drawBlock(block, text.slice(this.settled, end));
      this.element.insertBefore(block, this.open);
      this.open?.remove();
      this.open = null;
      this.runs = null;
      this.settled = end;
    }
    this.#drawOpen(text.slice(this.settled));
  }

  #drawOpen(source) {
    if (!source.trim()) {
      this.open?.remove();
      this.open = null;
      this.runs = null;
      return;
    }
    if (!this.open) {
      this.open = document.createElement("div");
      this.open.className = "md-open";
      this.element.append(this.open);
    }
    const paragraph = source.length > RUN && !source.includes("\n") && !NOT_A_PARAGRAPH.test(source);
    if (!paragraph) {
      this.runs = null;
      drawBlock(this.open, source);
      return;
    }
    if (!this.runs) {
      const p = document.createElement("p");
      const tail = document.createElement("span");
      tail.className = "md-run";
      p.append(tail);
      this.open.replaceChildren(p);
      this.runs = { end: 0, scanned: 0, counts: newCounts(), tail };
    }
    const runs = this.runs;
    for (let at = runs.scanned; at < source.length; at++) {
      const char = source[at];
      if (char in runs.counts) runs.counts[char] += 1;
      if (char === " " && at + 1 - runs.end >= RUN && balanced(runs.counts)) {
        const run = document.createElement("span");
        run.className = "md-run";
        run.innerHTML = renderInline(source.slice(runs.end, at + 1));
        runs.tail.before(run);
        runs.end = at + 1;
        runs.counts = newCounts();
      }
    }
    runs.scanned = source.length;
    runs.tail.innerHTML = renderInline(source.slice(runs.end));
  }
}

/**
 * A block's Markdown, each code block in it with a copy button (added here: the sanitiser lets no button
 * through), and focusable, so that a line too wide for the screen can be scrolled to from the keyboard.
 */
function drawBlock(element, source) {
  element.innerHTML = renderMarkdown(source);
  for (const pre of element.querySelectorAll("pre")) {
    const code = pre.querySelector("code") ?? pre;
    const wrapper = document.createElement("div");
    wrapper.className = "code-block";
    pre.replaceWith(wrapper);
    pre.tabIndex = 0;
    // marked ends a code block with a newline of its own: the code is what stood between the fences.
    wrapper.append(pre, copyButton("Copy code", () => code.textContent.replace(/\n$/, "")));
  }
}

/** Where the first complete block after `from` ends (after the blank line that ends it), or -1. */
function blockEnd(text, from) {
  let fence = null;
  let content = false;
  for (let start = from, end = text.indexOf("\n", start); end !== -1; start = end + 1, end = text.indexOf("\n", start)) {
    const line = text.slice(start, end);
    const marker = FENCE.exec(line)?.[1];
    if (fence) {
      if (marker && marker[0] === fence[0] && marker.length >= fence.length && !line.trim().slice(marker.length).trim()) fence = null;
    } else if (marker) {
      fence = marker;
    } else if (!line.trim()) {
      if (content) return end + 1;
      continue;
    }
    content = true;
  }
  return -1;
}

function newCounts() {
  return { "`": 0, "*": 0, _: 0, "~": 0, "[": 0, "]": 0, "<": 0, ">": 0 };
}

/** Nothing inline is open: a cut here splits no code span, emphasis, link or tag. */
function balanced(c) {
  return c["`"] % 2 === 0 && c["*"] % 2 === 0 && c._ % 2 === 0 && c["~"] % 2 === 0 && c["["] === c["]"] && c["<"] === c[">"];
}
