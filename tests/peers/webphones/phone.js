// A web phone for tests/peers/test_browser_sip_ws.py: SIP.js or JsSIP (?stack=sipjs|jssip)
// over ws://.../sip, driven from Python through window.phone:
//   phone.start() registers (digest), phone.call(target) calls, phone.hangup(), phone.stop();
//   phone.state: idle | registered | calling | established | ended | failed;
//   phone.takeAudio(): what arrived from the far end since the call was established, captured
//   with WebAudio (a ScriptProcessor on the remote stream), as base64 PCM16 at phone.rate.
"use strict";
(function () {
  const q = new URLSearchParams(location.search);
  const cfg = {
    stack: q.get("stack"), ws: q.get("ws"), domain: q.get("domain"),
    user: q.get("user"), password: q.get("password"),
  };
  const phone = (window.phone = {
    stack: cfg.stack, state: "idle", registered: false, errors: [], events: [],
    rate: 0, chunks: [], captureStart: null, pc: null,
  });
  const note = (what) => {
    phone.events.push(what);
    document.getElementById("status").textContent = what;
  };
  let ctx = null;
  let stopCapture = null;

  function capture(pc) {
    const stream = new MediaStream();
    pc.getReceivers().forEach((r) => r.track && r.track.kind === "audio" && stream.addTrack(r.track));
    const el = document.getElementById("remote");
    el.srcObject = stream; // Chromium feeds WebAudio from a remote stream only once it is attached
    el.play().catch(() => {});
    ctx = ctx || new AudioContext();
    ctx.resume();
    const src = ctx.createMediaStreamSource(stream);
    const proc = ctx.createScriptProcessor(4096, 1, 1);
    phone.rate = ctx.sampleRate;
    phone.captureStart = performance.timeOrigin + performance.now();
    proc.onaudioprocess = (e) => phone.chunks.push(new Float32Array(e.inputBuffer.getChannelData(0)));
    src.connect(proc);
    proc.connect(ctx.destination); // a ScriptProcessor runs only when connected
    stopCapture = () => { src.disconnect(); proc.disconnect(); };
  }

  phone.takeAudio = () => {
    const n = phone.chunks.reduce((a, c) => a + c.length, 0);
    const pcm = new Int16Array(n);
    let i = 0;
    for (const c of phone.chunks) for (const v of c) pcm[i++] = Math.max(-1, Math.min(1, v)) * 32767;
    const bytes = new Uint8Array(pcm.buffer);
    let bin = "";
    for (let j = 0; j < bytes.length; j += 0x8000) bin += String.fromCharCode(...bytes.subarray(j, j + 0x8000));
    return btoa(bin);
  };

  // ---- SIP.js 0.21 ---------------------------------------------------------------------
  function sipjs() {
    const S = window.SIP;
    let ua, registerer, session;
    return {
      async start() {
        ua = new S.UserAgent({
          uri: S.UserAgent.makeURI(`sip:${cfg.user}@${cfg.domain}`),
          transportOptions: { server: cfg.ws },
          authorizationUsername: cfg.user,
          authorizationPassword: cfg.password,
          logLevel: "warn",
          sessionDescriptionHandlerFactoryOptions: {
            peerConnectionConfiguration: { iceServers: [] },
            iceGatheringTimeout: 3000,
          },
        });
        await ua.start();
        registerer = new S.Registerer(ua, { expires: 300 });
        registerer.stateChange.addListener((s) => {
          phone.registered = s === S.RegistererState.Registered;
          note(`register: ${s}`);
          if (phone.registered && phone.state === "idle") phone.state = "registered";
        });
        await registerer.register({
          requestDelegate: { onReject: (r) => phone.errors.push(`register rejected ${r.message.statusCode}`) },
        });
      },
      async call(target) {
        session = new S.Inviter(ua, S.UserAgent.makeURI(target), {
          sessionDescriptionHandlerOptions: { constraints: { audio: true, video: false } },
        });
        session.stateChange.addListener((s) => {
          note(`session: ${s}`);
          if (s === S.SessionState.Established) {
            phone.pc = session.sessionDescriptionHandler.peerConnection;
            capture(phone.pc);
            phone.state = "established";
          } else if (s === S.SessionState.Terminated) {
            phone.state = phone.state === "established" || phone.state === "ending" ? "ended" : "failed";
          }
        });
        phone.state = "calling";
        await session.invite({
          requestDelegate: { onReject: (r) => phone.errors.push(`invite rejected ${r.message.statusCode}`) },
        });
      },
      async hangup() {
        phone.state = "ending";
        if (session.state === S.SessionState.Established) await session.bye();
        else await session.cancel();
      },
      async stop() {
        if (registerer) await registerer.unregister().catch(() => {});
        await ua.stop();
      },
    };
  }

  // ---- JsSIP 3.13 ----------------------------------------------------------------------
  function jssip() {
    const J = window.JsSIP;
    let ua, session;
    return {
      start() {
        ua = new J.UA({
          sockets: [new J.WebSocketInterface(cfg.ws)],
          uri: `sip:${cfg.user}@${cfg.domain}`,
          authorization_user: cfg.user,
          password: cfg.password,
          register: true,
          register_expires: 300,
        });
        ua.on("registered", () => {
          phone.registered = true;
          note("registered");
          if (phone.state === "idle") phone.state = "registered";
        });
        ua.on("unregistered", () => { phone.registered = false; note("unregistered"); });
        ua.on("registrationFailed", (e) => phone.errors.push(`register failed: ${e.cause}`));
        ua.start();
      },
      call(target) {
        phone.state = "calling";
        session = ua.call(target, {
          mediaConstraints: { audio: true, video: false },
          pcConfig: { iceServers: [] },
        });
        session.on("confirmed", () => {
          phone.pc = session.connection;
          capture(phone.pc);
          phone.state = "established";
          note("confirmed");
        });
        session.on("ended", (e) => { phone.state = "ended"; note(`ended: ${e.cause}`); });
        session.on("failed", (e) => {
          phone.state = "failed";
          phone.errors.push(`call failed: ${e.cause}`);
        });
      },
      hangup() {
        phone.state = "ending";
        session.terminate();
      },
      stop() {
        ua.stop();
      },
    };
  }

  const impl = cfg.stack === "jssip" ? jssip() : sipjs();
  phone.start = () => Promise.resolve(impl.start()).catch((e) => phone.errors.push(`start: ${e}`));
  phone.call = (t) => Promise.resolve(impl.call(t)).catch((e) => phone.errors.push(`call: ${e}`));
  phone.hangup = () => {
    if (stopCapture) stopCapture();
    return Promise.resolve(impl.hangup()).catch((e) => phone.errors.push(`hangup: ${e}`));
  };
  phone.stop = () => Promise.resolve(impl.stop()).catch((e) => phone.errors.push(`stop: ${e}`));
})();
