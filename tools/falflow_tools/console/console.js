// The falflow console: reads /api/* (same origin) and draws the page; no libraries, no CDN.
"use strict";

const FINAL = new Set(["COMPLETED", "FAILED", "REJECTED", "CANCELLED"]);
const SVG = "http://www.w3.org/2000/svg";
let selected = null;

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) node.setAttribute(name, value);
  for (const child of children) node.append(child);
  return node;
}

async function getJSON(path) {
  const reply = await fetch(path, { headers: { accept: "application/json" } });
  const body = await reply.json();
  if (!reply.ok) throw new Error(body.error || reply.statusText);
  return body;
}

function money(amount, currency) {
  if (amount === null || amount === undefined) return "-";
  const symbol = !currency || currency === "USD" ? "$" : currency + " ";
  return symbol + Number(amount.toFixed(4));
}

function stateCell(state) {
  const kind = FINAL.has(state) ? state : "waiting";
  return el("td", { class: `state state-${kind}` }, state);
}

function jobQuery() {
  const query = new URLSearchParams();
  for (const name of ["state", "model", "since"]) {
    const value = document.getElementById(`filter-${name}`).value;
    if (value) query.set(name, value);
  }
  return query;
}

async function loadJobs() {
  const query = jobQuery();
  const { jobs } = await getJSON(`/api/jobs?${query}`);
  const body = document.querySelector("#jobs tbody");
  body.replaceChildren(
    ...jobs.map((job) => {
      const row = el(
        "tr",
        { class: "job", "data-job-id": job.job_id, "data-state": job.state, "data-model": job.model || "" },
        el("td", { class: "id" }, job.job_id),
        stateCell(job.state),
        el("td", {}, job.model || "-"),
        el("td", {}, job.state_changed_at.slice(0, 19).replace("T", " ")),
        el("td", {}, `${job.duration_s.toFixed(1)}s`),
        el("td", {}, money(job.cost, job.currency)),
        el("td", {}, job.error ? `error: ${job.error}` : String(job.outputs)),
      );
      if (job.job_id === selected) row.classList.add("selected");
      row.addEventListener("click", () => showJob(job.job_id));
      return row;
    }),
  );
  document.getElementById("job-count").textContent = `${jobs.length} job(s)`;
  document.getElementById("jobs").dataset.query = query.toString(); // what the rows show
  const models = document.getElementById("filter-model");
  const known = new Set([...models.options].map((option) => option.value));
  for (const job of jobs) {
    if (job.model && !known.has(job.model)) {
      known.add(job.model);
      models.append(el("option", { value: job.model }, job.model));
    }
  }
}

function outputElement(output) {
  const caption = el("figcaption", {}, el("a", { href: output.url, download: output.name }, output.name));
  let media;
  if (output.kind === "image") media = el("img", { src: output.url, alt: output.name });
  else if (output.kind === "video") media = el("video", { src: output.url, controls: "", preload: "metadata" });
  else if (output.kind === "audio") media = el("audio", { src: output.url, controls: "", preload: "metadata" });
  else return el("figure", { class: "output output-file" }, caption);
  return el("figure", { class: `output output-${output.kind}` }, media, caption);
}

async function showJob(jobId) {
  selected = jobId;
  for (const row of document.querySelectorAll("tr.job")) {
    row.classList.toggle("selected", row.dataset.jobId === jobId);
  }
  const detail = await getJSON(`/api/jobs/${encodeURIComponent(jobId)}`);
  document.getElementById("detail-id").textContent = jobId;
  const outputs = detail.outputs.map(outputElement);
  if (detail.result_url) outputs.push(el("figure", { class: "output output-file" },
    el("a", { href: detail.result_url }, "result.json")));
  document.getElementById("detail-outputs").replaceChildren(...outputs);
  document.getElementById("detail-record").textContent = JSON.stringify(detail.job, null, 2);
  document.getElementById("job-detail").hidden = false;
}

// A bar chart drawn into an <svg>: one <rect class="bar"> per value, labelled.
function barChart(svg, points, currency) {
  const width = 520, height = 220, left = 8, bottom = 40, top = 18;
  const max = Math.max(...points.map((p) => p.amount), 0);
  const nodes = [];
  if (!points.length || max <= 0) {
    const note = document.createElementNS(SVG, "text");
    note.setAttribute("x", 12); note.setAttribute("y", 30); note.setAttribute("class", "axis-label");
    note.textContent = "no costs yet (the collect function prices finished jobs)";
    svg.replaceChildren(note);
    return;
  }
  const slot = (width - left * 2) / points.length;
  points.forEach((point, i) => {
    const barHeight = Math.max(((height - bottom - top) * point.amount) / max, 1);
    const x = left + i * slot + slot * 0.15, y = height - bottom - barHeight;
    const rect = document.createElementNS(SVG, "rect");
    Object.entries({ x, y, width: slot * 0.7, height: barHeight, class: "bar", "data-label": point.label,
      "data-amount": point.amount }).forEach(([k, v]) => rect.setAttribute(k, v));
    const title = document.createElementNS(SVG, "title");
    title.textContent = `${point.label}: ${money(point.amount, currency)}`;
    rect.append(title);
    const value = document.createElementNS(SVG, "text");
    Object.entries({ x: x, y: y - 4, class: "bar-label" }).forEach(([k, v]) => value.setAttribute(k, v));
    value.textContent = money(point.amount, currency);
    const label = document.createElementNS(SVG, "text");
    Object.entries({ x: x, y: height - bottom + 14, class: "axis-label" }).forEach(([k, v]) => label.setAttribute(k, v));
    label.textContent = point.label.length > 22 ? "…" + point.label.slice(-21) : point.label;
    nodes.push(rect, value, label);
  });
  svg.replaceChildren(...nodes);
}

async function loadCosts() {
  const since = document.getElementById("filter-since").value || "3650d";
  const costs = await getJSON(`/api/costs?since=${encodeURIComponent(since)}`);
  barChart(document.getElementById("cost-by-day"), costs.per_day.map((d) => ({ label: d.day, amount: d.amount })), costs.currency);
  barChart(document.getElementById("cost-by-model"), costs.per_model.map((m) => ({ label: m.model, amount: m.amount })), costs.currency);
  document.getElementById("costs-note").textContent =
    costs.uncosted_jobs ? `(${costs.uncosted_jobs} finished job(s) not priced yet)` : "";
}

async function loadDeadLetters() {
  const { messages } = await getJSON("/api/dlq");
  document.getElementById("dlq-empty").hidden = messages.length > 0;
  document.querySelector("#dlq tbody").replaceChildren(
    ...messages.map((m) => el("tr", { class: "dead-letter" },
      el("td", {}, m.queue), el("td", { class: "id" }, m.message_id), el("td", {}, m.sent_at || "-"),
      el("td", {}, String(m.receive_count)), el("td", {}, m.reason || "-"))),
  );
}

async function refresh() {
  await Promise.all([loadJobs(), loadCosts(), loadDeadLetters()]);
  document.body.dataset.loaded = "true";
}

async function start() {
  const about = await getJSON("/api/about");
  document.getElementById("target").textContent = about.target;
  const states = document.getElementById("filter-state");
  for (const state of about.states) states.append(el("option", { value: state }, state));
  for (const name of ["state", "model", "since"]) {
    document.getElementById(`filter-${name}`).addEventListener("change", refresh);
  }
  await refresh();
  setInterval(refresh, 5000);
}

start();
