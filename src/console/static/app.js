// 调度台: live alarms, orders needing action and caregivers on a map. No build step; plain ES2020.
"use strict";

const SEVERITY = { critical: 0, warning: 1, info: 2 };
const SEVERITY_ZH = { critical: "紧急", warning: "警告", info: "提示" };
const ALARM_ZH = {
  sos: "SOS 呼救", fall: "跌倒", heart_rate: "心率异常", spo2: "血氧异常", geofence: "离开安全区",
  geofence_exit: "离开安全区", low_battery: "电量低", device_offline: "设备离线", data_lost: "数据丢失",
};
const STATUS_ZH = { unfulfilled: "待人工派单", dispatching: "派单中", offered: "已发出邀约" };
const EVENT_ZH = {
  "orders.order.created": "新订单", "orders.order.offered": "已发出邀约", "orders.order.assigned": "护理员已接单",
  "orders.order.unfulfilled": "无人接单，待人工派单", "orders.order.cancelled": "订单已取消",
  "orders.order.en_route": "护理员出发", "orders.order.in_service": "开始服务", "orders.order.completed": "服务完成",
  "orders.visit.flagged": "服务异常", "dispatch.offer.declined": "护理员拒单", "dispatch.offer.expired": "邀约超时",
  "devices.alarm.raised": "新告警", "devices.alarm.acknowledged": "告警已确认", "devices.alarm.resolved": "告警已处置",
  "devices.alarm.repeated": "告警再次触发", "devices.alarm.escalated": "告警升级（无人确认）",
  "devices.alarm.cancelled": "老人已取消告警，需回访",
};
const FRESH_MS = 15000;  // a new critical alarm flashes this long (it keeps pulsing until acknowledged)

const state = {
  services: {}, alarms: [], orders: [], caregivers: [], seenAlarms: new Set(), freshUntil: new Map(), lastEventId: null,
  cues: 0, started: false, alarmsAsked: 0,
};
const $ = (id) => document.getElementById(id);

async function api(path, options = {}) {
  const response = await fetch(path, {
    credentials: "same-origin",
    headers: { "Content-Type": "application/json" },
    ...options,
  });
  if (response.status === 401) { showLogin(); throw new Error("unauthenticated"); }
  if (!response.ok) {
    let message = response.statusText;
    try { message = (await response.json()).error.message; } catch (_) { /* not JSON */ }
    const error = new Error(message); error.status = response.status; throw error;
  }
  return response.status === 204 ? null : response.json();
}

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (key === "class") node.className = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else if (value !== undefined && value !== null) node.setAttribute(key, value);
  }
  for (const child of children) node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  return node;
}

// the server's clock, as far as the page can tell (a workstation's clock may be off by minutes)
function serverNow() { return Date.now() + (state.skewMs || 0); }
function secondsSince(iso) { return Math.max(0, Math.floor((serverNow() - Date.parse(iso)) / 1000)); }
function fmtAge(seconds) {
  if (seconds < 60) return `${seconds} 秒`;
  if (seconds < 3600) return `${Math.floor(seconds / 60)} 分 ${seconds % 60} 秒`;
  return `${Math.floor(seconds / 3600)} 小时 ${Math.floor((seconds % 3600) / 60)} 分`;
}
function fmtTime(iso) {
  return new Date(iso).toLocaleTimeString("zh-CN", { timeZone: "Asia/Shanghai", hour12: false });
}

function showLogin() { $("console").hidden = true; $("login").hidden = false; }

async function login(event) {
  event.preventDefault();
  const form = new FormData(event.target);
  $("login-error").textContent = "";
  try {
    const answer = await api("/v1/auth/session", {
      method: "POST", body: JSON.stringify({ username: form.get("username"), password: form.get("password") }),
    });
    if (!["dispatcher", "admin"].includes(answer.role)) { $("login-error").textContent = "此账号不是调度员账号"; return; }
    await start();
  } catch (error) { $("login-error").textContent = error.message === "unauthenticated" ? "账号或密码错误" : error.message; }
}

// --- alarms ---------------------------------------------------------------------------------------------------
let audio = null;
function unlockAudio() {
  try { audio = audio || new AudioContext(); if (audio.state === "suspended") audio.resume(); }
  catch (_) { audio = null; /* no audio device: the visual cue remains */ }
}

// The cue for a new (or repeated) critical alarm: three short tones, the card and the header flash, the tab title.
function cue(alarm) {
  state.cues += 1;
  document.body.dataset.cues = String(state.cues);
  document.body.dataset.lastCue = alarm.id;
  const bar = document.querySelector(".bar");
  bar.classList.remove("alerting"); void bar.offsetWidth; bar.classList.add("alerting");
  try {
    unlockAudio();
    if (!audio) return;
    for (let i = 0; i < 3; i++) {
      const tone = audio.createOscillator(); const gain = audio.createGain();
      const at = audio.currentTime + i * 0.35;
      tone.frequency.value = i % 2 ? 660 : 880; gain.gain.value = 0.2;
      tone.connect(gain).connect(audio.destination); tone.start(at); tone.stop(at + 0.25);
    }
  } catch (_) { /* the visual cue remains */ }
}

async function loadAlarms() {
  const asked = ++state.alarmsAsked;  // answers can overtake each other: only the latest question's is shown
  try {
    const page = await api("/v1/alarms?status=open&limit=200");
    const acknowledged = await api("/v1/alarms?status=acknowledged&limit=200");
    if (asked !== state.alarmsAsked) return;
    state.alarms = [...page.items, ...acknowledged.items];
  } catch (error) { if (error.status !== 404) throw error; state.alarms = []; }
  renderAlarms();
}

// Open alarms first, then by severity, then the oldest first (it has waited longest).
function alarmOrder(a, b) {
  return (a.status === "open" ? 0 : 1) - (b.status === "open" ? 0 : 1) ||
    SEVERITY[a.severity] - SEVERITY[b.severity] || Date.parse(a.raised_at) - Date.parse(b.raised_at);
}

function renderAlarms() {
  const list = $("alarms"); list.replaceChildren();
  const alarms = [...state.alarms].sort(alarmOrder);
  const now = Date.now();
  const cued = [];
  for (const alarm of alarms) {
    const isNew = !state.seenAlarms.has(alarm.id);
    state.seenAlarms.add(alarm.id);
    if (isNew && alarm.severity === "critical" && alarm.status === "open" && state.started) {
      // news (the page's first picture is not): flash and sound; it keeps pulsing until acknowledged
      state.freshUntil.set(alarm.id, now + FRESH_MS);
      cued.push(alarm);
    }
    const fresh = (state.freshUntil.get(alarm.id) || 0) > now;
    const urgent = alarm.severity === "critical" && alarm.status === "open";
    const age = el("span", { class: "age", "data-since": alarm.raised_at }, fmtAge(secondsSince(alarm.raised_at)));
    const actions = el("div", { class: "actions" });
    if (alarm.status === "open") {
      actions.append(el("button", { class: "danger", "data-action": "ack", onclick: () => ackAlarm(alarm) }, "确认"));
    }
    actions.append(el("button", { "data-action": "resolve", onclick: () => resolveAlarm(alarm) }, "处置"));
    list.append(el("li", {
      class: `sev-${alarm.severity}${urgent ? " unacked-critical" : ""}${fresh && urgent ? " new-critical" : ""}`,
      "data-alarm": alarm.id, "data-type": alarm.type, "data-device": alarm.device_id, "data-status": alarm.status,
    },
    el("div", { class: "row" }, el("b", {}, `${SEVERITY_ZH[alarm.severity] || ""} · ${ALARM_ZH[alarm.type] || alarm.type}`), age),
    el("div", { class: "meta" }, `${alarm.status === "open" ? "未确认" : "已确认"} · 设备 ${alarm.device_id || "—"} · ${fmtTime(alarm.raised_at)}`
      + (alarm.count > 1 ? ` · 重复 ${alarm.count} 次` : "")),
    actions));
  }
  $("alarms-empty").hidden = alarms.length > 0;
  const open = alarms.filter((a) => a.status === "open");
  $("c-alarms").textContent = open.length;
  const critical = open.filter((a) => a.severity === "critical").length;
  document.title = critical ? `【${critical} 条紧急告警】调度台` : "虚拟养老院 · 调度台";
  document.body.classList.toggle("has-critical", critical > 0);
  for (const alarm of cued) cue(alarm);
  tick();
  renderMap();
}

// An alarm event from the stream, applied at once (the list is re-read right after for the full record).
function applyAlarmEvent(type, data) {
  const index = state.alarms.findIndex((a) => a.id === data.alarm_id);
  const before = index >= 0 ? state.alarms[index] : null;
  if (data.status === "resolved") {
    if (index >= 0) state.alarms.splice(index, 1);
  } else {
    const alarm = {
      ...(before || { raised_at: data.occurred_at }), id: data.alarm_id, elder_id: data.elder_id,
      device_id: data.device_id, type: data.type,  // the payload's alarm type (the event type is event.type)
      severity: data.severity, status: data.status, count: data.count, order_id: data.order_id,
      escalation_level: data.escalation_level, lat: data.lat ?? (before && before.lat), lon: data.lon ?? (before && before.lon),
    };
    if (index >= 0) state.alarms[index] = alarm; else state.alarms.push(alarm);
    if (type === "devices.alarm.repeated" && alarm.severity === "critical" && alarm.status === "open") {
      state.freshUntil.set(alarm.id, Date.now() + FRESH_MS);
      cue(alarm);
    }
  }
  renderAlarms();
}

async function ackAlarm(alarm) {
  try { await api(`/v1/alarms/${alarm.id}/ack`, { method: "POST", body: "{}" }); await loadAlarms(); }
  catch (error) { logLine(`确认失败：${error.message}`); }
}

function resolveAlarm(alarm) {
  const dialog = $("resolve-dialog"); const form = $("resolve-form"); form.reset();
  dialog.returnValue = "";
  dialog.onclose = async () => {
    if (dialog.returnValue !== "ok") return;
    const data = new FormData(form);
    try {
      await api(`/v1/alarms/${alarm.id}/resolve`, {
        method: "POST", body: JSON.stringify({ outcome: data.get("outcome"), notes: data.get("notes") || null }),
      });
      await loadAlarms();
    } catch (error) { logLine(`处置失败：${error.message}`); }
  };
  dialog.showModal();
}

// --- orders ----------------------------------------------------------------------------------------------------
async function loadSnapshot() {
  const asked = Date.now();
  const snapshot = await api("/v1/console/snapshot");
  state.skewMs = Date.parse(snapshot.now) - (asked + Date.now()) / 2;
  state.orders = snapshot.orders;
  $("c-unfulfilled").textContent = snapshot.counters.unfulfilled;
  $("c-offered").textContent = snapshot.counters.offered;
  showCounters(snapshot.counters);
  renderOrders();
}

function renderOrders() {
  const list = $("orders"); list.replaceChildren();
  for (const order of state.orders) {
    const service = state.services[order.service_code] || order.service_code;
    const expiry = order.offer_expires_at
      ? el("span", { class: "age", "data-until": order.offer_expires_at }, "") : el("span", {}, "");
    list.append(el("li", { class: `st-${order.status}`, "data-order": order.id },
      el("div", { class: "row" },
        el("b", { class: order.priority === "urgent" ? "urgent" : "" }, `${order.priority === "urgent" ? "【紧急】" : ""}${service}`),
        expiry),
      el("div", { class: "meta" }, `${STATUS_ZH[order.status] || order.status} · ${order.elder_name} · ${fmtTime(order.created_at)}`),
      el("div", { class: "actions" },
        el("button", { class: "primary", "data-action": "assign", onclick: () => openAssign(order) }, "指派"),
        el("button", { "data-action": "cancel", onclick: () => cancelOrder(order) }, "取消"))));
  }
  $("orders-empty").hidden = state.orders.length > 0;
  tick();
  renderMap();
}

async function openAssign(order) {
  const dialog = $("assign-dialog"); const list = $("candidates");
  $("assign-order").textContent = `${state.services[order.service_code] || order.service_code} · ${order.elder_name}`;
  list.replaceChildren(el("li", {}, "正在计算候选人…"));
  dialog.showModal();
  try {
    const ranked = await api(`/v1/orders/${order.id}/candidates?limit=10`);
    list.replaceChildren();
    if (!ranked.items.length) list.append(el("li", {}, "附近没有符合条件的在岗护理员"));
    ranked.items.forEach((candidate, index) => {
      const name = (state.caregivers.find((c) => c.caregiver_id === candidate.caregiver_id) || {}).name || candidate.caregiver_id.slice(0, 8);
      const reasons = Object.entries(candidate.reasons).map(([k, v]) => `${k} ${v}`).join("，");
      list.append(el("li", { "data-candidate": candidate.caregiver_id },
        el("div", { class: "row" }, el("b", {}, `${index + 1}. ${name}`), el("span", {}, `${(candidate.distance_m / 1000).toFixed(1)} 公里`)),
        el("div", { class: "meta" }, `评分 ${candidate.score}（${reasons}）${candidate.served_before ? " · 曾服务" : ""}`),
        el("div", { class: "actions" }, el("button", {
          class: "primary", "data-action": "choose", onclick: async (event) => {
            event.preventDefault();
            try {
              await api(`/v1/orders/${order.id}/assign`, { method: "POST", body: JSON.stringify({ caregiver_id: candidate.caregiver_id }) });
              logLine(`已指派 ${name}`); dialog.close(); await loadSnapshot();
            } catch (error) { logLine(`指派失败：${error.message}`); }
          },
        }, "指派给此人"))));
    });
  } catch (error) { list.replaceChildren(el("li", {}, `无法获取候选人：${error.message}`)); }
}

async function cancelOrder(order) {
  const reason = window.prompt("取消原因", "老人取消");
  if (!reason) return;
  try { await api(`/v1/orders/${order.id}/cancel`, { method: "POST", body: JSON.stringify({ reason }) }); await loadSnapshot(); }
  catch (error) { logLine(`取消失败：${error.message}`); }
}

// --- caregivers and the map -------------------------------------------------------------------------------------
async function loadPositions() {
  const page = await api("/v1/caregivers/positions");
  state.caregivers = page.items;
  $("c-duty").textContent = page.items.length;
  renderMap();
}

function renderMap() {
  const svg = $("map");
  const points = [
    ...state.caregivers.filter((c) => c.lat !== null).map((c) => [c.lat, c.lon]),
    ...state.orders.map((o) => [o.lat, o.lon]),
    ...state.alarms.filter((a) => a.lat != null).map((a) => [a.lat, a.lon]),
  ];
  svg.replaceChildren();
  if (!points.length) return;
  const lats = points.map((p) => p[0]); const lons = points.map((p) => p[1]);
  const pad = 0.005; const margin = 40;  // degrees around the points, then pixels for the markers themselves
  const [south, north] = [Math.min(...lats) - pad, Math.max(...lats) + pad];
  const [west, east] = [Math.min(...lons) - pad, Math.max(...lons) + pad];
  const kx = Math.cos(((south + north) / 2) * Math.PI / 180);
  const scale = Math.min((1000 - 2 * margin) / ((east - west) * kx), (700 - 2 * margin) / (north - south));
  const x = (lon) => (lon - west) * kx * scale + (1000 - (east - west) * kx * scale) / 2;
  const y = (lat) => (north - lat) * scale + (700 - (north - south) * scale) / 2;
  const ns = "http://www.w3.org/2000/svg";
  const add = (tag, attrs, title) => {
    const node = document.createElementNS(ns, tag);
    for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
    if (title) { const t = document.createElementNS(ns, "title"); t.textContent = title; node.append(t); }
    svg.append(node); return node;
  };
  // a scale bar (no map tiles on a closed network: distances are what the dispatcher needs)
  const metresPerPx = 111320 / scale;
  const nice = [100, 200, 500, 1000, 2000, 5000, 10000, 20000, 50000].find((m) => m / metresPerPx >= 80) || 100000;
  const barPx = nice / metresPerPx;
  add("path", { d: `M20 680 v-6 M20 677 h${barPx.toFixed(1)} M${(20 + barPx).toFixed(1)} 680 v-6`, class: "scale" });
  add("text", { x: 20 + barPx / 2, y: 668, "text-anchor": "middle", class: "scale-label" }).textContent =
    nice >= 1000 ? `${nice / 1000} 公里` : `${nice} 米`;
  for (const c of state.caregivers) {
    if (c.lat === null) continue;
    const color = c.stale ? "var(--stale)" : c.busy ? "var(--busy)" : "var(--ok)";
    add("circle", { cx: x(c.lon), cy: y(c.lat), r: 6, fill: color, stroke: "#fff", "stroke-width": 1.5, "data-caregiver": c.caregiver_id },
      `${c.name}${c.busy ? "（服务中）" : ""}${c.stale ? "（位置过期）" : ""}`);
  }
  for (const o of state.orders) {
    add("rect", { x: x(o.lon) - 6, y: y(o.lat) - 6, width: 12, height: 12, fill: o.priority === "urgent" ? "var(--critical)" : "var(--info)", "data-order": o.id },
      `${state.services[o.service_code] || o.service_code} · ${o.elder_name}`);
  }
  // alarms on top, the most severe last (drawn over the others); open ones solid, acknowledged ones dashed
  const drawn = state.alarms.filter((a) => a.lat != null).sort((a, b) => -alarmOrder(a, b));
  for (const a of drawn) {
    const open = a.status === "open";
    const radius = { critical: 16, warning: 12, info: 9 }[a.severity] || 10;
    const title = `${SEVERITY_ZH[a.severity] || ""} · ${ALARM_ZH[a.type] || a.type} · ${open ? "未确认" : "已确认"}`
      + ` · 已过 ${fmtAge(secondsSince(a.raised_at))}`;
    const group = add("g", {
      class: `alarm-marker sev-${a.severity}${open ? " open" : ""}`, "data-alarm": a.id, "data-severity": a.severity,
      "data-status": a.status, transform: `translate(${x(a.lon).toFixed(1)} ${y(a.lat).toFixed(1)})`,
    }, title);
    const part = (tag, attrs) => {
      const node = document.createElementNS(ns, tag);
      for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
      group.append(node); return node;
    };
    if (open && a.severity === "critical") part("circle", { class: "pulse", r: radius, fill: "none" });
    part("circle", { class: "ring", r: radius, "stroke-dasharray": open ? "none" : "4 3" });
    part("text", { class: "glyph", "text-anchor": "middle", dy: "0.35em" }).textContent = a.severity === "info" ? "i" : "!";
  }
}

// --- the live feed ----------------------------------------------------------------------------------------------
function logLine(text) {
  const log = $("log");
  log.prepend(el("li", {}, el("b", {}, fmtTime(new Date().toISOString())), " ", text));
  while (log.children.length > 200) log.lastChild.remove();
}

let reloadTimer = null;
function reloadSoon() {
  clearTimeout(reloadTimer);
  reloadTimer = setTimeout(() => { loadSnapshot().catch(() => {}); }, 250);
}

function connect() {
  const source = new EventSource("/v1/console/stream");  // reconnects by itself, sending Last-Event-ID
  source.onopen = () => {
    $("link").className = "link up"; $("link").textContent = "● 实时";
    loadSnapshot().catch(() => {}); loadAlarms().catch(() => {}); loadPositions().catch(() => {});
  };
  source.onerror = () => { $("link").className = "link down"; $("link").textContent = "● 重新连接中"; };
  const handle = (event) => {
    state.lastEventId = event.lastEventId;
    const data = JSON.parse(event.data);
    logLine(EVENT_ZH[event.type] || event.type);
    if (event.type.startsWith("devices.alarm.")) {
      applyAlarmEvent(event.type, data);
      loadAlarms().catch(() => {});
      countersSoon();
    } else reloadSoon();
    if (event.type === "orders.order.assigned" || event.type.startsWith("orders.visit.")) loadPositions().catch(() => {});
    document.body.dataset.lastEvent = `${event.type}:${data.aggregate_id}`;
  };
  for (const type of Object.keys(EVENT_ZH)) source.addEventListener(type, handle);
  source.onmessage = handle;
  return source;
}

function tick() {
  for (const node of document.querySelectorAll("[data-since]")) {
    const seconds = secondsSince(node.dataset.since);
    node.textContent = `已过 ${fmtAge(seconds)}`;
    node.classList.toggle("late", seconds >= 60);
  }
  for (const node of document.querySelectorAll("[data-until]")) {
    const left = Math.floor((Date.parse(node.dataset.until) - serverNow()) / 1000);
    node.textContent = left > 0 ? `邀约剩余 ${fmtAge(left)}` : "邀约已超时";
    node.classList.toggle("late", left < 30);
  }
}

// Open alarms and today's (Asia/Shanghai) median time to acknowledge, as the supervisors measure it.
function showCounters(counters) {
  $("c-alarms").textContent = counters.open_alarms;
  $("c-ack").textContent = counters.ack_p50_s == null ? "—" : fmtSeconds(counters.ack_p50_s);
  $("c-ack-detail").textContent = `今日告警 ${counters.alarms_today} · 已确认 ${counters.acknowledged_today}`;
}
function fmtSeconds(value) { return value < 100 ? value.toFixed(1) : String(Math.round(value)); }

async function loadCounters() {
  try { showCounters(await api("/v1/console/counters")); } catch (_) { /* shown again at the next refresh */ }
}

let countersTimer = null;
function countersSoon() {
  clearTimeout(countersTimer);
  countersTimer = setTimeout(() => { loadCounters(); }, 300);
}

async function start() {
  const services = await api("/v1/services");
  state.services = Object.fromEntries(services.items.map((s) => [s.code, s.name]));
  $("login").hidden = true; $("console").hidden = false;
  await Promise.all([loadSnapshot(), loadAlarms(), loadPositions()]);
  state.started = true;  // from here on a new critical alarm is news: sound and flash
  connect();
  setInterval(tick, 1000);
  setInterval(() => loadPositions().catch(() => {}), 10000);
  setInterval(loadCounters, 60000);
}

document.addEventListener("DOMContentLoaded", () => {
  $("login-form").addEventListener("submit", login);
  // sound needs a user gesture first: the login, or any click on a page that was already logged in
  $("login-form").addEventListener("submit", unlockAudio);
  document.addEventListener("pointerdown", unlockAudio, { once: true });
  start().catch(() => showLogin());
});
