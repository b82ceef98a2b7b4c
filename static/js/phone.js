// The agent's browser phone: one file for Twilio's Voice SDK and the sandbox stand-in.
(function () {
  "use strict";
  const Voice = window.SandboxVoice || window.Twilio;  // the page loads exactly one of them
  const panel = document.getElementById("phone");
  if (!panel || !Voice) return;

  const $ = (id) => document.getElementById(id);
  const stateEl = $("device-state");
  const incomingEl = $("incoming");
  const inCallEl = $("in-call");
  const autoAccept = panel.dataset.autoAccept === "true";

  // What an agent reads instead of a bare code (TWILIO.md 5.3).
  const SENTENCES = {
    20101: "The phone's sign-in token was refused. Reload the page; if it keeps happening, ask your administrator to check the Twilio API key.",
    20104: "The phone's sign-in token expired. Reconnecting…",
    31005: "The call dropped because the connection to Twilio failed. Check your network.",
    31008: "That call was withdrawn before it could be answered.",
    31208: "The browser is blocking the microphone. Allow it in the address bar, then reload.",
    31401: "The browser is blocking the microphone. Allow it in the address bar, then reload.",
    31402: "No microphone could be opened. Check one is plugged in and not used by another app.",
    53000: "The phone lost its connection to Twilio. It will reconnect by itself; check your network if it doesn't.",
  };
  const sentence = (error) =>
    SENTENCES[error.code] || `The phone hit a problem (${error.code || "unknown"}): ${error.description || error.message}`;

  let device = null;
  let current = null;  // the Call on screen

  function show(state, text) {
    stateEl.dataset.state = state;
    stateEl.textContent = text;
    readiness();
  }

  // Before an agent may become available: the phone registered (with a fresh token) and a
  // microphone the browser lets the page use. The presence form carries the answer.
  let microphone = "unknown";
  if (navigator.permissions && navigator.permissions.query) {
    navigator.permissions.query({ name: "microphone" }).then((status) => {
      microphone = status.state;
      status.onchange = () => { microphone = status.state; readiness(); };
      readiness();
    }).catch(() => {});
  }

  function readiness() {
    const missing = [];
    if (stateEl.dataset.state === "off") missing.push("start the phone");
    else if (!device || device.state !== "registered") missing.push("the phone is not connected yet");
    if (microphone === "denied") missing.push("allow the microphone in the address bar");
    const ready = missing.length === 0;
    const input = $("phone-ready");
    if (input) input.value = ready ? "yes" : "";
    const text = $("phone-readiness");
    if (text) text.textContent = ready ? "Phone ready: registered, token fresh, microphone allowed." : `Before you become available: ${missing.join("; ")}.`;
  }

  async function fetchToken() {
    const response = await fetch(panel.dataset.tokenUrl, { headers: { Accept: "application/json" }, credentials: "same-origin" });
    if (response.status === 401) {
      show("error", "Your session has ended. Reload the page and sign in again.");
      throw new Error("signed out");
    }
    if (!response.ok) throw new Error(`token ${response.status}`);
    return response.json();
  }

  let starting = false;

  function phoneButton(disabled, text) {
    $("start-phone").disabled = disabled;
    $("start-phone").textContent = text;
  }

  // One phone per agent: of the tabs of this browser, the one holding this lock registers the phone.
  // A tab closing lets go of it by itself; "Use the phone here" takes it (steal) from the other tab.
  const LOCK = `dialer-phone-${panel.dataset.identity || ""}`;
  let releaseLock = null;

  function ownPhone(takeOver) {
    if (!navigator.locks) return Promise.resolve(true);  // no Web Locks: every tab registers, as before
    return new Promise((resolve) => {
      navigator.locks.request(LOCK, takeOver ? { steal: true } : { ifAvailable: true }, (lock) => {
        if (!lock) { resolve(false); return null; }
        resolve(true);
        return new Promise((release) => { releaseLock = release; });  // held while this tab has the phone
      }).catch((error) => { if (error.name === "AbortError") phoneMoved(); });
    });
  }

  function phoneElsewhere(text) {
    if (device) { device.destroy(); device = null; }
    current = null;
    incomingEl.hidden = true;
    inCallEl.hidden = true;
    phoneButton(true, "Phone on");
    $("take-phone").hidden = false;
    show("elsewhere", text);
  }

  function phoneMoved() {
    releaseLock = null;
    phoneElsewhere("Your phone moved to another tab: calls ring there now.");
  }

  async function start(event, takeOver = false) {
    if (device || starting) return;  // the first click both starts the phone and may be this button
    if (stateEl.dataset.state === "elsewhere" && !takeOver) return;  // only "Use the phone here" moves it
    starting = true;
    // The button stays where it is (disabled), so nothing below it moves under a click in flight.
    phoneButton(true, "Phone on");
    show("starting", "starting…");
    try {
      if (!(await ownPhone(takeOver))) {
        phoneElsewhere("Your phone is on in another tab of this browser: calls ring there. Use it there, or move it here.");
        return;
      }
      $("take-phone").hidden = true;
      await connectWith(await fetchToken());
    } catch (e) {
      device = null;
      if (releaseLock) { releaseLock(); releaseLock = null; }
      phoneButton(false, "Start phone");
      if (stateEl.dataset.state === "starting") show("error", "Could not get a phone token. Check your connection and try again.");
    } finally {
      starting = false;
    }
  }

  async function connectWith(data) {
    device = new Voice.Device(data.token, { closeProtection: "A call is in progress. Leave anyway?" });
    device.on("registering", () => show("starting", "connecting…"));
    device.on("registered", () => show("ready", `ready: calls for you ring here (${data.identity})`));
    device.on("unregistered", () => { if (stateEl.dataset.state === "ready") show("offline", "offline: reconnecting…"); });
    device.on("error", async (error) => {
      show(error.code === 20104 ? "offline" : "error", sentence(error));
      if (error.code === 20104) {
        // Tokens run out on long shifts: fetch a fresh one and register again.
        try {
          const fresh = await fetchToken();
          device.destroy();
          await connectWith(fresh);
        } catch (e) { /* the message above already tells the agent */ }
      }
    });
    device.on("tokenWillExpire", async () => {
      try { await device.updateToken((await fetchToken()).token); } catch (e) { /* shown by fetchToken */ }
    });
    device.on("incoming", onIncoming);
    await device.register();
  }

  // Calls this tab placed: only these are answered without a click. Another tab of the same agent
  // shows the call too (the event stream), but must not take it.
  const placedHere = new Set();
  const shownCall = new URLSearchParams(location.search).get("call");  // after a plain form post's redirect
  if (shownCall) placedHere.add(shownCall);
  document.addEventListener("htmx:after:swap", (event) => {
    const request = event.detail.ctx && event.detail.ctx.request;
    const form = document.querySelector("#dialer form");
    if (!request || !request.action || !form || new URL(request.action, location.href).pathname !== new URL(form.action).pathname) return;
    for (const call of document.querySelectorAll("#live-calls [data-live]")) placedHere.add(call.id.replace("call-", ""));
  });

  function placedByMe(call) {
    const id = call.customParameters.get("call_id");
    return id && placedHere.has(id) && document.querySelector(`#call-${CSS.escape(id)}[data-live]`);
  }

  function onIncoming(call) {
    current = call;
    const customer = call.customParameters.get("customer") || call.parameters.From || "";
    call.on("accept", () => inCall(call));
    call.on("disconnect", () => ended(call, "Call ended."));
    call.on("cancel", () => ended(call, "The call stopped ringing: the caller hung up, or another tab answered it."));
    call.on("reject", () => ended(call, "Call rejected."));
    call.on("error", (error) => {
      // Without a microphone the agent cannot talk: let the caller hear the fallback now, not after the timeout.
      ended(call, sentence(error));
      if ((error.code === 31401 || error.code === 31402 || error.code === 31208) && call.status() === "pending") call.reject();
    });
    call.on("mute", (muted) => {
      $("mute-call").setAttribute("aria-pressed", String(muted));
      $("mute-call").textContent = muted ? "Unmute" : "Mute";
    });
    if (autoAccept && placedByMe(call)) {
      $("call-state").textContent = `connecting to ${customer}…`;
      inCallEl.hidden = false;
      call.accept();
      return;
    }
    describeCaller(call, customer);
    incomingEl.hidden = false;
    show("ringing", call.customParameters.get("direction") === "inbound" ? `${customer} is calling in` : "ringing");
  }

  // Who is calling, in the agent's words: the number, whether we know them (earlier calls, the
  // last one's wrap-up, a link to it) and, for a customer calling in, how long they have waited.
  function describeCaller(call, customer) {
    const params = call.customParameters;
    const inbound = params.get("direction") === "inbound";
    $("incoming-title").textContent = inbound ? "A customer is calling in" : "Incoming call";
    $("incoming-from").textContent = customer ? `from ${customer}` : "";
    const known = $("incoming-known");
    known.textContent = inbound && params.get("known") ? `${params.get("known")}. ` : "";
    if (inbound && params.get("last_call")) {
      const link = document.createElement("a");
      link.href = `/calls/${encodeURIComponent(params.get("last_call"))}`;
      link.target = "_blank";
      link.textContent = "Their last call";
      known.append(link);
    }
    const waited = $("incoming-waited");
    if (inbound && params.get("since")) waited.querySelector("time").dataset.since = params.get("since");
    waited.hidden = !(inbound && params.get("since"));
  }

  function inCall(call) {
    incomingEl.hidden = true;
    inCallEl.hidden = false;
    $("call-state").textContent = `talking to ${call.customParameters.get("customer") || call.parameters.From || "the caller"}`;
    show("busy", "on a call");
  }

  function ended(call, message) {
    if (call !== current) return;
    current = null;
    incomingEl.hidden = true;
    inCallEl.hidden = true;
    $("mute-call").setAttribute("aria-pressed", "false");
    $("mute-call").textContent = "Mute";
    show(device && device.state === "registered" ? "ready" : "offline", `${message} Ready for the next call.`);
  }

  if (!window.isSecureContext) {
    show("error", "This page is not served over HTTPS, so the browser will not give it a microphone. Ask your administrator to put the dialer behind HTTPS.");
  }
  $("start-phone").addEventListener("click", start);
  $("take-phone").addEventListener("click", (event) => start(event, true));
  // Browsers only allow sound after a gesture, so the phone starts on the first click or key.
  document.addEventListener("pointerdown", start, { once: true });
  document.addEventListener("keydown", start, { once: true });
  $("accept-call").addEventListener("click", () => current && current.accept());
  $("reject-call").addEventListener("click", () => current && current.reject());
  $("hangup-call").addEventListener("click", () => current && current.disconnect());
  $("mute-call").addEventListener("click", () => current && current.mute(!current.isMuted()));

  // Keyboard (listed on the page): single keys, except while typing in a field.
  const KEYS = {
    c: () => $("to") && $("to").focus(),
    a: () => !incomingEl.hidden && $("accept-call").click(),
    r: () => !incomingEl.hidden && $("reject-call").click(),
    h: () => {
      if (!inCallEl.hidden) return $("hangup-call").click();
      const end = document.querySelector("#live-calls [data-live] button.danger");
      if (end) end.click();
    },
    m: () => !inCallEl.hidden && $("mute-call").click(),
  };
  document.addEventListener("keydown", (event) => {
    if (event.ctrlKey || event.metaKey || event.altKey || event.repeat) return;
    const target = event.target;
    if (target.closest && target.closest("input, textarea, select, [contenteditable]")) return;
    const action = KEYS[event.key.toLowerCase()];
    if (action) { event.preventDefault(); action(); }
  });
})();
