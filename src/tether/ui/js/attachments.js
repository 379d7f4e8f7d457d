// Attachments in the browser: files picked with the attach button, pasted or dropped onto the
// composer wait there as chips (each with a remove button) until the message is sent, as its parts
// (see tether/attachments.py). A message's attachments are drawn under its text: images as
// thumbnails, files as chips with their name, type and size that download on a click.
//
// Their bytes come from v1/attachments/{id} with the signed-in user's token, which an <img src>
// could not send, so they are fetched and shown from blob: URLs, each fetched once per page.

import { save } from "./export.js";

const BY_EXTENSION = {
  png: "image/png",
  jpg: "image/jpeg",
  jpeg: "image/jpeg",
  gif: "image/gif",
  webp: "image/webp",
  pdf: "application/pdf",
  txt: "text/plain",
  md: "text/markdown",
  markdown: "text/markdown",
  csv: "text/csv",
  json: "application/json",
};

/** A file's media type: the browser's, else by its extension (the server says which it takes). */
export function mediaTypeOf(file) {
  const extension = file.name.split(".").pop().toLowerCase();
  return file.type || BY_EXTENSION[extension] || "application/octet-stream";
}

export function kindOf(mediaType) {
  return mediaType.startsWith("image/") ? "image" : "file";
}

export function formatSize(bytes) {
  if (bytes < 1024) return `${bytes} bytes`;
  if (bytes < 1024 * 1024) return `${(bytes / 1024).toFixed(1)} KB`;
  return `${(bytes / 1024 / 1024).toFixed(1)} MB`;
}

/** What a chip says of an attachment: its type, and its size when it is known. */
export function describe(attachment) {
  const size = attachment.size ?? null;
  return [attachment.media_type, size === null ? null : formatSize(size)].filter(Boolean).join(" · ");
}

/** The blob's bytes in base64, as a part's `data`. */
export async function base64Of(blob) {
  const url = await new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(reader.result);
    reader.onerror = () => reject(reader.error);
    reader.readAsDataURL(blob);
  });
  return url.slice(url.indexOf(",") + 1);
}

/** A part that attaches a blob (a File, or the bytes of an attachment sent before). */
export async function partOf(blob, mediaType, name) {
  const part = { type: kindOf(mediaType), media_type: mediaType, data: await base64Of(blob) };
  return name ? { ...part, name } : part;
}

/** The files a message will carry, until it is sent. */
export class Pending {
  /** @param {() => void} onChange called when files are added or removed */
  constructor(onChange) {
    this.onChange = onChange;
    this.files = [];
  }

  add(files) {
    const added = [...files];
    if (!added.length) return;
    this.files.push(...added.map((file) => ({ file, mediaType: mediaTypeOf(file), preview: null })));
    this.onChange();
  }

  remove(entry) {
    if (entry.preview) URL.revokeObjectURL(entry.preview);
    this.files = this.files.filter((f) => f !== entry);
    this.onChange();
  }

  clear() {
    for (const entry of this.files) if (entry.preview) URL.revokeObjectURL(entry.preview);
    this.files = [];
    this.onChange();
  }

  /** The message's parts: its text (if any), then the files in the order they were added. */
  async parts(text) {
    const files = await Promise.all(this.files.map(({ file, mediaType }) => partOf(file, mediaType, file.name)));
    return [...(text ? [{ type: "text", text }] : []), ...files];
  }
}

/** The chips of the files waiting to be sent, each with a remove button. */
export function drawPending(list, pending) {
  list.hidden = pending.files.length === 0;
  list.replaceChildren(
    ...pending.files.map((entry) => {
      const item = document.createElement("li");
      item.className = "attachment pending";
      item.dataset.testid = "pending-attachment";
      if (kindOf(entry.mediaType) === "image") {
        entry.preview ??= URL.createObjectURL(entry.file);
        item.append(thumbnail(entry.file.name, entry.preview));
      }
      item.append(label(entry.file.name, describe({ media_type: entry.mediaType, size: entry.file.size })));
      const remove = document.createElement("button");
      remove.type = "button";
      remove.className = "quiet remove";
      remove.textContent = "×";
      remove.setAttribute("aria-label", `Remove ${entry.file.name}`);
      remove.addEventListener("click", () => {
        // The focus goes on to the next chip's button (or the message box), not to nowhere.
        const index = pending.files.indexOf(entry);
        pending.remove(entry);
        const buttons = list.querySelectorAll(".remove");
        (buttons[Math.min(index, buttons.length - 1)] ?? list.parentElement.querySelector("textarea")).focus();
      });
      item.append(remove);
      return item;
    }),
  );
}

/**
 * A message's attachments, under its text: an image as a thumbnail, a file as a chip that downloads.
 *
 * @param {HTMLElement} list
 * @param {object[]} attachments the message's `attachments` (tether/attachments.py `ref`)
 * @param {(attachment: object) => Promise<{blob: Blob, url: string}>} load a stored attachment's bytes
 */
export function drawAttachments(list, attachments, load) {
  list.hidden = attachments.length === 0;
  list.replaceChildren(
    ...attachments.map((attachment) => {
      const item = document.createElement("li");
      item.className = `attachment ${attachment.type}`;
      item.dataset.testid = "attachment";
      const name = attachment.name || attachment.url.split("/").pop() || attachment.type;
      if (attachment.type === "image" && (attachment.id || attachment.url.startsWith("https:"))) {
        const image = thumbnail(name, attachment.id ? "" : attachment.url);
        if (attachment.id) load(attachment).then(({ url }) => (image.src = url), () => image.classList.add("broken"));
        item.append(image);
      }
      item.append(label(name, describe(attachment)));
      item.append(attachment.id ? saveButton(attachment, name, load) : openLink(attachment.url));
      return item;
    }),
  );
}

function thumbnail(name, src) {
  const image = document.createElement("img");
  image.className = "thumb";
  image.alt = name;
  if (src) image.src = src;
  return image;
}

function label(name, what) {
  const text = document.createElement("span");
  text.className = "label";
  const title = document.createElement("span");
  title.className = "name";
  title.textContent = name;
  const kind = document.createElement("span");
  kind.className = "what";
  kind.textContent = what;
  text.append(title, kind);
  return text;
}

function saveButton(attachment, name, load) {
  const button = document.createElement("button");
  button.type = "button";
  button.className = "quiet save";
  button.textContent = "Download";
  button.setAttribute("aria-label", `Download ${name}`);
  button.addEventListener("click", async () => {
    const { url } = await load(attachment);
    save(url, name);
  });
  return button;
}

function openLink(url) {
  const link = document.createElement("a");
  link.className = "open";
  link.href = url;
  link.target = "_blank";
  link.rel = "noopener noreferrer";
  link.textContent = "Open";
  return link;
}
