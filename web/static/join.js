// Join a ponte conference from the browser (audio only): the PIN goes to
// the console, which answers with a one-time SIP URI; JsSIP (bundled from npm
// by scripts/setup into jssip.min.js) calls it over Kamailio's WebSocket, and
// rtpengine carries the DTLS-SRTP media (README "Browsers"). The buttons key
// the room's keys (the key map's, sent with the token) as DTMF on that call,
// as a phone does: they act on whichever node holds the call.
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
  let keys = {}; // action -> its key (e.g. "*6"), from /join/token
  let muted = false;
  let handUp = false;

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
    keys = {};
    muted = false;
    handUp = false;
    muteButton.textContent = "Mute";
    muteButton.setAttribute("aria-pressed", "false");
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
      keys = reply.keys && typeof reply.keys === "object" ? reply.keys : {};
      // A page served over https may open only wss:// (mixed content).
      const secure = window.location.protocol === "https:";
      if (secure && !reply.wss) throw new Error("This server offers no secure WebSocket for an https page (pbx.websocket.tls_listen).");
      await call(secure ? reply.wss : reply.ws, reply.uri, await iceServers());
    } catch (e) {
      teardown();
      setStatus("");
      showError(e.message || String(e));
      return;
    }
    form.hidden = true;
    // A button whose action the key map leaves unbound has nothing to send.
    for (const [id, action] of [["mute", "mute"], ["hand", "hand"], ["help", "help"]]) {
      $(id).hidden = !keys[action];
    }
    controls.hidden = false;
    if (!pc || pc.connectionState !== "connected") setStatus("Waiting for the audio…");
    else onConnectionState();
  }

  // The action's key as RFC 2833 telephone-events in the call's RTP (negotiated
  // through rtpengine with the app server), or as SIP INFO when the call has
  // no telephone-event: one way per press, so each digit arrives once.
  function sendKey(action) {
    const seq = keys[action];
    if (!session || !seq) return false;
    const senders = pc ? pc.getSenders() : [];
    // The sender JsSIP inserts into (its _getDTMFRTPSender): the first with audio.
    const audio = senders.find((s) => s.track && s.track.kind === "audio");
    const rtp = Boolean(audio && audio.dtmf && audio.dtmf.canInsertDTMF);
    try {
      // Short gaps: the key reader waits feature_digit_timeout (1 s) after
      // *9 for a longer key such as *94.
      session.sendDTMF(seq, {
        transportType: rtp ? "RFC2833" : "INFO",
        duration: 100,
        interToneGap: 70,
      });
    } catch (e) {
      showError("The key could not be sent: " + (e.message || String(e)));
      return false;
    }
    showError("");
    return true;
  }

  // The phone's mute key toggles: the page keeps the state it asked for.
  function toggleMute() {
    if (!sendKey("mute")) return;
    muted = !muted;
    muteButton.textContent = muted ? "Unmute" : "Mute";
    muteButton.setAttribute("aria-pressed", String(muted));
    onConnectionState();
  }

  // The hand key toggles too (a moderator may also lower it).
  function raiseHand() {
    if (!sendKey("hand")) return;
    handUp = !handUp;
    setStatus(handUp ? "Hand raised." : "Hand lowered.");
  }

  function askHelp() {
    if (sendKey("help")) setStatus("Listen: the keys are read out.");
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

  // `ms` milliseconds of the remote audio itself (mono samples in -1..1 at `rate`),
  // for checks a spectrum summary cannot make (is it speech?).
  window.ponteRecord = async function (ms) {
    if (!remoteStream) throw new Error("no remote stream");
    const ctx = new AudioContext();
    await ctx.resume();
    const source = ctx.createMediaStreamSource(remoteStream);
    const tap = ctx.createScriptProcessor(4096, 1, 1);
    const chunks = [];
    tap.onaudioprocess = (ev) => chunks.push(Array.from(ev.inputBuffer.getChannelData(0)));
    source.connect(tap);
    tap.connect(ctx.destination); // a ScriptProcessor runs only while connected
    await new Promise((r) => setTimeout(r, ms || 1000));
    source.disconnect();
    tap.disconnect();
    const rate = ctx.sampleRate;
    await ctx.close();
    return { rate: rate, samples: [].concat(...chunks) };
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
