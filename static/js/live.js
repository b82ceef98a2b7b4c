// What the page's event stream (#live, htmx's hx-sse) needs besides swapping: calls it has not
// shown yet, running timers, a banner when the stream is cut, and a question before leaving mid-call.
(function () {
  "use strict";
  const live = document.getElementById("live");
  const banner = document.getElementById("connection");
  if (!live) return;

  function say(text) {
    banner.textContent = text;
    banner.hidden = !text;
  }

  // A message morphs elements in by id; one this page has not shown yet gets an empty place first,
  // in the list its data-upsert names, if that list is on this page and for this agent.
  live.addEventListener("htmx:sse:before:message", (event) => {
    const data = event.detail.message.data;
    if (!data) return;
    const parsed = document.createElement("template");  // a template keeps table rows as they are
    parsed.innerHTML = data;
    for (const element of parsed.content.children) {
      const call = /^call-(\d+)$/.exec(element.id);
      if (call) {  // a call's page reads itself again when that call changes
        for (const page of document.querySelectorAll(`[data-follow-call="${call[1]}"]`)) htmx.trigger(page, "dialer:call-changed");
      }
      if (!element.id || document.getElementById(element.id)) continue;
      const list = element.dataset.upsert && document.querySelector(element.dataset.upsert);
      if (!list || (list.dataset.agent && list.dataset.agent !== element.dataset.agent)) continue;
      const place = document.createElement(element.tagName);
      place.id = element.id;
      list.prepend(place);
    }
  });

  live.addEventListener("htmx:sse:after:connection", () => say(""));
  live.addEventListener("htmx:sse:error", (event) => {
    if (event.detail.status === 401) {
      say("Your session has ended. Sign in again to see your calls live (your phone keeps working until you reload).");
    } else {
      say("The connection to the dialer was lost. Reconnecting… what you see may be out of date.");
    }
  });
  // The first connection is an ordinary htmx request, which htmx's SSE extension does not retry:
  // a 401 there means the session already ended; a failed one is tried again until it connects.
  let retry = null;
  function firstConnectionFailed(event) {
    const ctx = event.detail && event.detail.ctx;
    const status = ctx && ctx.response && ctx.response.status;
    if (status === 401) {
      say("Your session has ended. Sign in again to see your calls live.");
      return;
    }
    if (status && status < 400) return;  // connected: the extension has it from here
    say("The connection to the dialer was lost. Reconnecting… what you see may be out of date.");
    if (!retry) retry = setTimeout(() => { retry = null; htmx.trigger(live, "dialer:reconnect"); }, 2000);
  }
  live.addEventListener("htmx:after:request", firstConnectionFailed);
  live.addEventListener("htmx:error", firstConnectionFailed);

  // Timers run here between messages; the server's next message sets the truth again.
  function tick() {
    const now = Date.now();
    for (const timer of document.querySelectorAll("time[data-since]")) {
      const seconds = Math.max(0, Math.floor((now - Date.parse(timer.dataset.since)) / 1000));
      const h = Math.floor(seconds / 3600), m = Math.floor((seconds % 3600) / 60), s = seconds % 60;
      const text = h ? `${h}:${String(m).padStart(2, "0")}:${String(s).padStart(2, "0")}` : `${m}:${String(s).padStart(2, "0")}`;
      if (timer.textContent !== text) timer.textContent = text;
    }
  }
  // The board keeps an ended call for a minute, so its outcome can be read, then lets it go.
  function sweep() {
    for (const row of document.querySelectorAll(".board-list [data-ended-at]")) {
      if (Date.now() - Date.parse(row.dataset.endedAt) > 60000) row.remove();
    }
  }
  setInterval(() => { tick(); sweep(); }, 1000);
  tick();

  // One-click redial: the number goes into the dialer's form, which is sent as if typed (its own
  // one-submit key, the one-call-at-a-time rule and the rate limit all apply).
  document.addEventListener("click", (event) => {
    const button = event.target.closest && event.target.closest("[data-redial]");
    const form = document.querySelector("#dialer form");
    if (!button || !form) return;
    form.querySelector("[name=to]").value = button.dataset.redial;
    const missed = form.querySelector("[name=callback_of]");
    if (missed) missed.value = button.dataset.callbackOf || "";  // a missed call: marked called back
    form.requestSubmit();
  });

  // Leaving mid-call drops the agent's side of it: ask first.
  window.addEventListener("beforeunload", (event) => {
    if (document.querySelector("#live-calls [data-live]")) {
      event.preventDefault();
      event.returnValue = "";
    }
  });
})();
