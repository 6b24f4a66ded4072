// callbridge softphone: one WebRTC call to the gateway (POST /webrtc/offer, non-trickle).
// Test hooks: window.softphone (state, session, pc, localStream, remoteStream, levels),
// data-testid="call-<route>", "hangup", "mute". ?raw=1 turns the browser's echo
// cancellation, noise suppression and gain control off (tests with a file as microphone).
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  const TOKEN_KEY = "callbridge.token"; // sessionStorage: this tab only, never in a URL
  const params = new URLSearchParams(location.search);
  const DTMF_KEYS = "0123456789*#ABCD";

  const sp = (window.softphone = {
    state: "idle", // idle | calling | connected | ended | failed
    route: null,
    session: null,
    pc: null,
    channel: null,
    localStream: null,
    remoteStream: null,
    levels: { local: 0, remote: 0 },
    endReason: "",
    digitsReceived: "",
    errors: [],
  });
  let audioCtx = null;
  let meterTimer = null;

  function headers() {
    const h = { "Content-Type": "application/json" };
    const token = sessionStorage.getItem(TOKEN_KEY);
    if (token) h.Authorization = "Bearer " + token;
    return h;
  }

  function setStatus(text) {
    $("status").textContent = text;
  }

  function setState(state, text) {
    sp.state = state;
    document.body.dataset.state = state;
    const inCall = state === "calling" || state === "connected";
    $("hangup").disabled = !inCall;
    $("mute").disabled = state !== "connected";
    $("keypad").disabled = state !== "connected";
    for (const b of document.querySelectorAll("#routes button")) b.disabled = inCall;
    if (text) setStatus(text);
  }

  async function loadRoutes() {
    let r;
    try {
      r = await fetch("/webrtc/routes", { headers: headers() });
    } catch (e) {
      setStatus("The gateway cannot be reached.");
      return;
    }
    if (r.status === 401) {
      $("login").hidden = false;
      $("phone").hidden = true;
      if (sessionStorage.getItem(TOKEN_KEY)) $("login-error").textContent = "That token was not accepted.";
      $("token").focus();
      return;
    }
    const data = await r.json();
    $("login").hidden = true;
    $("phone").hidden = false;
    const box = $("routes");
    box.textContent = "";
    for (const route of data.routes) {
      const b = document.createElement("button");
      b.type = "button";
      b.className = "call";
      b.dataset.testid = "call-" + route;
      b.textContent = route === "agent" ? "Call the agent" : route === "echo" ? "Call echo" : "Call " + route;
      b.addEventListener("click", () => call(route).catch(fail));
      box.appendChild(b);
    }
    setState("idle", data.webrtc ? "Ready." : "WebRTC calls are not available on this gateway.");
  }

  function fail(err) {
    sp.errors.push(String(err));
    teardown();
    setState("failed", "Call failed: " + (err && err.message ? err.message : err));
  }

  function level(analyser, buf) {
    analyser.getFloatTimeDomainData(buf);
    let s = 0;
    for (const v of buf) s += v * v;
    return Math.sqrt(s / buf.length);
  }

  function meter(stream, which) {
    audioCtx = audioCtx || new AudioContext();
    audioCtx.resume();
    const an = audioCtx.createAnalyser();
    an.fftSize = 1024;
    an.smoothingTimeConstant = 0;
    audioCtx.createMediaStreamSource(stream).connect(an);
    const buf = new Float32Array(an.fftSize);
    sp["analyser_" + which] = an;
    return () => {
      const rms = level(an, buf);
      sp.levels[which] = rms;
      // RMS of speech is ~0.05-0.2: scale so a normal voice fills most of the meter
      $("level-" + which).value = Math.min(1, rms * 5);
    };
  }

  async function call(route) {
    setState("calling", "Asking for the microphone…");
    sp.route = route;
    sp.endReason = "";
    const audio = params.get("raw")
      ? { echoCancellation: false, noiseSuppression: false, autoGainControl: false }
      : { echoCancellation: true, noiseSuppression: true, autoGainControl: true };
    sp.localStream = await navigator.mediaDevices.getUserMedia({ audio });
    setStatus("Calling " + route + "…");
    const pc = (sp.pc = new RTCPeerConnection({ iceServers: [] }));
    const updates = [meter(sp.localStream, "local")];
    sp.channel = pc.createDataChannel("control");
    sp.channel.onmessage = (e) => onMessage(e.data);
    pc.ontrack = (e) => {
      sp.remoteStream = e.streams[0] || new MediaStream([e.track]);
      const el = $("remote-audio");
      el.srcObject = sp.remoteStream; // Chrome feeds WebAudio only from an attached stream
      el.play().catch((err) => sp.errors.push("play: " + err));
      updates.push(meter(sp.remoteStream, "remote"));
    };
    pc.onconnectionstatechange = () => {
      const st = pc.connectionState;
      if (st === "connected" && sp.state === "calling") setState("connected", "In a call with " + route + ".");
      if ((st === "failed" || st === "closed") && sp.pc === pc) end(st === "failed" ? "connection lost" : "ended");
    };
    for (const t of sp.localStream.getAudioTracks()) pc.addTrack(t, sp.localStream);
    meterTimer = setInterval(() => updates.forEach((u) => u()), 50);
    await pc.setLocalDescription(await pc.createOffer());
    await new Promise((resolve) => {
      // Non-trickle: the offer goes once gathering is done (or after 3 s with what we have).
      if (pc.iceGatheringState === "complete") return resolve();
      pc.addEventListener("icegatheringstatechange", () => {
        if (pc.iceGatheringState === "complete") resolve();
      });
      setTimeout(resolve, 3000);
    });
    const r = await fetch("/webrtc/offer", {
      method: "POST",
      headers: headers(),
      body: JSON.stringify({ sdp: pc.localDescription.sdp, type: "offer", route }),
    });
    if (r.status === 401) {
      sessionStorage.removeItem(TOKEN_KEY);
      throw new Error("not signed in");
    }
    const answer = await r.json();
    if (!r.ok) throw new Error(answer.error || "HTTP " + r.status);
    if (sp.pc !== pc) return; // hung up meanwhile
    sp.session = answer.session;
    await pc.setRemoteDescription({ type: "answer", sdp: answer.sdp });
  }

  function onMessage(data) {
    let msg;
    try {
      msg = JSON.parse(data);
    } catch (e) {
      return;
    }
    if (msg.type === "hangup") end("the agent hung up");
    if (msg.type === "dtmf" && typeof msg.digit === "string") {
      sp.digitsReceived += msg.digit;
      $("digits").textContent = "Received: " + sp.digitsReceived;
    }
  }

  function teardown() {
    clearInterval(meterTimer);
    if (sp.pc) sp.pc.close();
    sp.pc = null;
    if (sp.localStream) sp.localStream.getTracks().forEach((t) => t.stop());
    $("level-local").value = 0;
    $("level-remote").value = 0;
  }

  function end(reason) {
    if (sp.state !== "calling" && sp.state !== "connected") return;
    sp.endReason = reason;
    teardown();
    setState("ended", "Call ended (" + reason + ").");
  }

  async function hangup() {
    const session = sp.session;
    if (sp.channel && sp.channel.readyState === "open") sp.channel.send(JSON.stringify({ type: "hangup" }));
    end("you hung up");
    if (session) {
      await fetch("/webrtc/hangup", { method: "POST", headers: headers(), body: JSON.stringify({ session }) })
        .catch((e) => sp.errors.push("hangup: " + e));
    }
  }

  function sendDigit(key) {
    if (sp.state !== "connected" || !sp.channel || sp.channel.readyState !== "open") return;
    // RFC 4733 events are not negotiated by the gateway: keys go on the data channel.
    sp.channel.send(JSON.stringify({ type: "dtmf", digit: key, duration: 100 }));
    const out = $("digits");
    out.textContent = (out.dataset.sent = (out.dataset.sent || "") + key);
  }

  function toggleMute() {
    const b = $("mute");
    const muted = b.getAttribute("aria-pressed") !== "true";
    b.setAttribute("aria-pressed", String(muted));
    b.textContent = muted ? "Unmute" : "Mute";
    if (sp.localStream) sp.localStream.getAudioTracks().forEach((t) => (t.enabled = !muted));
  }

  document.addEventListener("DOMContentLoaded", () => {
    $("hangup").addEventListener("click", () => hangup());
    $("mute").addEventListener("click", toggleMute);
    for (const b of document.querySelectorAll("#keypad button[data-key]")) {
      b.addEventListener("click", () => sendDigit(b.dataset.key));
    }
    document.addEventListener("keydown", (e) => {
      if (e.target instanceof HTMLInputElement || e.ctrlKey || e.metaKey || e.altKey) return;
      const key = e.key.toUpperCase();
      if (key.length === 1 && DTMF_KEYS.includes(key)) sendDigit(key);
    });
    $("login").addEventListener("submit", (e) => {
      e.preventDefault();
      sessionStorage.setItem(TOKEN_KEY, $("token").value);
      $("token").value = "";
      loadRoutes();
    });
    sp.hangup = hangup;
    sp.call = (route) => call(route).catch(fail);
    loadRoutes();
  });
})();
