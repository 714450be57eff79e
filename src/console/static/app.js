// 调度台: live alarms, orders needing action and caregivers on a map. No build step; plain ES2020.
"use strict";

const SEVERITY = { critical: 0, warning: 1, info: 2 };
const SEVERITY_ZH = { critical: "紧急", warning: "警告", info: "提示" };
const ALARM_ZH = {
  sos: "SOS 呼救", fall: "跌倒", heart_rate: "心率异常", spo2: "血氧异常", geofence: "离开安全区",
  geofence_exit: "离开安全区", low_battery: "电量低", device_offline: "设备离线",
};
const STATUS_ZH = { unfulfilled: "待人工派单", dispatching: "派单中", offered: "已发出邀约" };
const EVENT_ZH = {
  "orders.order.created": "新订单", "orders.order.offered": "已发出邀约", "orders.order.assigned": "护理员已接单",
  "orders.order.unfulfilled": "无人接单，待人工派单", "orders.order.cancelled": "订单已取消",
  "orders.order.en_route": "护理员出发", "orders.order.in_service": "开始服务", "orders.order.completed": "服务完成",
  "orders.visit.flagged": "服务异常", "dispatch.offer.declined": "护理员拒单", "dispatch.offer.expired": "邀约超时",
  "devices.alarm.raised": "新告警", "devices.alarm.acknowledged": "告警已确认", "devices.alarm.resolved": "告警已处置",
};

const state = { services: {}, alarms: [], orders: [], caregivers: [], seenAlarms: new Set(), lastEventId: null };
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

function secondsSince(iso) { return Math.max(0, Math.floor((Date.now() - Date.parse(iso)) / 1000)); }
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
function beep() {
  try {
    const audio = new AudioContext(); const tone = audio.createOscillator(); const gain = audio.createGain();
    tone.frequency.value = 880; gain.gain.value = 0.15; tone.connect(gain).connect(audio.destination);
    tone.start(); tone.stop(audio.currentTime + 0.6);
  } catch (_) { /* no audio device: the visual cue remains */ }
}

async function loadAlarms() {
  try {
    const page = await api("/v1/alarms?status=open&limit=200");
    const acknowledged = await api("/v1/alarms?status=acknowledged&limit=200");
    state.alarms = [...page.items, ...acknowledged.items];
  } catch (error) { if (error.status !== 404) throw error; state.alarms = []; }
  renderAlarms();
}

function renderAlarms() {
  const list = $("alarms"); list.replaceChildren();
  const alarms = [...state.alarms].sort((a, b) =>
    (a.status === "open" ? 0 : 1) - (b.status === "open" ? 0 : 1) ||
    SEVERITY[a.severity] - SEVERITY[b.severity] || Date.parse(a.raised_at) - Date.parse(b.raised_at));
  let fresh = false;
  for (const alarm of alarms) {
    const isNew = !state.seenAlarms.has(alarm.id);
    state.seenAlarms.add(alarm.id);
    if (isNew && alarm.severity === "critical" && alarm.status === "open") fresh = true;
    const age = el("span", { class: "age", "data-since": alarm.raised_at }, fmtAge(secondsSince(alarm.raised_at)));
    const actions = el("div", { class: "actions" });
    if (alarm.status === "open") {
      actions.append(el("button", { class: "danger", "data-action": "ack", onclick: () => ackAlarm(alarm) }, "确认"));
    }
    actions.append(el("button", { "data-action": "resolve", onclick: () => resolveAlarm(alarm) }, "处置"));
    list.append(el("li", {
      class: `sev-${alarm.severity}${isNew && alarm.severity === "critical" ? " new-critical" : ""}`,
      "data-alarm": alarm.id, "data-type": alarm.type,
    },
    el("div", { class: "row" }, el("b", {}, `${SEVERITY_ZH[alarm.severity] || ""} · ${ALARM_ZH[alarm.type] || alarm.type}`), age),
    el("div", { class: "meta" }, `${alarm.status === "open" ? "未确认" : "已确认"} · 设备 ${alarm.device_id || "—"} · ${fmtTime(alarm.raised_at)}`
      + (alarm.count > 1 ? ` · 重复 ${alarm.count} 次` : "")),
    actions));
  }
  $("alarms-empty").hidden = alarms.length > 0;
  $("c-alarms").textContent = alarms.filter((a) => a.status === "open").length;
  if (fresh) beep();
  renderMap();
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
  const snapshot = await api("/v1/console/snapshot");
  state.orders = snapshot.orders;
  $("c-unfulfilled").textContent = snapshot.counters.unfulfilled;
  $("c-offered").textContent = snapshot.counters.offered;
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
  const pad = 0.01;
  const [south, north] = [Math.min(...lats) - pad, Math.max(...lats) + pad];
  const [west, east] = [Math.min(...lons) - pad, Math.max(...lons) + pad];
  const kx = Math.cos(((south + north) / 2) * Math.PI / 180);
  const scale = Math.min(1000 / ((east - west) * kx), 700 / (north - south));
  const x = (lon) => (lon - west) * kx * scale + (1000 - (east - west) * kx * scale) / 2;
  const y = (lat) => (north - lat) * scale + (700 - (north - south) * scale) / 2;
  const ns = "http://www.w3.org/2000/svg";
  const add = (tag, attrs, title) => {
    const node = document.createElementNS(ns, tag);
    for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
    if (title) { const t = document.createElementNS(ns, "title"); t.textContent = title; node.append(t); }
    svg.append(node); return node;
  };
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
  for (const a of state.alarms) {
    if (a.lat == null) continue;
    add("circle", { cx: x(a.lon), cy: y(a.lat), r: 14, fill: "none", stroke: "var(--critical)", "stroke-width": 4, "data-alarm": a.id },
      ALARM_ZH[a.type] || a.type);
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
    if (event.type.startsWith("devices.alarm.")) loadAlarms().catch(() => {});
    else reloadSoon();
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
    const left = Math.floor((Date.parse(node.dataset.until) - Date.now()) / 1000);
    node.textContent = left > 0 ? `邀约剩余 ${fmtAge(left)}` : "邀约已超时";
    node.classList.toggle("late", left < 30);
  }
}

async function loadCounters() {
  try {
    const today = new Date(); today.setHours(0, 0, 0, 0);
    const figures = await api(`/v1/audit/alarms/response-times?from=${encodeURIComponent(today.toISOString())}`);
    $("c-ack").textContent = figures.p50_s ?? figures.p50 ?? "—";
  } catch (_) { $("c-ack").textContent = "—"; }
}

async function start() {
  const services = await api("/v1/services");
  state.services = Object.fromEntries(services.map((s) => [s.code, s.name]));
  $("login").hidden = true; $("console").hidden = false;
  await Promise.all([loadSnapshot(), loadAlarms(), loadPositions()]);
  loadCounters();
  connect();
  setInterval(tick, 1000);
  setInterval(() => loadPositions().catch(() => {}), 10000);
  setInterval(loadCounters, 60000);
}

document.addEventListener("DOMContentLoaded", () => {
  $("login-form").addEventListener("submit", login);
  start().catch(() => showLogin());
});
