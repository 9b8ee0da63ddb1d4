// Keeps console pages current without a framework:
// - an element with data-live-url is refilled every few seconds from that
//   URL (an HTML fragment the server renders), while the tab is visible;
//   an element with data-live-status says whether that is working;
// - <main data-reload-seconds="N"> reloads the page every N seconds (a copy
//   being built), unless someone is typing in one of its forms.
const EVERY_MS = 3000;

function timeNow() {
  return new Date().toISOString().slice(11, 19) + " UTC";
}

function say(text, problem = false) {
  for (const status of document.querySelectorAll("[data-live-status]")) {
    status.textContent = text;
    status.classList.toggle("problem", problem);
  }
}

async function refresh(element) {
  if (document.hidden) return;
  try {
    const response = await fetch(element.dataset.liveUrl, { credentials: "same-origin", cache: "no-store" });
    if (response.redirected && new URL(response.url).pathname === "/console/login") {
      say("Your session has ended: reload the page to log in again.", true);
      return "stop";
    }
    if (!response.ok) {
      say(`Not updating: the server answered ${response.status}. Retrying.`, true);
      return;
    }
    element.innerHTML = await response.text();
    say(`Live: updated ${timeNow()}.`);
  } catch {
    say("Not updating: no connection to the server. Retrying.", true);
  }
}

for (const element of document.querySelectorAll("[data-live-url]")) {
  const timer = setInterval(async () => {
    if ((await refresh(element)) === "stop") clearInterval(timer);
  }, EVERY_MS);
  document.addEventListener("visibilitychange", () => refresh(element));
}

const main = document.querySelector("main[data-reload-seconds]");
if (main) {
  const seconds = Number(main.dataset.reloadSeconds) || 5;
  setInterval(() => {
    const typing = [...main.querySelectorAll("textarea, input:not([type=hidden])")]
      .some((field) => field === document.activeElement || field.value);
    if (!document.hidden && !typing) location.reload();
  }, seconds * 1000);
}
