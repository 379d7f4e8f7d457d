// Signing in: the dialog that asks for a token, and the sidebar's line that says who is signed in.
//
// The UI keeps only the token; who it belongs to is the server's answer to GET /v1/me. Before
// signing in, every /v1 route is 401, but /healthz (public) says how the server signs people in;
// if it cannot be asked, the dialog's wording uses what this browser saw last time.

const AUTH_KEY = "tether.auth";

const $ = (id) => document.getElementById(id);

let prompt = null;

/**
 * Show the sign-in dialog until a token is entered (it cannot be dismissed: nothing works
 * without one). Every request refused meanwhile waits for the same dialog.
 *
 * @param {{refused: string | null}} why the server's reason when a token it had was refused
 * @param {(token: string) => void} store
 * @returns {Promise<void>} once the new token is stored
 */
export function askForToken({ refused }, store) {
  prompt ??= authMode().then((auth) => new Promise((resolve) => {
    $("sign-in-title").textContent = auth === "users" ? "Sign in with your token" : "Sign in";
    $("token-reason").textContent = refused
      ? `That token was refused (${refused}).`
      : auth === "users"
        ? "Enter the token you were given for this server."
        : auth === "token"
          ? "Enter the token Tether was started with."
          : "This server needs a token.";
    $("token-form").addEventListener(
      "submit",
      () => {
        store($("token-input").value.trim());
        $("token-input").value = "";
        prompt = null;
        resolve();
      },
      { once: true },
    );
    $("token-dialog").showModal();
  }));
  return prompt;
}

/** How the server authenticates ("token", "users", …), from its health check, else as last seen. */
async function authMode() {
  try {
    const health = await fetch("healthz", { cache: "no-store" });
    if (health.ok) {
      const { auth } = await health.json();
      if (auth) {
        localStorage.setItem(AUTH_KEY, auth);
        return auth;
      }
    }
  } catch {
    // Unreachable for now: the last known way will do for the wording.
  }
  return localStorage.getItem(AUTH_KEY);
}

/** Whether the sign-in dialog is open (Esc belongs to it then). */
export function signingIn() {
  return $("token-dialog").open;
}

/**
 * The sidebar's account line from GET /v1/me: nothing without auth; "Signed in" with the
 * server's one token; "Signed in as NAME" for a user of their own. Sign out only when this page
 * holds the token: someone signed in by the app Tether is mounted in (its cookie) signs out there.
 *
 * @param {{user: string | null, auth: string} | null} me null: signed out, or a server too old to say
 * @param {boolean} holdsToken whether the page signed in with a token of its own
 */
export function drawAccount(me, holdsToken = true) {
  if (me) localStorage.setItem(AUTH_KEY, me.auth);
  const shown = Boolean(me) && me.auth !== "none";
  $("account").dataset.auth = me?.auth ?? "";
  $("account").hidden = !shown;
  if (!shown) return;
  const named = me.user && me.auth !== "token";
  $("signed-in-as").textContent = named ? `Signed in as ${me.user}` : "Signed in";
  $("signed-in-as").title = named ? me.user : "";
  $("sign-out").hidden = !holdsToken;
}
