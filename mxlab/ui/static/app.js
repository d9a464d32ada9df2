// The mxlab dashboard: reads the lab through /api (with the token from the page URL),
// follows it by server-sent events, and drives the fault drills and the send form.
"use strict";
const token = new URLSearchParams(location.search).get("token") || "";
const api = (path, params = {}) =>
  "/api/" + path + "?" + new URLSearchParams({ ...params, token }).toString();
const $ = (id) => document.getElementById(id);

function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  for (const c of children) e.append(c);
  return e;
}

async function post(path, body = {}) {
  const r = await fetch(api(path), {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify(body),
  });
  const data = await r.json();
  if (!r.ok) throw new Error(data.error || r.statusText);
  return data;
}

let users = [];

function showState(s) {
  $("lab-name").textContent = `${s.lab} (${s.runtime})`;
  const body = $("nodes").querySelector("tbody");
  body.replaceChildren();
  for (const n of s.nodes) {
    const drills = el("td");
    for (const action of ["start", "stop", "kill", "restart", "cut", "restore"]) {
      const b = el("button", { "data-node": n.node, "data-action": action, type: "button" }, action);
      b.addEventListener("click", () => drill(n.node, action));
      drills.append(b);
    }
    const state = el("td", { class: "state " + (n.state === "running" ? "running" : "down") }, n.state);
    body.append(el("tr", { id: "node-" + n.node }, el("td", {}, n.node), el("td", {}, n.role),
      el("td", {}, n.address), state, drills));
  }
  const queues = $("queues");
  queues.replaceChildren();
  for (const [node, entries] of Object.entries(s.queues)) {
    const flush = el("button", { type: "button", "data-flush": node }, "flush");
    flush.addEventListener("click", () => post(`queue/${node}/flush`).catch(showError));
    const box = el("div", { class: "queue", id: "queue-" + node, "data-count": entries.length },
      el("h3", {}, `${node}: ${entries.length} queued `, flush));
    const list = el("ul");
    for (const e of entries) {
      const rcpts = e.recipients.map((r) => `${r.address} ${r.state} ${r.reply || ""}`).join("; ");
      list.append(el("li", {}, `${e.id} ${e.state} from ${e.sender || "<>"}: ${rcpts}`));
    }
    box.append(list);
    queues.append(box);
  }
  if (JSON.stringify(users) !== JSON.stringify(s.users)) {
    users = s.users;
    for (const select of [$("send-from"), $("mailbox-user")]) {
      const keep = select.value;
      select.replaceChildren(...users.map((u) => el("option", { value: u }, u)));
      if (keep) select.value = keep;
    }
  }
  refreshGraph();
  refreshMailbox();
}

async function refreshGraph() {
  const r = await fetch(api("graph.svg"));
  if (r.ok) $("graph").innerHTML = await r.text();
}

async function refreshMailbox() {
  const address = $("mailbox-user").value;
  if (!address) return;
  const r = await fetch(api("mailbox", { address }));
  const data = await r.json();
  const list = $("mailbox-list");
  if (!r.ok) {
    list.replaceChildren(el("li", { class: "error" }, data.error));
    return;
  }
  list.replaceChildren(...data.messages.map((m) => {
    const li = el("li", { class: "message" }, `${m.subject} — from ${m.from} `);
    const t = el("button", { type: "button" }, "trace");
    t.addEventListener("click", () => { $("trace-id").value = m.message_id; trace(); });
    li.append(t);
    return li;
  }));
}

function showError(err) {
  $("send-result").replaceChildren(el("span", { class: "error" }, String(err.message || err)));
}

async function drill(node, action) {
  try {
    await post(`node/${node}/${action}`);
  } catch (err) {
    showError(err);
  }
}

async function trace() {
  const id = $("trace-id").value.trim();
  if (!id) return;
  const r = await fetch(api("trace", { message_id: id }));
  const data = await r.json();
  const list = $("trace-timeline");
  list.replaceChildren();
  for (const e of data.events) {
    const when = new Date(e.ts * 1000).toISOString().slice(11, 23);
    const delay = e.delay === null ? "" : ` (+${e.delay.toFixed(3)}s)`;
    const f = e.fields;
    const parts = [];
    if (f.mx && f.mx.length) parts.push(`DNS: MX ${f.domain} = ${f.mx.join(", ")};`);
    if (f.hops) parts.push(`try ${f.hops.join(", ")}`);
    for (const k of ["from", "to", "hop", "client", "error"]) {
      if (f[k] !== undefined && f[k] !== "") parts.push(`${k}=${f[k]}`);
    }
    if (f.status) parts.push(`reply: ${f.status}`);
    if (e.event === "deferred") parts.push(`retry later (attempt ${f.attempt})`);
    list.append(el("li", { class: "hop" }, `${when}`, el("span", { class: "delay" }, delay),
      ` ${e.node} ${e.event} ${parts.join(" ")}`));
  }
  if (!data.events.length) list.append(el("li", {}, "no node logged that message"));
}

$("send-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  try {
    const sent = await post("send", {
      from: $("send-from").value, to: $("send-to").value,
      subject: $("send-subject").value, body: $("send-body").value,
    });
    $("send-result").replaceChildren(el("span", { id: "sent-id" }, `sent ${sent.message_id}`));
    $("trace-id").value = sent.message_id;
  } catch (err) {
    showError(err);
  }
});
$("trace-form").addEventListener("submit", (ev) => { ev.preventDefault(); trace(); });
$("mailbox-user").addEventListener("change", refreshMailbox);
$("dns-fail").addEventListener("click", () =>
  post("dns/fail", { name: $("dns-name").value, mode: $("dns-mode").value })
    .then(() => $("dns-result").textContent = `${$("dns-name").value}: ${$("dns-mode").value}`)
    .catch(showError));
$("dns-restore").addEventListener("click", () =>
  post("dns/restore").then(() => $("dns-result").textContent = "DNS restored").catch(showError));

const refreshZones = () =>
  fetch(api("zones")).then((r) => r.text()).then((t) => { $("zones").textContent = t; });
refreshZones();
setInterval(refreshZones, 5000);
fetch(api("state")).then((r) => r.json()).then(showState);
setInterval(refreshMailbox, 2000);

const events = new EventSource(api("events"));
events.addEventListener("open", () => { $("connection").textContent = "live"; });
events.addEventListener("error", () => { $("connection").textContent = "reconnecting…"; });
events.addEventListener("state", (ev) => showState(JSON.parse(ev.data)));
events.addEventListener("log", (ev) => {
  const e = JSON.parse(ev.data);
  const when = new Date(e.ts * 1000).toISOString().slice(11, 23);
  const rest = Object.entries(e).filter(([k]) => !["ts", "node", "event"].includes(k))
    .map(([k, v]) => `${k}=${typeof v === "object" ? JSON.stringify(v) : v}`).join(" ");
  const list = $("events");
  list.prepend(el("li", {}, `${when} ${e.node} ${e.event} ${rest}`));
  while (list.children.length > 200) list.lastChild.remove();
});
