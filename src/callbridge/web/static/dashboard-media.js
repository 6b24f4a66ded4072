// callbridge dashboard: the recording's waveform (decoded in the page with WebAudio) and the
// per-turn latency chart (inline SVG). No library: window.dashboardMedia is what dashboard.js uses.
"use strict";

(() => {
  const SVG = "http://www.w3.org/2000/svg";

  // ---- the recording ----------------------------------------------------------------------

  // Min/max of each channel per pixel column: the recording is a few minutes at most, so
  // this is done once per call and the drawing (with the playhead) is cheap afterwards.
  function peaks(buffer, columns) {
    const out = [];
    for (let ch = 0; ch < Math.min(2, buffer.numberOfChannels); ch++) {
      const data = buffer.getChannelData(ch);
      const step = Math.max(1, Math.floor(data.length / columns));
      const mins = new Float32Array(columns);
      const maxs = new Float32Array(columns);
      for (let x = 0; x < columns; x++) {
        let lo = 0, hi = 0;
        const end = Math.min(data.length, (x + 1) * step);
        for (let i = x * step; i < end; i++) {
          const v = data[i];
          if (v < lo) lo = v;
          if (v > hi) hi = v;
        }
        mins[x] = lo;
        maxs[x] = hi;
      }
      let peak = 0;
      for (let x = 0; x < columns; x++) peak = Math.max(peak, maxs[x], -mins[x]);
      out.push({ mins, maxs, peak });
    }
    return out;
  }

  async function decode(arrayBuffer) {
    // An offline context decodes without an audio device or a user gesture.
    const ctx = new OfflineAudioContext(2, 1, 8000);
    return await ctx.decodeAudioData(arrayBuffer);
  }

  function draw(canvas, wave, position) {
    const g = canvas.getContext("2d");
    const w = canvas.width, h = canvas.height;
    const style = getComputedStyle(canvas);
    g.clearRect(0, 0, w, h);
    const lanes = wave.peaks.length || 1;
    const lane = h / lanes;
    wave.peaks.forEach((p, i) => {
      const mid = lane * i + lane / 2;
      // Each side to its own loudest moment (a quiet caller stays visible), at most x8.
      const gain = Math.min(8, 0.95 / Math.max(1e-3, p.peak));
      g.fillStyle = i === 0 ? style.getPropertyValue("--caller").trim() || "#1a6ed8"
                            : style.getPropertyValue("--agent").trim() || "#2e7d32";
      for (let x = 0; x < p.mins.length; x++) {
        const top = mid - p.maxs[x] * gain * (lane / 2);
        const bottom = mid - p.mins[x] * gain * (lane / 2);
        g.fillRect(x, top, 1, Math.max(1, bottom - top));
      }
    });
    if (wave.duration > 0 && position > 0) {
      g.fillStyle = style.color;
      g.fillRect(Math.round((position / wave.duration) * w), 0, 2, h);
    }
  }

  // Decode `arrayBuffer` and draw it on `canvas`; returns {duration, redraw(position)}.
  async function waveform(canvas, arrayBuffer) {
    const buffer = await decode(arrayBuffer);
    const wave = { peaks: peaks(buffer, canvas.width), duration: buffer.duration };
    draw(canvas, wave, 0);
    return { duration: buffer.duration, channels: buffer.numberOfChannels, redraw: (t) => draw(canvas, wave, t) };
  }

  // ---- latency per turn -------------------------------------------------------------------

  const PARTS = [
    ["eot", "end of turn"],
    ["stt", "recognition"],
    ["brain", "brain"],
    ["tts", "voice"],
  ];

  function el(name, attrs, text) {
    const e = document.createElementNS(SVG, name);
    for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, String(v));
    if (text !== undefined) e.textContent = text;
    return e;
  }

  // The parts of one turn, in ms: STT, brain and TTS as measured, end of turn the rest of
  // voice-to-voice (the silence that ended the turn, and queueing); 0 when the parts
  // overlap it (an answer prepared during the caller's pause).
  function parts(t) {
    const stt = t.stt_ms || 0, brain = t.brain_ms || 0, tts = t.tts_ms || 0;
    const v2v = t.voice_to_voice_ms;
    const eot = v2v == null ? 0 : Math.max(0, v2v - stt - brain - tts);
    return { eot, stt, brain, tts, v2v };
  }

  function latencyChart(box, turns) {
    box.textContent = "";
    const rows = turns.filter((t) => t.voice_to_voice_ms != null || t.brain_ms != null || t.tts_ms != null);
    if (!rows.length) {
      const p = document.createElement("p");
      p.className = "hint";
      p.textContent = "No turn measured yet.";
      box.appendChild(p);
      return;
    }
    const W = 560, label = 48, rowH = 24, top = 4;
    const max = Math.max(1000, ...rows.map((t) => { const p = parts(t); return Math.max(p.v2v || 0, p.eot + p.stt + p.brain + p.tts); }));
    const scale = (W - label - 60) / max;
    const H = top + rows.length * rowH + 24;
    const svg = el("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", class: "chart",
      "aria-label": `Latency of ${rows.length} turn(s); the table below has the numbers` });
    rows.forEach((t, i) => {
      const y = top + i * rowH;
      const p = parts(t);
      svg.appendChild(el("text", { x: 0, y: y + 15, class: "axis" }, `#${t.utterance}`));
      let x = label;
      for (const [key, name] of PARTS) {
        const ms = p[key];
        if (!ms) continue;
        const r = el("rect", { x, y: y + 3, width: Math.max(1, ms * scale), height: rowH - 6, class: `seg seg-${key}` });
        r.appendChild(el("title", {}, `${name}: ${ms} ms`));
        svg.appendChild(r);
        x += ms * scale;
      }
      if (p.v2v != null) {
        const vx = label + p.v2v * scale;
        svg.appendChild(el("line", { x1: vx, x2: vx, y1: y + 1, y2: y + rowH - 1, class: "v2v" }));
        svg.appendChild(el("text", { x: Math.max(x, vx) + 4, y: y + 15, class: "axis" }, `${p.v2v} ms`));
      }
    });
    const legendY = top + rows.length * rowH + 16;
    let lx = label;
    for (const [key, name] of PARTS) {
      svg.appendChild(el("rect", { x: lx, y: legendY - 9, width: 10, height: 10, class: `seg seg-${key}` }));
      svg.appendChild(el("text", { x: lx + 14, y: legendY, class: "axis" }, name));
      lx += 22 + name.length * 8;
    }
    box.appendChild(svg);
    box.appendChild(table(rows));
  }

  function table(rows) {
    const t = document.createElement("table");
    t.className = "numbers";
    const cap = document.createElement("caption");
    cap.textContent = "Latency per turn, in milliseconds";
    t.appendChild(cap);
    const head = t.createTHead().insertRow();
    for (const h of ["Turn", "Voice to voice", "End of turn", "Recognition", "Brain", "Voice"]) {
      const th = document.createElement("th");
      th.scope = "col";
      th.textContent = h;
      head.appendChild(th);
    }
    const body = t.createTBody();
    for (const r of rows) {
      const p = parts(r);
      const tr = body.insertRow();
      for (const v of [`#${r.utterance}`, p.v2v, p.v2v == null ? null : p.eot, r.stt_ms, r.brain_ms, r.tts_ms]) {
        tr.insertCell().textContent = v == null ? "–" : String(v);
      }
    }
    return t;
  }

  window.dashboardMedia = { waveform, latencyChart, parts };
})();
