// Berth's web console: confirmations for actions, and a saga's timeline kept live from its
// server-sent events. No dependencies; text is always set as text, never as HTML.
"use strict";

document.addEventListener("submit", (e) => {
  const message = e.target.dataset && e.target.dataset.confirm;
  if (message && !window.confirm(message)) e.preventDefault();
});

const CLASSES = {
  ok: ["completed", "compensated", "online", "ok", "accepted", "reverted"],
  busy: ["running", "pending", "compensating", "retrying"],
  bad: ["failed", "compensation_failed", "offline", "bad"],
  warn: ["paused", "cancelled", "abandoned", "skipped"],
};

function badge(status) {
  const span = document.createElement("span");
  const cls = Object.keys(CLASSES).find((k) => CLASSES[k].includes(status)) || "plain";
  span.className = "status " + cls;
  span.dataset.status = status;
  span.textContent = status.replace(/_/g, " ");
  return span;
}

function bytes(n) {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return (i === 0 ? n : n.toFixed(1)) + " " + units[i];
}

function duration(ms) {
  if (ms < 1000) return Math.max(0, Math.round(ms)) + "ms";
  if (ms < 60000) return (ms / 1000).toFixed(1) + "s";
  const m = Math.floor(ms / 60000);
  if (ms < 3600000) return m + "m" + String(Math.floor((ms % 60000) / 1000)).padStart(2, "0") + "s";
  return Math.floor(ms / 3600000) + "h" + String(m % 60).padStart(2, "0") + "m";
}

const STEP_STATUS = {
  step_started: "running",
  step_retrying: "running",
  step_succeeded: "completed",
  step_failed: "failed",
  step_cancelled: "cancelled",
  compensation_step_started: "compensating",
  step_compensated: "compensated",
};

function follow(root) {
  const id = root.dataset.saga;
  const events = document.getElementById("events");
  const last = {};
  const startedAt = {};
  const source = new EventSource("/sagas/" + encodeURIComponent(id) + "/events");
  source.addEventListener("saga", (msg) => {
    const e = JSON.parse(msg.data);
    const li = document.createElement("li");
    const at = new Date(e.at_ms || Date.now());
    li.textContent = at.toISOString().slice(11, 19) + "  " + e.kind + (e.step >= 0 ? " · step " + e.step : "") + (e.message ? " · " + e.message : "");
    if (e.kind !== "step_progress") events.appendChild(li);
    const step = e.step >= 0 ? document.getElementById("step-" + e.step) : null;
    if (step && STEP_STATUS[e.kind]) {
      const status = STEP_STATUS[e.kind];
      step.dataset.status = status;
      step.querySelector(".st").replaceChildren(badge(status));
      if (e.kind === "step_started") {
        // Each attempt starts the clock again: a duration is the latest attempt's.
        startedAt[e.step] = e.at_ms;
        const n = (e.message || "").replace(/^attempt /, "");
        if (/^[0-9]+$/.test(n)) step.querySelector(".attempts").textContent = n + (n === "1" ? " attempt" : " attempts");
        step.querySelector(".took").textContent = "";
      } else if (startedAt[e.step] && status !== "running" && status !== "compensating") {
        step.querySelector(".took").textContent = duration(e.at_ms - startedAt[e.step]);
      }
      if (status !== "running") step.querySelector(".progress").hidden = status !== "completed" || !step.querySelector("progress").value;
    }
    if (step && e.kind === "step_progress" && e.progress && e.progress.bytes_total > 0) {
      const p = e.progress;
      const box = step.querySelector(".progress");
      const bar = box.querySelector("progress");
      box.hidden = false;
      bar.max = p.bytes_total;
      bar.value = p.bytes_done;
      let text = Math.floor((100 * p.bytes_done) / p.bytes_total) + "% · " + bytes(p.bytes_done) + " of " + bytes(p.bytes_total);
      const prev = last[e.step];
      if (prev && e.at_ms > prev.at) {
        const rate = ((p.bytes_done - prev.done) * 1000) / (e.at_ms - prev.at);
        if (rate > 0) {
          text += " · " + bytes(rate) + "/s · ETA " + Math.ceil((p.bytes_total - p.bytes_done) / rate) + "s";
        }
      }
      if (p.phase) text += " · " + p.phase;
      last[e.step] = { at: e.at_ms, done: p.bytes_done };
      box.querySelector(".ptext").textContent = text;
    }
    if (e.kind === "watch_end" || e.final_status) {
      const status = e.final_status || "ended";
      document.getElementById("saga-status").replaceChildren(badge(status));
      root.dataset.live = "no";
      root.dataset.ended = status;
      // The actions were for a saga at work; the page says what follows on a reload.
      root.querySelectorAll(".actions").forEach((a) => a.remove());
      source.close();
    }
  });
}

document.addEventListener("DOMContentLoaded", () => {
  const root = document.getElementById("saga");
  if (root) follow(root);
});
