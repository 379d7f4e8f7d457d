// Copy buttons: a code block's code, an answer's Markdown.
//
// A button's visible word is drawn by CSS (`.copy::after`), so it is no part of the answer's text: a
// selection of the answer, copied by hand, does not pick it up (nor does its innerText).

const SHOWN_MS = 1500; // how long "Copied" stays

/** A button, named `label`, that puts `text()` on the clipboard and says so for a moment. */
export function copyButton(label, text) {
  const button = document.createElement("button");
  button.type = "button";
  button.className = "quiet copy";
  button.setAttribute("aria-label", label);
  button.addEventListener("click", async () => {
    try {
      await navigator.clipboard.writeText(text());
      button.dataset.copied = "Copied";
    } catch {
      button.dataset.copied = "Not copied"; // no clipboard here (a page served over plain http, not from this machine)
    }
    setTimeout(() => delete button.dataset.copied, SHOWN_MS);
  });
  return button;
}
