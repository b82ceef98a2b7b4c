// A stand-in for the Twilio Voice JS SDK's Device and Call, talking to the dialer's sandbox carrier.
// Same method and event names as @twilio/voice-sdk 2.x (TWILIO.md section 5), so phone.js is one file
// for both modes. Signalling is server-sent events in, HTTP posts out; there is no audio.
(function () {
  "use strict";
  const script = document.currentScript;
  const BASE = script.dataset.sandboxBase;

  class Emitter {
    constructor() { this._handlers = {}; }
    on(name, fn) { (this._handlers[name] = this._handlers[name] || []).push(fn); return this; }
    addListener(name, fn) { return this.on(name, fn); }
    once(name, fn) { const w = (...a) => { this.off(name, w); fn(...a); }; return this.on(name, w); }
    off(name, fn) { this._handlers[name] = (this._handlers[name] || []).filter((h) => h !== fn); return this; }
    removeListener(name, fn) { return this.off(name, fn); }
    emit(name, ...args) { (this._handlers[name] || []).slice().forEach((h) => h(...args)); return true; }
  }

  class TwilioError extends Error {
    constructor(code, name, description) {
      super(`${name} (${code}): ${description}`);
      this.code = code; this.name = name; this.description = description; this.explanation = description;
    }
  }
  const ERROR_NAMES = {
    20101: "AccessTokenInvalid", 20104: "AccessTokenExpired", 31005: "ConnectionError",
    31008: "CallCancelledError", 31401: "PermissionDeniedError", 31402: "AcquisitionFailedError",
    53000: "SignalingConnectionError",
  };
  const makeError = (code, message) => new TwilioError(code, ERROR_NAMES[code] || "TwilioError", message);

  async function post(url, body, method) {
    const response = await fetch(url, {
      method: method || "POST", headers: { "Content-Type": "application/json" },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    let data = {};
    try { data = await response.json(); } catch (e) { /* an empty body */ }
    return { ok: response.ok, status: response.status, data };
  }

  // The SDK plays its "incoming" sound while a call rings: here two tones (400 + 450 Hz, the UK
  // ring's cadence) made with WebAudio, which browsers allow once the page has had a click or a key
  // (the phone starts on the first one).
  const ringtone = {
    context: null, timer: null, playing: false,
    start() {
      const AudioContext = window.AudioContext || window.webkitAudioContext;
      if (this.playing || !AudioContext) return;
      this.context = this.context || new AudioContext();
      this.playing = true;
      const burst = (at) => {
        for (const hz of [400, 450]) {
          const tone = this.context.createOscillator(), gain = this.context.createGain();
          tone.frequency.value = hz;
          gain.gain.value = 0.08;
          tone.connect(gain).connect(this.context.destination);
          tone.start(at);
          tone.stop(at + 0.4);
        }
      };
      const ring = () => { const now = this.context.currentTime; burst(now); burst(now + 0.6); };
      ring();
      this.timer = setInterval(ring, 3000);
    },
    stop() {
      clearInterval(this.timer);
      this.timer = null;
      this.playing = false;
    },
  };

  class Call extends Emitter {
    constructor(device, callSid, parameters) {
      super();
      this._device = device;
      this._status = "pending";
      this._muted = false;
      this.direction = "INCOMING";
      this.parameters = parameters;
      this.customParameters = new Map(new URLSearchParams(parameters.Params || ""));
    }
    get _url() { return `${BASE}/${this._device._id}/calls/${this.parameters.CallSid}`; }
    status() { return this._status; }
    isMuted() { return this._muted; }
    async accept() {
      if (this._status !== "pending") return;
      this._status = "connecting";
      this._device._ring();
      // As the SDK does, answering first opens the microphone (no audio flows in the sandbox).
      try {
        if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
          throw Object.assign(new Error("getUserMedia is unavailable: the page is not a secure context (HTTPS)"), { name: "NotSupportedError" });
        }
        this._stream = await navigator.mediaDevices.getUserMedia({ audio: true });
      } catch (e) {
        this._status = "pending";
        const denied = e.name === "NotAllowedError" || e.name === "PermissionDeniedError" || e.name === "SecurityError";
        this.emit("error", makeError(denied ? 31401 : 31402, `${e.name}: ${e.message}`));
        return;
      }
      const r = await post(`${this._url}/accept`, {});
      if (!r.ok) {
        this._close();
        this.emit("error", makeError(r.data.code || 31005, r.data.message || "Could not answer the call"));
        return;
      }
      this._status = "open";
      this.emit("accept", this);
    }
    reject() {
      if (this._status !== "pending") return;
      post(`${this._url}/reject`, {});
      this._close();
      this.emit("reject");
    }
    ignore() {
      if (this._status !== "pending") return;
      this._close();  // tells nobody: the caller keeps ringing until the timeout
    }
    disconnect() {
      if (this._status === "closed") return;
      const wasPending = this._status === "pending";
      post(`${this._url}/disconnect`, {});
      this._close();
      if (!wasPending) this.emit("disconnect", this);
    }
    mute(shouldMute = true) {
      if (this._muted === !!shouldMute) return;
      this._muted = !!shouldMute;
      this.emit("mute", this._muted, this);
    }
    sendDigits(digits) {
      if (!/^[0-9*#w]*$/.test(digits)) throw new TypeError("Illegal character passed into sendDigits");
      post(`${this._url}/digits`, { digits });
    }
    _close() {
      if (this._stream) this._stream.getTracks().forEach((t) => t.stop());
      this._stream = null;
      this._status = "closed";
      this._device._calls = this._device._calls.filter((c) => c !== this);
      this._device._ring();
    }
    // From the carrier:
    _cancel() { if (this._status === "closed") return; this._close(); this.emit("cancel"); }
    _hangup() { if (this._status === "closed") return; this._close(); this.emit("disconnect", this); }
  }

  class Device extends Emitter {
    constructor(token, options = {}) {
      super();
      if (typeof token !== "string") throw new TypeError("Parameter \"token\" must be of type \"string\".");
      this._token = token;
      this._options = options;
      this._calls = [];
      this._id = null;
      this._source = null;
      this._expiryTimer = null;
      this.state = "unregistered";
      this.identity = null;
    }
    get token() { return this._token; }
    get calls() { return this._calls.slice(); }
    get isBusy() { return this._calls.some((c) => c.status() === "open" || c.status() === "connecting"); }
    updateOptions(options) { Object.assign(this._options, options); }

    async register() {
      if (this.state !== "unregistered") throw new Error("InvalidStateError: Attempt to register when device is in state \"" + this.state + "\".");
      this.state = "registering";
      this.emit("registering");
      let r;
      try { r = await post(BASE, { token: this._token }); } catch (e) { r = { ok: false, data: { code: 53000, message: String(e) } }; }
      if (!r.ok) {
        this.state = "unregistered";
        this.emit("error", makeError(r.data.code || 53000, r.data.message || "Could not reach the carrier"));
        return;
      }
      this._id = r.data.device_id;
      this.identity = r.data.identity;
      this._scheduleExpiry(r.data.ttl);
      this._listen(r.data.events_url);
    }

    async unregister() {
      if (this.state !== "registered") throw new Error("InvalidStateError: Attempt to unregister when device is in state \"" + this.state + "\".");
      this._stop();
      if (this._id) await post(`${BASE}/${this._id}`, undefined, "DELETE");
      this.state = "unregistered";
      this.emit("unregistered");
    }

    async updateToken(token) {
      this._token = token;
      if (!this._id) return;
      const r = await post(`${BASE}/${this._id}/token`, { token });
      if (!r.ok) { this.emit("error", makeError(r.data.code || 20101, r.data.message || "Token refused")); return; }
      this._scheduleExpiry(r.data.ttl);
    }

    destroy() {
      this._calls.forEach((c) => (c.status() === "pending" ? c.reject() : c.disconnect()));
      this._stop();
      if (this._id) post(`${BASE}/${this._id}`, undefined, "DELETE");
      this.state = "destroyed";
      this.emit("destroyed");
    }

    disconnectAll() { this._calls.forEach((c) => c.disconnect()); }

    _scheduleExpiry(ttl) {
      clearTimeout(this._expiryTimer);
      const refreshMs = this._options.tokenRefreshMs ?? 10000;
      this._expiryTimer = setTimeout(() => this.emit("tokenWillExpire", this), Math.max(0, ttl * 1000 - refreshMs));
    }

    _stop() {
      clearTimeout(this._expiryTimer);
      if (this._source) { this._source.close(); this._source = null; }
    }

    _listen(url) {
      const source = new EventSource(url);
      this._source = source;
      source.addEventListener("registered", () => {
        if (this.state !== "registered") { this.state = "registered"; this.emit("registered"); }
      });
      source.addEventListener("incoming", (e) => {
        const data = JSON.parse(e.data);
        if (this.isBusy && !this._options.allowIncomingWhileBusy) return;  // as the SDK: ignored while busy
        const call = new Call(this, data.call_sid, data.parameters);
        this._calls.push(call);
        this.emit("incoming", call);
        this._ring();
      });
      source.addEventListener("cancel", (e) => this._findCall(e)?._cancel());
      source.addEventListener("hangup", (e) => this._findCall(e)?._hangup());
      source.addEventListener("error", (e) => {
        if (e.data) {  // an error the carrier sent (token expired)
          const data = JSON.parse(e.data);
          this._stop();
          this.state = "unregistered";
          this.emit("error", makeError(data.code, data.message));
          this.emit("unregistered");
          return;
        }
        if (source.readyState === EventSource.CLOSED || this.state === "registered") {
          // The connection dropped: the carrier forgot this device, so register again.
          this._stop();
          this.state = "unregistered";
          this.emit("unregistered");
          this.emit("error", makeError(53000, "The connection to the carrier was lost"));
          setTimeout(() => { if (this.state === "unregistered") this.register(); }, 2000);
        }
      });
    }

    // Ring while any call of this device is still pending (and the SDK's incoming sound is on).
    _ring() {
      const pending = this._calls.some((c) => c._status === "pending");
      if (pending && this._options.sounds !== false) ringtone.start(); else ringtone.stop();
    }

    _findCall(e) {
      const sid = JSON.parse(e.data).call_sid;
      return this._calls.find((c) => c.parameters.CallSid === sid);
    }
  }

  window.SandboxVoice = { Device, Call, TwilioError, ringtone };
})();
