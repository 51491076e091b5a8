// Join a ponte conference from the browser (audio only): the PIN goes to
// the console, which answers with a one-time SIP URI; JsSIP (bundled from npm
// by scripts/setup into jssip.min.js) calls it over Kamailio's WebSocket, and
// rtpengine carries the DTLS-SRTP media (README "Browsers").
// Plain script, no inline code: the page is served with CSP script-src 'self'.
"use strict";

(function () {
  const $ = (id) => document.getElementById(id);
  const form = $("join-form");
  const pinInput = $("pin");
  const joinButton = $("join");
  const statusEl = $("status");
  const errorEl = $("error");
  const controls = $("controls");
  const muteButton = $("mute");
  const remoteAudio = $("remote");

  let ua = null;
  let session = null;
  let pc = null;
  let remoteStream = null;
  let token = null;
  let muted = false;

  function setStatus(text) {
    statusEl.textContent = text;
  }

  function showError(text) {
    errorEl.textContent = text;
    errorEl.hidden = !text;
  }

  // The appliance's web.ice_servers ("stun:host:port" strings; none by default),
  // from /join/config; a data-ice attribute on <body> is the fallback.
  async function iceServers() {
    try {
      const resp = await fetch("/join/config", { credentials: "same-origin" });
      if (resp.ok) {
        const conf = await resp.json();
        if (Array.isArray(conf.ice_servers)) {
          return conf.ice_servers.map((u) => (typeof u === "string" ? { urls: u } : u));
        }
      }
    } catch (e) {
      /* fall back below */
    }
    try {
      const list = JSON.parse(document.body.dataset.ice || "[]");
      return Array.isArray(list) ? list : [];
    } catch (e) {
      return [];
    }
  }

  async function postJson(url, body) {
    const resp = await fetch(url, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      credentials: "same-origin",
      body: JSON.stringify(body),
    });
    let data = null;
    try {
      data = await resp.json();
    } catch (e) {
      data = null;
    }
    if (!data) data = { ok: resp.ok, error: resp.ok ? null : "HTTP " + resp.status };
    return data;
  }

  function teardown() {
    const old = ua;
    ua = null;
    session = null;
    pc = null;
    if (old) {
      try {
        old.stop();
      } catch (e) {
        /* already stopped */
      }
    }
    remoteAudio.srcObject = null;
    remoteStream = null;
    token = null;
    controls.hidden = true;
    form.hidden = false;
    joinButton.disabled = false;
  }

  function onConnectionState() {
    if (!pc) return;
    switch (pc.connectionState) {
      case "connected":
        setStatus(muted ? "Connected (muted)." : "Connected.");
        break;
      case "disconnected":
        setStatus("Connection interrupted, trying to recover…");
        break;
      case "failed":
        setStatus("");
        showError("The connection failed.");
        teardown();
        break;
      default:
        break;
    }
  }

  function watchPeerConnection(conn) {
    pc = conn;
    pc.addEventListener("connectionstatechange", onConnectionState);
    pc.addEventListener("track", (ev) => {
      remoteStream = ev.streams[0] || new MediaStream([ev.track]);
      // Chromium quirk: remote WebRTC audio reaches WebAudio (ponteMeasure) only while
      // the stream also plays through a media element; this element is the speaker path.
      remoteAudio.srcObject = remoteStream;
      remoteAudio.play().catch(() => {});
    });
  }

  // Call `uri` over the WebSocket `ws` with JsSIP: no registration, no
  // password (the token in the URI is the one-time credential), audio only.
  function call(ws, uri, ice) {
    return new Promise((resolve, reject) => {
      if (!window.JsSIP) {
        reject(new Error("The page's SIP library is missing: the server's set-up did not build it."));
        return;
      }
      const host = uri.replace(/^sip:[^@]*@/, "");
      ua = new window.JsSIP.UA({
        sockets: [new window.JsSIP.WebSocketInterface(ws)],
        uri: "sip:browser@" + host,
        display_name: "browser",
        register: false,
        session_timers: false,
        connection_recovery_min_interval: 2,
        connection_recovery_max_interval: 30,
      });
      let started = false;
      ua.on("connected", () => {
        if (started) return;
        started = true;
        session = ua.call(uri, {
          mediaConstraints: { audio: true, video: false },
          // Not max-bundle: rtpengine answers without a=group:BUNDLE (one m= line, no need).
          pcConfig: { iceServers: ice, rtcpMuxPolicy: "require" },
          rtcOfferConstraints: { offerToReceiveAudio: true, offerToReceiveVideo: false },
        });
        if (session.connection) watchPeerConnection(session.connection);
        session.on("peerconnection", (ev) => watchPeerConnection(ev.peerconnection));
        session.on("confirmed", () => resolve());
        session.on("failed", (ev) => {
          reject(new Error(ev.cause === "Rejected" ? "The server refused the call." : "The call failed (" + ev.cause + ")."));
        });
        session.on("ended", () => {
          teardown();
          setStatus("The call ended.");
        });
      });
      ua.on("disconnected", () => {
        if (!started) reject(new Error("Could not reach the conference server."));
      });
      ua.start();
    });
  }

  async function join(event) {
    event.preventDefault();
    showError("");
    const pin = pinInput.value.trim();
    if (!pin) {
      showError("Please enter the conference PIN.");
      return;
    }
    joinButton.disabled = true;
    setStatus("Connecting…");
    let reply;
    try {
      reply = await postJson("/join/token", { pin: pin });
      if (!reply.ok) throw new Error(reply.error || "The server refused to join.");
      token = reply.token;
      await call(reply.ws, reply.uri, await iceServers());
    } catch (e) {
      teardown();
      setStatus("");
      showError(e.message || String(e));
      return;
    }
    form.hidden = true;
    controls.hidden = false;
    if (!pc || pc.connectionState !== "connected") setStatus("Waiting for the audio…");
    else onConnectionState();
  }

  async function sendKey(key) {
    if (!token) return null;
    const reply = await postJson("/join/" + encodeURIComponent(token) + "/key", { key: key });
    if (!reply.ok) showError(reply.error || "The key was not accepted.");
    return reply;
  }

  async function toggleMute() {
    const want = !muted;
    const reply = await sendKey(want ? "mute" : "unmute");
    if (!reply || !reply.ok) return;
    muted = want;
    muteButton.textContent = muted ? "Unmute" : "Mute";
    muteButton.setAttribute("aria-pressed", String(muted));
    onConnectionState();
  }

  async function raiseHand() {
    const reply = await sendKey("hand");
    if (reply && reply.ok) setStatus("Hand raised.");
  }

  async function askHelp() {
    const reply = await sendKey("help");
    if (reply && reply.ok) setStatus("Help requested.");
  }

  function leave() {
    if (session) {
      try {
        session.terminate();
      } catch (e) {
        /* already over */
      }
    }
    teardown();
    setStatus("You left the conference.");
  }

  form.addEventListener("submit", join);
  muteButton.addEventListener("click", toggleMute);
  $("hand").addEventListener("click", raiseHand);
  $("help").addEventListener("click", askHelp);
  $("leave").addEventListener("click", leave);

  // --- measurement hooks for tests ------------------------------------------------------

  // Energy of the *remote* audio near each frequency in `freqs` (Hz), as a fraction of the
  // whole spectrum, averaged over `ms` milliseconds of an AnalyserNode on the remote stream.
  window.ponteMeasure = async function (freqs, ms) {
    if (!remoteStream) throw new Error("no remote stream");
    const ctx = new AudioContext();
    await ctx.resume();
    const source = ctx.createMediaStreamSource(remoteStream);
    const analyser = ctx.createAnalyser();
    analyser.fftSize = 8192;
    analyser.smoothingTimeConstant = 0;
    source.connect(analyser);
    const bins = new Float32Array(analyser.frequencyBinCount);
    const power = new Float64Array(analyser.frequencyBinCount);
    const hzPerBin = ctx.sampleRate / analyser.fftSize;
    const until = performance.now() + (ms || 1000);
    let n = 0;
    while (performance.now() < until) {
      await new Promise((r) => setTimeout(r, 50));
      analyser.getFloatFrequencyData(bins); // dBFS per bin
      for (let i = 0; i < bins.length; i++) {
        if (Number.isFinite(bins[i])) power[i] += Math.pow(10, bins[i] / 10);
      }
      n++;
    }
    source.disconnect();
    await ctx.close();
    let total = 0;
    let peak = 0;
    for (let i = 1; i < power.length; i++) {
      total += power[i];
      if (power[i] > power[peak]) peak = i;
    }
    const bands = {};
    for (const f of freqs) {
      const c = Math.round(f / hzPerBin);
      let e = 0;
      for (let i = Math.max(1, c - 3); i <= Math.min(power.length - 1, c + 3); i++) e += power[i];
      bands[f] = total > 0 ? e / total : 0;
    }
    return {
      frames: n,
      sampleRate: ctx.sampleRate,
      peakHz: peak * hzPerBin,
      totalDb: total > 0 ? 10 * Math.log10(total / n) : -Infinity,
      bands: bands,
    };
  };

  // Codec, DTLS state and the selected ICE pair as the browser sees them.
  window.ponteStats = async function () {
    if (!pc) return null;
    const report = await pc.getStats();
    const byId = new Map();
    report.forEach((s) => byId.set(s.id, s));
    const out = { connectionState: pc.connectionState };
    report.forEach((s) => {
      if (s.type === "transport") {
        out.dtlsState = s.dtlsState;
        out.srtpCipher = s.srtpCipher;
        out.dtlsCipher = s.dtlsCipher;
        const pair = byId.get(s.selectedCandidatePairId);
        if (pair) {
          const l = byId.get(pair.localCandidateId);
          const r = byId.get(pair.remoteCandidateId);
          out.local = l ? l.address + ":" + l.port : null;
          out.remote = r ? r.address + ":" + r.port : null;
        }
      } else if (s.type === "inbound-rtp" && s.kind === "audio") {
        const c = byId.get(s.codecId);
        out.inboundCodec = c ? c.mimeType : null;
        out.bytesReceived = s.bytesReceived;
      } else if (s.type === "outbound-rtp" && s.kind === "audio") {
        const c = byId.get(s.codecId);
        out.outboundCodec = c ? c.mimeType : null;
        out.bytesSent = s.bytesSent;
      }
    });
    return out;
  };
})();
