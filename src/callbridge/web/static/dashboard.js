// callbridge dashboard: live calls from GET /events (Server-Sent Events read with fetch(), so
// the API token goes in the Authorization header, never in a URL), the call history
// (GET /calls?q=), and per call its transcript, latency, media stats, controls and recording.
// Test hooks: data-testid="call-row" (data-call-id, data-live), "transcript-line"
// (data-role caller|agent, data-final), "recording", "waveform"; window.dashboard.
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  const TOKEN_KEY = "callbridge.token"; // the softphone's: one sign-in per tab for both pages
  const media = window.dashboardMedia;

  const db = (window.dashboard = {
    calls: new Map(), // id -> call (below)
    selected: null,
    stream: "idle", // idle | live | reconnecting | signed-out
    lastId: null,
    events: 0,
    waveformDrawn: false,
    recordingFor: null,
    errors: [],
  });
  let abort = null;
  let historyTimer = null;
  let wave = null;

  function headers(extra) {
    const h = Object.assign({}, extra || {});
    const token = sessionStorage.getItem(TOKEN_KEY);
    if (token) h.Authorization = "Bearer " + token;
    return h;
  }

  async function api(path, init) {
    const r = await fetch(path, Object.assign({}, init, { headers: headers((init || {}).headers) }));
    if (r.status === 401) signedOut();
    return r;
  }

  function newCall(id) {
    return { id, live: false, from: "", to: "", agent: "", transport: "", started: null, ended: null,
             reason: "", stats: {}, lines: [], partial: null, turns: new Map(), recording: false, stored: false };
  }

  function call(id) {
    let c = db.calls.get(id);
    if (!c) db.calls.set(id, (c = newCall(id)));
    return c;
  }

  // CallInfo.summary() as the API shows a call: inbound calls come from the remote URI.
  function fromSummary(c, s) {
    const inbound = s.direction === "inbound";
    Object.assign(c, { transport: s.transport, agent: s.agent,
      from: inbound ? s.remote_uri : s.local_user, to: inbound ? s.local_user : s.remote_uri });
  }

  // ---- the stream -------------------------------------------------------------------------

  async function streamOnce() {
    abort = new AbortController();
    const h = { Accept: "text/event-stream" };
    if (db.lastId !== null) h["Last-Event-ID"] = db.lastId;
    const r = await fetch("/events", { headers: headers(h), signal: abort.signal, cache: "no-store" });
    if (r.status === 401) return signedOut();
    if (!r.ok || !r.body) throw new Error("HTTP " + r.status);
    signedIn();
    setStream("live", "Live.");
    const reader = r.body.pipeThrough(new TextDecoderStream()).getReader();
    let buf = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buf += value.replace(/\r\n?/g, "\n");
      let i;
      while ((i = buf.indexOf("\n\n")) >= 0) {
        block(buf.slice(0, i));
        buf = buf.slice(i + 2);
      }
    }
  }

  async function run() {
    let wait = 1000;
    while (db.stream !== "signed-out") {
      try {
        await streamOnce();
        wait = 1000;
      } catch (e) {
        if (e.name !== "AbortError") db.errors.push("stream: " + e);
      }
      if (db.stream === "signed-out") return;
      setStream("reconnecting", "Reconnecting…");
      await new Promise((r) => setTimeout(r, wait));
      wait = Math.min(10000, wait * 2);
    }
  }

  function block(text) {
    let data = "";
    for (const line of text.split("\n")) {
      if (line.startsWith("id:")) db.lastId = line.slice(3).trim();
      else if (line.startsWith("data:")) data += line.slice(5).replace(/^ /, "");
    }
    if (!data) return;
    try {
      onEvent(JSON.parse(data));
    } catch (e) {
      db.errors.push("event: " + e);
    }
  }

  function onEvent(ev) {
    db.events++;
    if (ev.type === "snapshot") return onSnapshot(ev);
    if (ev.type === "dropped") return abort && abort.abort();
    if (!ev.call_id) return;
    const c = call(ev.call_id);
    switch (ev.type) {
      case "call.started":
        c.live = true;
        c.started = ev.at;
        fromSummary(c, ev.call);
        break;
      case "call.stats":
        c.stats = ev.stats;
        if (db.selected === c.id) renderStats(c);
        return;
      case "call.ended":
        Object.assign(c, { live: false, ended: ev.at, reason: ev.reason, stats: ev.stats, partial: null });
        if (ev.call) fromSummary(c, ev.call);
        scheduleHistory();
        break;
      case "recording.ready":
        c.recording = true;
        if (db.selected === c.id) openStored(c.id);
        break;
      case "transcript.partial":
        // The onset ("") may come after the recognizer's first words: keep them.
        c.partial = ev.active ? { text: ev.text || (c.partial ? c.partial.text : "") } : null;
        break;
      case "transcript.line":
        addLine(c, ev);
        break;
      case "transcript.retracted": {
        // The pause and the answer prepared for it (never heard) go; the whole turn follows.
        const last = c.lines.map((l) => l.role).lastIndexOf("caller");
        if (last >= 0) c.partial = { text: c.lines.splice(last)[0].text };
        break;
      }
      case "barge_in": {
        const line = c.lines.find((l) => l.role === "agent" && l.utterance === ev.utterance);
        if (line) Object.assign(line, { interrupted: true, text: ev.heard });
        c.barges = (c.barges || 0) + 1;
        break;
      }
      case "turn":
        c.turns.set(ev.utterance, ev);
        break;
      default:
        return;
    }
    renderRow(c);
    if (db.selected === c.id) renderDetail(c);
  }

  function addLine(c, ev) {
    const line = { role: ev.role, text: ev.text, utterance: ev.utterance, interrupted: ev.interrupted,
                   said: ev.said, start: null, end: null, kind: "speech" };
    if (ev.role === "caller") {
      c.partial = null;
      c.lines.push(line);
      return;
    }
    const i = c.lines.findIndex((l) => l.role === "agent" && l.utterance === ev.utterance);
    if (i >= 0) c.lines[i] = line; // cut later: what was heard replaces it
    else c.lines.push(line);
  }

  function onSnapshot(ev) {
    const live = new Set();
    for (const s of ev.calls) {
      const c = call(s.call_id);
      live.add(c.id);
      Object.assign(c, { live: true, started: s.started, stats: s.stats });
      fromSummary(c, s.call);
      if (!c.lines.length) backfill(c.id);
      renderRow(c);
    }
    for (const c of db.calls.values()) {
      if (c.live && !live.has(c.id)) {
        c.live = false; // it ended while we were away
        renderRow(c);
      }
    }
    scheduleHistory(0);
    if (db.selected) renderDetail(db.calls.get(db.selected));
  }

  // A call that was running before we connected: its transcript so far, from the store.
  async function backfill(id) {
    const r = await api("/calls/" + encodeURIComponent(id));
    if (!r.ok) return;
    const d = await r.json();
    const c = call(id);
    if (c.lines.length) return;
    applyStored(c, d);
    if (db.selected === id) renderDetail(c);
  }

  function applyStored(c, d) {
    Object.assign(c, { from: d.from, to: d.to, agent: d.agent, transport: d.transport,
                       started: d.started ?? c.started, ended: d.ended ?? c.ended,
                       reason: d.end_reason || c.reason, recording: !!d.recording });
    if (d.live === false) c.live = false;
    const entries = (d.transcript && d.transcript.entries) || [];
    if (entries.length || !c.live) {
      c.lines = entries.map((e) => ({ role: e.role, text: e.text, utterance: e.utterance ?? null,
        interrupted: !!e.interrupted, said: "", start: e.start, end: e.end, kind: e.kind }));
      c.stored = true;
    }
    for (const t of d.turns || []) c.turns.set(t.utterance, t);
    const leg = (d.legs || [])[0];
    if (leg && leg.stats) c.stats = leg.stats;
  }

  // ---- sign-in ----------------------------------------------------------------------------

  function signedOut() {
    const had = !!sessionStorage.getItem(TOKEN_KEY);
    setStream("signed-out", "Sign in to see the calls.");
    $("login").hidden = false;
    $("calls-panel").hidden = true;
    $("detail").hidden = true;
    $("login-error").textContent = had ? "That token was not accepted." : "";
    if (had) sessionStorage.removeItem(TOKEN_KEY);
    $("token").focus();
  }

  function signedIn() {
    $("login").hidden = true;
    $("calls-panel").hidden = false;
  }

  function setStream(state, text) {
    db.stream = state;
    document.body.dataset.stream = state;
    $("live-status").textContent = text;
  }

  // ---- the lists --------------------------------------------------------------------------

  function when(t) {
    return t ? new Date(t * 1000).toLocaleTimeString() : "";
  }

  function duration(c) {
    if (!c.started) return "";
    const s = Math.max(0, Math.round((c.ended || Date.now() / 1000) - c.started));
    return `${Math.floor(s / 60)}:${String(s % 60).padStart(2, "0")}`;
  }

  function rowLabel(c) {
    const who = `${c.from || "?"} → ${c.to || "?"}`;
    const how = [c.agent, c.transport].filter(Boolean).join(", ");
    const state = c.live ? `live ${duration(c)}` : `${when(c.started)}, ${duration(c)}${c.reason ? ", " + c.reason : ""}`;
    return [who, how, state];
  }

  function rowElement(c) {
    let li = document.querySelector(`li[data-call-id="${CSS.escape(c.id)}"]`);
    if (!li) {
      li = document.createElement("li");
      li.dataset.testid = "call-row";
      li.dataset.callId = c.id;
      const b = document.createElement("button");
      b.type = "button";
      b.className = "row";
      b.addEventListener("click", () => select(c.id));
      li.appendChild(b);
    }
    return li;
  }

  function fillRow(li, c) {
    li.dataset.live = String(c.live);
    const b = li.firstChild;
    b.textContent = "";
    rowLabel(c).forEach((text, i) => {
      const span = document.createElement("span");
      span.className = ["who", "how", "when"][i];
      span.textContent = text;
      b.appendChild(span);
    });
    b.setAttribute("aria-current", String(db.selected === c.id));
  }

  function renderRow(c) {
    const li = rowElement(c);
    fillRow(li, c);
    const list = c.live ? $("live-calls") : $("history");
    if (li.parentNode !== list) {
      list.prepend(li);
    }
    $("no-live").hidden = $("live-calls").children.length > 0;
  }

  function scheduleHistory(delay = 300) {
    clearTimeout(historyTimer);
    historyTimer = setTimeout(loadHistory, delay);
  }

  async function loadHistory() {
    const q = $("q").value.trim();
    const params = new URLSearchParams({ live: "false", limit: "50" });
    if (q) params.set("q", q);
    const r = await api("/calls?" + params);
    if (!r.ok) return;
    const { calls } = await r.json();
    const list = $("history");
    const rows = [];
    for (const item of calls) {
      const c = call(item.id);
      if (!c.lines.length || c.live) {
        Object.assign(c, { from: item.from, to: item.to, agent: item.agent, transport: item.transport,
                           started: item.started, ended: item.ended, reason: item.end_reason || "" });
      }
      c.live = false;
      c.recording = c.recording || item.recording;
      const li = rowElement(c);
      fillRow(li, c);
      rows.push(li);
    }
    list.replaceChildren(...rows);
    $("no-history").hidden = rows.length > 0;
    $("no-live").hidden = $("live-calls").children.length > 0;
  }

  // ---- one call ---------------------------------------------------------------------------

  async function select(id) {
    db.selected = id;
    for (const b of document.querySelectorAll("li[data-testid=call-row] > button")) {
      b.setAttribute("aria-current", String(b.parentNode.dataset.callId === id));
    }
    const c = call(id);
    $("detail").hidden = false;
    renderDetail(c);
    if (!c.live) await openStored(id);
    $("detail-title").focus();
  }

  // An ended call: the stored transcript (with times in the recording) and the recording.
  async function openStored(id) {
    const r = await api("/calls/" + encodeURIComponent(id));
    if (!r.ok) return;
    const c = call(id);
    applyStored(c, await r.json());
    if (db.selected !== id) return;
    renderDetail(c);
    if (c.recording && db.recordingFor !== id) await loadRecording(c);
  }

  async function loadRecording(c) {
    db.recordingFor = c.id;
    db.waveformDrawn = false;
    const box = $("recording-box");
    const player = $("player");
    const r = await api(`/calls/${encodeURIComponent(c.id)}/recording`);
    if (!r.ok || db.selected !== c.id) return;
    const bytes = await r.arrayBuffer();
    if (player.src) URL.revokeObjectURL(player.src);
    // A blob URL: the token never goes into the audio element's own request.
    player.src = URL.createObjectURL(new Blob([bytes], { type: "audio/wav" }));
    box.hidden = false;
    try {
      wave = await media.waveform($("waveform"), bytes.slice(0));
      db.waveformDrawn = true;
    } catch (e) {
      db.errors.push("waveform: " + e);
    }
  }

  function renderDetail(c) {
    if (!c) return;
    $("detail-title").textContent = `${c.from || "?"} → ${c.to || "?"}`;
    $("detail-title").tabIndex = -1;
    $("detail-meta").textContent = [c.live ? "Live" : "Ended" + (c.reason ? ` (${c.reason})` : ""),
      c.agent && `agent ${c.agent}`, c.transport, c.started && `started ${when(c.started)}`,
      duration(c) && `duration ${duration(c)}`, c.id].filter(Boolean).join(" · ");
    $("actions").hidden = !c.live;
    if (db.recordingFor !== c.id) {
      $("recording-box").hidden = true;
      wave = null;
    }
    renderStats(c);
    renderTranscript(c);
    media.latencyChart($("latency"), [...c.turns.values()].sort((a, b) => a.utterance - b.utterance));
  }

  // Leg counters (SIP: rtp/session.py, WebRTC: the peer's getStats), first name wins.
  const STATS = [
    ["jitter_ms", "Jitter (ms)"], ["lost", "Lost"], ["rtp_packets_lost", "Lost"],
    ["remote_lost", "Lost by the far end"], ["remote_packets_lost", "Lost by the far end"],
    ["concealed", "Concealed"], ["late", "Late"], ["rtt_ms", "Round trip (ms)"],
    ["rtp_in", "Packets in"], ["rtp_packets_in", "Packets in"], ["rtp_out", "Packets out"],
    ["rtp_packets_out", "Packets out"], ["frames_in", "Frames in"], ["frames_out", "Frames out"],
  ];

  function renderStats(c) {
    const dl = $("stats");
    dl.textContent = "";
    const seen = new Set();
    for (const [key, name] of STATS) {
      const v = c.stats ? c.stats[key] : undefined;
      if (v === undefined || v === null || seen.has(name)) continue;
      seen.add(name);
      const group = document.createElement("div"); // dt + dd side by side in the grid
      const dt = document.createElement("dt");
      dt.textContent = name;
      const dd = document.createElement("dd");
      dd.dataset.stat = key;
      dd.textContent = typeof v === "number" ? String(Math.round(v * 10) / 10) : String(v);
      group.append(dt, dd);
      dl.appendChild(group);
    }
    dl.hidden = !seen.size;
  }

  function clock(t) {
    const s = Math.max(0, Math.floor(t));
    return `${Math.floor(s / 60)}:${String(s % 60).padStart(2, "0")}`;
  }

  function lineElement(line, final) {
    const li = document.createElement("li");
    li.dataset.testid = "transcript-line";
    li.dataset.role = line.role;
    li.dataset.final = String(final);
    li.className = `line ${line.role}${final ? "" : " partial"}${line.interrupted ? " interrupted" : ""}`;
    if (line.start != null && final) {
      li.dataset.start = line.start;
      const seek = document.createElement("button");
      seek.type = "button";
      seek.className = "seek";
      seek.textContent = clock(line.start);
      seek.setAttribute("aria-label", `Play from ${clock(line.start)}`);
      seek.addEventListener("click", () => play(line.start));
      li.appendChild(seek);
      li.addEventListener("click", (e) => { if (e.target === li || e.target.tagName === "SPAN") play(line.start); });
    }
    const who = document.createElement("span");
    who.className = "who";
    who.textContent = line.role === "caller" ? (line.kind === "dtmf" ? "Caller (key)" : "Caller") : "Agent";
    const text = document.createElement("span");
    text.className = "text";
    text.textContent = final ? line.text : (line.text || "…") + " ";
    li.append(who, text);
    if (line.interrupted) {
      const mark = document.createElement("span");
      mark.className = "badge";
      mark.textContent = "interrupted";
      li.appendChild(mark);
      const rest = line.said && line.said.startsWith(line.text) ? line.said.slice(line.text.length) : "";
      if (rest.trim()) {
        const unheard = document.createElement("del");
        unheard.className = "unheard";
        unheard.title = "Not heard: the caller talked over it";
        unheard.textContent = rest;
        li.appendChild(unheard);
      }
    }
    return li;
  }

  function renderTranscript(c) {
    const ol = $("transcript");
    const items = c.lines.map((l) => lineElement(l, true));
    if (c.partial && c.live) items.push(lineElement({ role: "caller", text: c.partial.text }, false));
    ol.replaceChildren(...items);
  }

  function play(t) {
    const player = $("player");
    if (!player.src) return;
    player.currentTime = t;
    player.play().catch((e) => db.errors.push("play: " + e));
  }

  function onTime() {
    const t = $("player").currentTime;
    if (wave) wave.redraw(t);
    for (const li of document.querySelectorAll("#transcript li[data-start]")) {
      const start = Number(li.dataset.start);
      const next = li.nextElementSibling && li.nextElementSibling.dataset.start;
      const now = t >= start && (next === undefined || t < Number(next));
      if (now) li.setAttribute("aria-current", "true");
      else li.removeAttribute("aria-current");
    }
  }

  // ---- actions ----------------------------------------------------------------------------

  async function act(path, body, done) {
    const id = db.selected;
    if (!id) return;
    const status = $("action-status");
    status.textContent = "…";
    const r = await api(`/calls/${encodeURIComponent(id)}/${path}`, {
      method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body || {}),
    });
    const data = await r.json().catch(() => ({}));
    status.textContent = r.ok ? done : `Failed: ${data.error || "HTTP " + r.status}`;
  }

  function form(id, handler) {
    $(id).addEventListener("submit", (e) => {
      e.preventDefault();
      handler().catch((err) => db.errors.push(id + ": " + err));
    });
  }

  document.addEventListener("DOMContentLoaded", () => {
    $("hangup").addEventListener("click", () => act("hangup", {}, "Hanging up."));
    form("say-form", () => act("say", { text: $("say-text").value, interrupt: $("say-interrupt").checked }, "Queued."));
    form("transfer-form", () => act("transfer", { target: $("transfer-target").value }, "Transferred."));
    form("dtmf-form", () => act("dtmf", { digits: $("dtmf-digits").value }, "Sent."));
    form("search", () => loadHistory());
    $("login").addEventListener("submit", (e) => {
      e.preventDefault();
      sessionStorage.setItem(TOKEN_KEY, $("token").value);
      $("token").value = "";
      $("login").hidden = true;
      setStream("idle", "Connecting…");
      run();
    });
    const player = $("player");
    player.addEventListener("timeupdate", onTime);
    player.addEventListener("seeked", onTime);
    const canvas = $("waveform");
    canvas.addEventListener("click", (e) => {
      if (!wave) return;
      const box = canvas.getBoundingClientRect();
      play(((e.clientX - box.left) / box.width) * wave.duration);
    });
    canvas.addEventListener("keydown", (e) => {
      if (!wave || (e.key !== "ArrowLeft" && e.key !== "ArrowRight")) return;
      e.preventDefault();
      play(Math.max(0, player.currentTime + (e.key === "ArrowLeft" ? -5 : 5)));
    });
    // Live durations tick without traffic.
    setInterval(() => {
      for (const li of $("live-calls").children) fillRow(li, call(li.dataset.callId));
    }, 1000);
    run();
  });
})();
