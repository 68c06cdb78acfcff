// The Online Space page: live list, messages and documents from the server's event stream.
// Everything shown comes in as text (textContent), never as HTML.
"use strict";
(function () {
  const body = document.body;
  const base = body.dataset.base;
  const me = body.dataset.me;
  const organizer = body.dataset.role === "organizer";
  const csrf = document.querySelector('meta[name="csrf"]').content;
  function t(key) {
    const name = "w" + key.split("_").map((p) => p.charAt(0).toUpperCase() + p.slice(1)).join("");
    return body.dataset[name] || key;
  }
  function el(tag, cls, text) {
    const node = document.createElement(tag);
    if (cls) node.className = cls;
    if (text !== undefined) node.textContent = text;
    return node;
  }
  function clock(iso) {
    return iso ? new Date(iso).toLocaleTimeString(document.documentElement.lang, {hour: "2-digit", minute: "2-digit"}) : "";
  }
  const notice = document.getElementById("notice");
  function say(key, ok) {
    notice.textContent = t(key);
    notice.className = ok ? "ok" : "error";
  }
  async function post(path, data) {
    data.set("csrf", csrf);
    try {
      const res = await fetch(base + path, {method: "POST", body: data, credentials: "same-origin",
                                            headers: {"X-Requested-With": "fetch"}});
      const answer = await res.json().catch(() => ({result: "failed"}));
      say(answer.result || "failed", res.ok);
      return res.ok;
    } catch (e) {
      say("failed", false);
      return false;
    }
  }
  function actionButton(label, action, target) {
    const b = el("button", "small", label);
    b.type = "button";
    b.dataset.action = action;
    if (target) b.dataset.target = target;
    b.addEventListener("click", () => {
      const data = new FormData();
      data.set("action", action);
      if (target) data.set("target", target);
      post("action", data);
    });
    return b;
  }
  function setToggle(form, on) {
    const input = form.querySelector('input[name="action"]');
    if (!form.dataset.first) {
      form.dataset.first = input.value;
      form.dataset.firstLabel = form.querySelector("button").textContent;
    }
    input.value = on ? form.dataset.toggle : form.dataset.first;
    form.querySelector("button").textContent = on ? t(form.dataset.toggle) : form.dataset.firstLabel;
  }
  // Rows are kept per person and rebuilt only when that person changed: an update never moves the
  // keyboard focus off a button that did not change.
  function fill(list, items, key, sign, build, emptyText) {
    const existing = new Map();
    for (const li of list.querySelectorAll("li[data-key]")) existing.set(li.dataset.key, li);
    for (const empty of list.querySelectorAll("li.empty")) empty.remove();
    let previous = null;
    for (const item of items) {
      const k = String(key(item));
      const signature = sign(item);
      let li = existing.get(k);
      existing.delete(k);
      if (!li || li.dataset.sign !== signature) {
        const fresh = build(item);
        fresh.dataset.key = k;
        fresh.dataset.sign = signature;
        if (li) li.replaceWith(fresh);
        li = fresh;
      }
      const next = previous ? previous.nextSibling : list.firstChild;
      if (next !== li) list.insertBefore(li, next);
      previous = li;
    }
    for (const gone of existing.values()) gone.remove();
    if (!items.length) list.append(el("li", "empty", emptyText));
  }
  function memberRow(m) {
    const li = el("li", "member");
    li.dataset.person = m.person;
    li.append(el("span", "name", m.person + (m.person === me ? " (" + t("you") + ")" : "")));
    if (m.role === "organizer") li.append(el("span", "badge", t("organizer_badge")));
    if (m.muted) li.append(el("span", "tag muted", t("muted")));
    if (m.waiting) li.append(el("span", "tag", t("waiting")));
    if (m.joined_at) li.append(el("span", "since", t("joined") + " " + clock(m.joined_at)));
    if (organizer) {
      const tools = el("span", "tools");
      const mute = actionButton(m.muted ? t("unmute") : t("mute"), m.muted ? "unmute" : "mute", m.person);
      mute.setAttribute("aria-label", (m.muted ? t("unmute") : t("mute")) + " " + m.person);
      tools.append(mute);
      if (m.person !== me) {
        const remove = actionButton(t("remove"), "remove", m.person);
        remove.setAttribute("aria-label", t("remove") + " " + m.person);
        tools.append(remove);
      }
      li.append(tools);
    }
    return li;
  }
  function renderMembers(state) {
    fill(document.getElementById("members"), state.members, (m) => m.person, (m) => JSON.stringify(m),
         memberRow, t("nobody"));
    const mine = state.members.find((m) => m.person === me) || null;
    const self = document.getElementById("self-mute");
    self.hidden = !mine || organizer;  // the organizer has the button on their own row
    if (mine) setToggle(self.querySelector("form"), mine.muted);
    const target = self.querySelector("form");
    let input = target.querySelector('input[name="target"]');
    if (!input) {
      input = el("input");
      input.type = "hidden";
      input.name = "target";
      target.append(input);
    }
    input.value = me;
  }
  function renderState(state) {
    renderMembers(state);
    const parts = [];
    if (state.ended) parts.push(t("ended"));
    else if (!state.live) parts.push(t("nobody"));
    if (state.locked) parts.push(t("locked"));
    if (state.recording) parts.push(t("recording"));
    document.getElementById("room-state").textContent = parts.join(" ");
    for (const form of document.querySelectorAll("#organizer-controls form[data-toggle]")) {
      const first = form.dataset.first || form.querySelector('input[name="action"]').value;
      const on = {mute_all: state.participants_muted, lock: state.locked, record: state.recording}[first];
      setToggle(form, !!on);
    }
    fill(document.getElementById("documents"), state.documents, (d) => d.id, (d) => d.id, (d) => {
      const li = el("li");
      const a = el("a", "doc", d.name);
      a.href = base + "documents/" + d.id;
      a.setAttribute("download", "");
      li.append(a, el("span", "meta", " " + Math.max(1, Math.round(d.size / 1024)) + " KB, " + t("by") + " " + d.by));
      return li;
    }, t("no_documents"));
    fill(document.getElementById("messages"), state.messages, (m) => m.id, (m) => String(m.id), (m) => {
      const li = el("li", "message");
      li.append(el("span", "author", m.author), el("span", "at", " " + clock(m.at)), el("p", "body", m.body));
      return li;
    }, t("no_messages"));
  }
  for (const form of document.querySelectorAll("form.act")) {
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      const action = form.querySelector('input[name="action"]').value;
      if (action === "end" && !window.confirm(t("confirm_end"))) return;
      post("action", new FormData(form));
    });
  }
  document.getElementById("chat").addEventListener("submit", async (event) => {
    event.preventDefault();
    const form = event.target;
    if (await post("messages", new FormData(form))) form.reset();
  });
  document.getElementById("upload").addEventListener("submit", async (event) => {
    event.preventDefault();
    const form = event.target;
    if (await post("documents", new FormData(form))) form.reset();
  });
  const stream = new EventSource(base + "events");
  stream.onmessage = (event) => {
    body.dataset.live = "1";
    renderState(JSON.parse(event.data));
  };
  stream.addEventListener("gone", () => {
    stream.close();
    say("gone", false);
  });
  stream.addEventListener("moved", () => {  // the person opened the space in another window
    stream.close();
    say("moved", false);
  });
  stream.onerror = () => {
    if (stream.readyState !== EventSource.CLOSED) document.getElementById("room-state").textContent = t("live_lost");
  };
})();
