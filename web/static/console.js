// ponte web console: the rooms page, updated live from /api/events (no polling).
// Every text that comes from the network goes through textContent, never innerHTML.
"use strict";

(function () {
  const csrf = document.querySelector('meta[name="csrf-token"]').content;
  const role = document.querySelector('meta[name="ponte-role"]').content;
  const roomsEl = document.getElementById("rooms");
  const emptyEl = document.getElementById("empty");
  const connEl = document.getElementById("conn");

  let rooms = {};          // name -> room (as in the snapshot)
  const cards = new Map(); // name -> {el, rows: Map(id -> row elements), ...}
  let clockOffset = 0;     // server time - browser time, seconds
  let ws = null;
  let retry = 1000;
  let snapshotPending = null;

  function el(tag, props, ...children) {
    const node = document.createElement(tag);
    if (props) {
      for (const [k, v] of Object.entries(props)) {
        if (k === "class") node.className = v;
        else if (k === "text") node.textContent = v;
        else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
        else node.setAttribute(k, v);
      }
    }
    for (const c of children) if (c) node.append(c);
    return node;
  }

  function fmtDuration(seconds) {
    if (!(seconds >= 0)) return "";
    const s = Math.floor(seconds);
    const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), r = s % 60;
    const two = (n) => String(n).padStart(2, "0");
    return (h ? h + ":" + two(m) : String(m)) + ":" + two(r);
  }

  // A member's call quality as rtpengine measures it, in one short line:
  // in/out = what reached the appliance from the phone / what reached the
  // phone. "" when there are no figures (a browser, or a call rtpengine does
  // not relay): the row then shows nothing.
  function fmtQuality(q) {
    if (!q) return "";
    const num = (v) => (typeof v === "number" && isFinite(v) ? v : null);
    const one = (v, digits) => (num(v) === null ? "–" : String(+num(v).toFixed(digits)));
    const pair = (a, b) => one(a, 0) + "/" + one(b, 0);
    const parts = [];
    if (num(q.loss_in) !== null || num(q.loss_out) !== null) parts.push("loss " + pair(q.loss_in, q.loss_out) + " %");
    if (num(q.jitter_in) !== null || num(q.jitter_out) !== null) parts.push("jitter " + pair(q.jitter_in, q.jitter_out) + " ms");
    if (num(q.rtt_ms) !== null) parts.push("rtt " + one(q.rtt_ms, 0) + " ms");
    if (num(q.mos) !== null) parts.push("MOS " + num(q.mos).toFixed(1)); // 4.0, not 4
    return parts.join(" · ");
  }

  // MOS bands as ITU-T G.107 reads them: 4.0 and up satisfied, from 3.6 some
  // users dissatisfied, below that many.
  function qualityClass(q) {
    const mos = q && typeof q.mos === "number" ? q.mos : null;
    if (mos === null) return "quality";
    return "quality " + (mos >= 4.0 ? "q-good" : mos >= 3.6 ? "q-fair" : "q-poor");
  }

  // -- actions --------------------------------------------------------------

  async function act(room, action, body, card) {
    card.error.textContent = "";
    try {
      const res = await fetch(
        "/api/rooms/" + encodeURIComponent(room) + "/" + encodeURIComponent(action), {
          method: "POST",
          credentials: "same-origin",
          headers: {"Content-Type": "application/json", "X-CSRF-Token": csrf},
          body: JSON.stringify(body || {}),
        });
      if (res.status === 401) { location.href = "/login"; return; }
      if (!res.ok) {
        let msg = res.status + " " + res.statusText;
        try { const j = await res.json(); if (j && j.error) msg = j.error; } catch (e) { /* not JSON */ }
        card.error.textContent = action + ": " + msg;
      }
    } catch (e) {
      card.error.textContent = action + ": " + e;
    }
  }

  function playName(room, member) {
    const url = "/api/rooms/" + encodeURIComponent(room) + "/members/" +
      encodeURIComponent(member) + "/name.wav";
    new Audio(url).play().catch(() => {});
  }

  // -- rendering ------------------------------------------------------------

  function makeCard(name) {
    const card = {rows: new Map()};
    card.title = el("h2", {text: name});
    card.dept = el("span", {class: "dept"});
    card.locked = el("span", {class: "badge locked hidden", text: "locked"});
    card.lecture = el("span", {class: "badge lecture hidden", text: "lecture"});
    card.recording = el("span", {class: "badge recording hidden", text: "recording"});
    card.count = el("span", {class: "badge"});
    card.duration = el("span", {class: "duration", title: "duration"});
    card.tbody = el("tbody");
    card.error = el("p", {class: "error", role: "alert"});
    card.actions = el("div", {class: "room-actions"});
    const table = el("table", {class: "members"},
      el("thead", null, el("tr", null,
        el("th", {text: ""}), el("th", {text: "caller"}), el("th", {text: "role"}),
        el("th", {text: "name"}), el("th", {text: "muted"}), el("th", {text: ""}))),
      card.tbody);
    card.el = el("article", {class: "card"},
      el("header", null, card.title, card.dept, card.locked, card.lecture, card.recording, card.count, card.duration),
      table, card.actions, card.error);
    card.canAct = null;
    return card;
  }

  function buildRoomActions(name, card, canAct) {
    card.actions.replaceChildren();
    card.canAct = canAct;
    if (!canAct) {
      card.actions.append(el("span", {class: "note",
        text: role === "read_only" ? "read-only: no actions" : "outside your departments"}));
      return;
    }
    card.lockBtn = el("button", {type: "button", onclick: () =>
      act(name, rooms[name] && rooms[name].locked ? "unlock" : "lock", {}, card)});
    card.lectureBtn = el("button", {type: "button", onclick: () =>
      act(name, rooms[name] && rooms[name].lecture ? "lecture-off" : "lecture-on", {}, card)});
    card.recordBtn = el("button", {type: "button", onclick: () =>
      act(name, rooms[name] && rooms[name].recording ? "record-stop" : "record-start", {}, card)
        .then(loadRecordings)});
    const endBtn = el("button", {type: "button", class: "danger", text: "End room", onclick: () => {
      if (confirm("End room " + name + " for everyone?")) act(name, "end", {}, card);
    }});
    const number = el("input", {type: "tel", placeholder: "number to dial", maxlength: "21",
      pattern: "\\+?[0-9]{2,20}", "aria-label": "number to dial into the room"});
    const dial = el("form", {onsubmit: (ev) => {
      ev.preventDefault();
      const n = number.value.trim();
      if (n) act(name, "dial", {number: n}, card).then(() => { number.value = ""; });
    }}, number, el("button", {type: "submit", text: "Dial out"}));
    // The oldest raised hand is lowered, unmuted and heard, as a moderator's *96 does.
    const nextHand = el("button", {type: "button", text: "Next hand",
      title: "give the floor to the oldest raised hand", onclick: () => act(name, "next-hand", {}, card)});
    card.actions.append(card.lockBtn, card.lectureBtn, nextHand, endBtn, dial);
    card.actions.append(card.lockBtn, card.lectureBtn, card.recordBtn, endBtn, dial);
  }

  function updateRow(name, card, m, canAct) {
    let row = card.rows.get(m.id);
    if (!row) {
      row = {};
      row.dot = el("span", {class: "dot", title: "talking"});
      row.caller = el("td", {class: "caller"});
      row.quality = el("div", {title: "call quality as rtpengine measures it from RTCP: packet " +
        "loss and jitter from the phone / to the phone, round trip, MOS (1-5); averages since " +
        "the call began, refreshed every 5 s"});
      row.role = el("td");
      row.name = el("td");
      row.muted = el("td");
      row.act = el("td", {class: "act"});
      row.tr = el("tr", null, el("td", null, row.dot), row.caller, row.role, row.name,
        row.muted, row.act);
      row.tr.dataset.member = String(m.id);
      card.rows.set(m.id, row);
      card.tbody.append(row.tr);
    }
    row.dot.classList.toggle("talking", !!m.talking);
    row.caller.textContent = m.caller || "(unknown)";
    if (m.via === "web") row.caller.append(" ", el("span", {class: "via", text: "browser"}));
    if (m.hand) row.caller.append(" ", el("span", {class: "hand", text: "hand up", title: "hand raised"}));
    if (m.held) row.caller.append(" ", el("span", {class: "held", text: "on hold",
      title: "the phone put the call on hold: still in the room, not heard"}));
    if (m.help) row.caller.append(" ", el("span", {class: "help", text: "help requested",
      title: "asked for an operator (*90): ringing, with an operator, or nobody answered"}));
    const quality = fmtQuality(m.quality);
    row.quality.textContent = quality;
    row.quality.className = qualityClass(m.quality);
    if (quality) row.caller.append(row.quality);
    row.role.textContent = m.role || "";
    row.role.className = m.role === "moderator" ? "role-moderator" : "";
    const key = [m.name, m.muted, m.hand, m.help, m.held, canAct].join("|");
    if (row.key === key) return;
    row.key = key;
    row.name.replaceChildren(m.name
      ? el("button", {type: "button", text: "▶", title: "play the recorded name",
          "aria-label": "play the recorded name", onclick: () => playName(name, m.id)})
      : "");
    row.muted.replaceChildren(m.muted ? el("span", {class: "muted-flag", text: "muted"}) : "");
    row.act.replaceChildren();
    if (canAct) {
      row.act.append(
        el("button", {type: "button", text: m.muted ? "Unmute" : "Mute",
          onclick: () => act(name, (rooms[name].members.find((x) => x.id === m.id) || m).muted
            ? "unmute" : "mute", {member: m.id}, card)}),
        m.hand ? el("button", {type: "button", text: "Lower hand",
          onclick: () => act(name, "lower-hand", {member: m.id}, card)}) : "",
        el("button", {type: "button", class: "danger", text: "Kick", onclick: () => {
          if (confirm("Remove " + (m.caller || m.id) + " from " + name + "?"))
            act(name, "kick", {member: m.id}, card);
        }}));
      if (m.help) {
        // Ring the operators again for this member: into a private talk, or
        // straight into the room with everyone.
        row.act.append(
          el("button", {type: "button", text: "Operator: talk", title: "ring the operators " +
            "and put the one who answers in a private talk with this caller",
            onclick: () => act(name, "operator", {member: m.id}, card)}),
          el("button", {type: "button", text: "Operator: join", title: "ring the operators; " +
            "the one who answers joins the room",
            onclick: () => act(name, "operator-join", {member: m.id}, card)}));
      }
    }
  }

  function renderRoom(name) {
    const room = rooms[name];
    let card = cards.get(name);
    if (!room) {
      if (card) { card.el.remove(); cards.delete(name); }
      return;
    }
    if (!card) {
      card = makeCard(name);
      cards.set(name, card);
      // Keep the cards in name order.
      const after = [...cards.keys()].sort().find((n) => n > name && cards.get(n).el.isConnected);
      roomsEl.insertBefore(card.el, after ? cards.get(after).el : null);
    }
    const canAct = !!room.can_act && role !== "read_only";
    if (card.canAct !== canAct) buildRoomActions(name, card, canAct);
    card.dept.textContent = room.department ? "· " + room.department : "";
    card.locked.classList.toggle("hidden", !room.locked);
    card.lecture.classList.toggle("hidden", !room.lecture);
    card.recording.classList.toggle("hidden", !room.recording);
    const members = room.members || [];
    card.count.textContent = members.length + (members.length === 1 ? " member" : " members");
    if (canAct) {
      card.lockBtn.textContent = room.locked ? "Unlock" : "Lock";
      card.lectureBtn.textContent = room.lecture ? "Lecture off" : "Lecture on";
      card.recordBtn.textContent = room.recording ? "Stop recording" : "Record";
    }
    const ids = new Set(members.map((m) => m.id));
    for (const [id, row] of card.rows) {
      if (!ids.has(id)) { row.tr.remove(); card.rows.delete(id); }
    }
    for (const m of members) updateRow(name, card, m, canAct);
    tickRoom(name, card);
  }

  function renderAll() {
    for (const name of [...cards.keys()]) if (!(name in rooms)) renderRoom(name);
    for (const name of Object.keys(rooms).sort()) renderRoom(name);
    emptyEl.hidden = Object.keys(rooms).length > 0;
  }

  function tickRoom(name, card) {
    const room = rooms[name];
    const now = Date.now() / 1000 + clockOffset;
    card.duration.textContent = room && room.started ? fmtDuration(now - room.started) : "waiting";
  }

  setInterval(() => { for (const [name, card] of cards) tickRoom(name, card); }, 1000);

  // -- live events ----------------------------------------------------------

  function askSnapshot() {
    if (snapshotPending || !ws || ws.readyState !== WebSocket.OPEN) return;
    snapshotPending = setTimeout(() => {
      snapshotPending = null;
      if (ws && ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify({type: "snapshot"}));
    }, 150);
  }

  function member(room, id) {
    return (room.members || []).find((m) => m.id === id);
  }

  function apply(ev) {
    if (ev.type === "snapshot") {
      rooms = ev.rooms || {};
      if (typeof ev.now === "number") clockOffset = ev.now - Date.now() / 1000;
      renderAll();
      return;
    }
    const room = rooms[ev.room];
    if (ev.type === "room_ended") {
      delete rooms[ev.room];
      renderAll();
      return;
    }
    if (!room) { askSnapshot(); return; }
    const m = ev.member !== undefined ? member(room, ev.member) : undefined;
    switch (ev.type) {
      case "member_joined":
        askSnapshot(); // role, recorded name and the rest come with the snapshot
        return;
      case "member_left":
        room.members = (room.members || []).filter((x) => x.id !== ev.member);
        break;
      case "muted": case "unmuted":
        if (!m) { askSnapshot(); return; }
        m.muted = ev.type === "muted";
        break;
      case "talking_started": case "talking_stopped":
        if (!m) { askSnapshot(); return; }
        m.talking = ev.type === "talking_started";
        break;
      case "hand_raised": case "hand_lowered":
        if (!m) { askSnapshot(); return; }
        m.hand = ev.type === "hand_raised";
        break;
      case "on_hold": case "off_hold":
        if (!m) { askSnapshot(); return; }
        m.held = ev.type === "on_hold";
        break;
      case "help_requested": case "help_ended":
        if (!m) { askSnapshot(); return; }
        m.help = ev.type === "help_requested";
        break;
      case "quality":
        // A member not shown yet gets the figures with the snapshot its
        // member_joined asks for.
        if (!m) return;
        m.quality = ev.quality || null;
        break;
      case "locked": case "unlocked":
        room.locked = ev.type === "locked";
        break;
      case "lecture_on": case "lecture_off":
        room.lecture = ev.type === "lecture_on";
        break;
      default:
        return;
    }
    renderRoom(ev.room);
    emptyEl.hidden = Object.keys(rooms).length > 0;
  }

  function connect() {
    const scheme = location.protocol === "https:" ? "wss://" : "ws://";
    ws = new WebSocket(scheme + location.host + "/api/events?csrf=" + encodeURIComponent(csrf));
    ws.onopen = () => {
      retry = 1000;
      connEl.textContent = "live";
      connEl.className = "conn on";
    };
    ws.onmessage = (msg) => {
      let ev;
      try { ev = JSON.parse(msg.data); } catch (e) { return; }
      apply(ev);
    };
    ws.onclose = (ev) => {
      connEl.textContent = "disconnected: reconnecting…";
      connEl.className = "conn off";
      if (ev.code === 4401) { location.href = "/login"; return; }
      // A refused upgrade looks like any other close: ask whether we are still logged in.
      fetch("/api/session", {credentials: "same-origin"}).then((res) => {
        if (res.status === 401) location.href = "/login";
      }).catch(() => {});
      setTimeout(connect, retry);
      retry = Math.min(retry * 2, 15000);
    };
  }

  // The recordings this admin may see; a file downloads only for an admin
  // whose role covers the recording's department (the server checks).
  const recordingsEl = document.getElementById("recordings");
  function loadRecordings() {
    if (!recordingsEl) return;
    fetch("/api/recordings", {credentials: "same-origin"}).then((res) => res.ok ? res.json() : null)
      .then((data) => {
        if (!data) return;
        const rows = data.recordings.map((r) => el("tr", null,
          el("td", {text: r.room}), el("td", {text: (r.started_at || "").slice(0, 19)}),
          el("td", {text: r.seconds != null ? fmtDuration(r.seconds) : "recording…"}),
          el("td", {text: r.started_by || ""}),
          el("td", null, ...(r.files || []).map((f) => el("a", {
            href: "/api/recordings/" + r.id + "/" + encodeURIComponent(f.name),
            text: f.name, download: "", class: "file"})))));
        recordingsEl.querySelector("tbody").replaceChildren(...rows);
        recordingsEl.hidden = rows.length === 0;
      }).catch(() => {});
  }
  loadRecordings();
  setInterval(loadRecordings, 30000);

  connect();
})();
