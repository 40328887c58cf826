// The node's dashboard: every view is drawn from the JSON API the page is served with.
// Text goes in through textContent only; the charts are inline SVG built here.
"use strict";

const SVG_NS = "http://www.w3.org/2000/svg";
const COLOURS = ["#2d6cdf", "#e67e22", "#27ae60", "#8e44ad", "#c0392b", "#16a085", "#7f8c8d", "#d35400"];

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value !== null && value !== undefined) node.setAttribute(key, value);
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

function svgEl(tag, attrs) {
  const node = document.createElementNS(SVG_NS, tag);
  for (const [key, value] of Object.entries(attrs || {})) node.setAttribute(key, value);
  return node;
}

class ApiError extends Error {
  constructor(status, detail) {
    super(`${status}: ${detail}`);
    this.status = status;
  }
}

async function api(path, options) {
  const reply = await fetch(path, options);
  const text = await reply.text();
  let body = null;
  try { body = text ? JSON.parse(text) : null; } catch (_) { body = text; }
  if (!reply.ok) {
    const detail = body && body.detail !== undefined ? body.detail : body;
    throw new ApiError(reply.status, typeof detail === "string" ? detail : JSON.stringify(detail));
  }
  return body;
}

function link(href, text) { return el("a", { href }, text); }
function fmt(value, digits = 4) {
  if (value === null || value === undefined) return "–";
  return typeof value === "number" && !Number.isInteger(value) ? value.toFixed(digits) : String(value);
}
function when(iso) { return iso ? iso.replace("T", " ").slice(0, 19) : "–"; }
function section(title, ...children) { return el("section", {}, el("h2", {}, title), ...children); }
function failure(err) { return el("p", { class: "bad" }, String(err.message || err)); }

// A table: `columns` are [header, row => cell]; each row carries data-id.
function table(id, columns, rows, idOf) {
  const head = el("tr", {}, columns.map(([name]) => el("th", {}, name)));
  const body = rows.map((row) =>
    el("tr", { "data-id": idOf(row) }, columns.map(([, cell]) => el("td", {}, cell(row)))));
  return el("table", { id }, el("thead", {}, head), el("tbody", {}, body));
}

// Loss curves: one path per run, `[step, loss]` points, non-finite losses left out.
function lossChart(series, width = 640, height = 260) {
  const pad = { left: 48, right: 12, top: 10, bottom: 26 };
  const svg = svgEl("svg", { class: "loss-curves", width, height, viewBox: `0 0 ${width} ${height}` });
  const points = series.map((s) => s.curve.filter(([, y]) => Number.isFinite(y)));
  const all = points.flat();
  if (!all.length) {
    const note = svgEl("text", { x: 12, y: 24 });
    note.textContent = "no loss curve recorded";
    svg.append(note);
    return svg;
  }
  const xs = all.map(([x]) => x), ys = all.map(([, y]) => y);
  const [x0, x1] = [Math.min(...xs), Math.max(...xs)];
  const [y0, y1] = [Math.min(...ys), Math.max(...ys)];
  const sx = (x) => pad.left + ((x - x0) / (x1 - x0 || 1)) * (width - pad.left - pad.right);
  const sy = (y) => height - pad.bottom - ((y - y0) / (y1 - y0 || 1)) * (height - pad.top - pad.bottom);
  const axis = svgEl("g", { class: "axis" });
  for (const [x, y, label, anchor] of [
    [pad.left - 4, sy(y1) + 4, fmt(y1, 3), "end"], [pad.left - 4, sy(y0), fmt(y0, 3), "end"],
    [sx(x0), height - 8, `step ${x0}`, "start"], [sx(x1), height - 8, `step ${x1}`, "end"],
  ]) {
    const text = svgEl("text", { x, y, "text-anchor": anchor });
    text.textContent = label;
    axis.append(text);
  }
  axis.append(svgEl("line", { x1: pad.left, y1: height - pad.bottom, x2: width - pad.right, y2: height - pad.bottom }));
  svg.append(axis);
  series.forEach((s, i) => {
    if (!points[i].length) return;
    const d = points[i].map(([x, y], j) => `${j ? "L" : "M"}${sx(x).toFixed(1)},${sy(y).toFixed(1)}`).join(" ");
    const path = svgEl("path", {
      class: "curve", d, stroke: COLOURS[i % COLOURS.length],
      "data-experiment": s.id, "data-points": points[i].length,
    });
    const title = svgEl("title", {});
    title.textContent = s.label;
    path.append(title);
    svg.append(path);
  });
  return svg;
}

// The lineage: a column per generation, an edge from each parent to its child.
function lineageGraph(candidates) {
  const byId = new Map(candidates.map((c) => [c.id, c]));
  const depth = new Map();
  const depthOf = (c, seen = new Set()) => {
    if (depth.has(c.id)) return depth.get(c.id);
    seen.add(c.id);
    const parents = c.parent_ids.filter((p) => byId.has(p) && !seen.has(p));
    const d = parents.length ? 1 + Math.max(...parents.map((p) => depthOf(byId.get(p), seen))) : 0;
    depth.set(c.id, d);
    return d;
  };
  candidates.forEach((c) => depthOf(c));
  const columns = [];
  for (const c of candidates) (columns[depth.get(c.id)] ||= []).push(c);
  const colWidth = 230, rowHeight = 34;
  const width = Math.max(300, columns.length * colWidth);
  const height = Math.max(60, Math.max(...columns.map((col) => col.length)) * rowHeight + 20);
  const svg = svgEl("svg", { id: "lineage", width, height, viewBox: `0 0 ${width} ${height}` });
  const at = new Map();
  columns.forEach((col, i) => col.forEach((c, j) => at.set(c.id, [20 + i * colWidth, 24 + j * rowHeight])));
  for (const c of candidates) {
    for (const parent of c.parent_ids) {
      if (!at.has(parent)) continue;
      const [x1, y1] = at.get(parent), [x2, y2] = at.get(c.id);
      svg.append(svgEl("line", { class: "edge", x1, y1, x2, y2, "data-from": parent, "data-to": c.id }));
    }
  }
  for (const c of candidates) {
    const [x, y] = at.get(c.id);
    const g = svgEl("g", { class: `node ${c.origin}`, "data-id": c.id });
    g.append(svgEl("circle", { cx: x, cy: y, r: 6 }));
    const text = svgEl("text", { x: x + 10, y: y + 4 });
    text.textContent = c.name.length > 30 ? c.name.slice(0, 29) + "…" : c.name;
    const title = svgEl("title", {});
    title.textContent = `${c.id} ${c.name}`;
    g.append(text, title);
    svg.append(g);
  }
  return svg;
}

async function campaignsView() {
  const camps = await api("/campaigns");
  return [el("h1", {}, "Campaigns"), section("All campaigns", table("campaigns", [
    ["id", (c) => link(`#/campaign/${c.id}`, c.id)],
    ["name", (c) => c.name],
    ["status", (c) => c.status],
    ["config", (c) => el("code", {}, c.config_hash.slice(0, 20) + "…")],
    ["created", (c) => when(c.created_at)],
  ], camps, (c) => c.id))];
}

async function campaignView(id) {
  const [camp, board, exps, cands] = await Promise.all([
    api(`/campaigns/${id}`), api(`/campaigns/${id}/leaderboard`),
    api(`/campaigns/${id}/experiments`), api(`/campaigns/${id}/candidates`),
  ]);
  const counts = Object.entries(camp.experiments).filter(([, n]) => n).map(([s, n]) => `${n} ${s}`);
  const curves = exps.filter((e) => e.train && e.train.loss_curve && e.train.loss_curve.length)
    .map((e) => ({ id: e.id, label: `${e.id} (${e.candidate_id}, seed ${e.seed})`, curve: e.train.loss_curve }));
  const names = new Map(cands.map((c) => [c.id, c.name]));
  let directives = el("p", { class: "muted" }, "none applied");
  try {
    const gov = await api(`/gov/campaigns/${id}`);
    if (gov.directives.length) {
      directives = table("directives", [
        ["applied", (d) => when(d.applied_at)], ["source", (d) => d.source], ["epoch", (d) => d.epoch],
        ["directive", (d) => d.kind], ["ref", (d) => el("code", {}, d.ref)],
        ["acknowledged", (d) => when(d.acknowledged_at)],
      ], gov.directives, (d) => String(d.id));
    }
  } catch (err) { directives = failure(err); }
  return [
    el("h1", {}, `${camp.name} `, el("span", { class: "muted mono" }, camp.id)),
    el("p", {}, `status ${camp.status}; experiments: ${counts.join(", ") || "none"}`),
    section("Leaderboard", table("leaderboard", [
      ["#", (r) => board.indexOf(r) + 1],
      ["candidate", (r) => el("code", {}, r.candidate_id)],
      ["name", (r) => r.name], ["origin", (r) => r.origin], ["status", (r) => r.status],
      ["fitness", (r) => fmt(r.fitness)], ["seeds", (r) => r.seeds],
      ["experiment", (r) => r.experiment_id ? link(`#/experiment/${r.experiment_id}`, r.experiment_id) : "–"],
    ], board, (r) => r.candidate_id)),
    el("div", { class: "grid" },
      section("Lineage", lineageGraph(cands)),
      section("Loss curves", lossChart(curves))),
    section("Experiments", table("experiments", [
      ["id", (e) => link(`#/experiment/${e.id}`, e.id)],
      ["candidate", (e) => names.get(e.candidate_id) || e.candidate_id],
      ["role", (e) => e.role], ["seed", (e) => e.seed], ["status", (e) => e.status],
      ["failure", (e) => e.failure_class || ""], ["fitness", (e) => fmt(e.fitness)],
      ["finished", (e) => when(e.finished_at)],
    ], exps, (e) => e.id)),
    section("Directive timeline", directives),
  ];
}

function hex(bytes) { return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join(""); }
function unb64(text) { return Uint8Array.from(atob(text), (c) => c.charCodeAt(0)); }
async function sha256(...parts) {
  const joined = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) { joined.set(p, at); at += p.length; }
  return new Uint8Array(await crypto.subtle.digest("SHA-256", joined));
}

// RFC 9162 section 2.1.3.2: the root an inclusion proof leads to from the entry's leaf.
async function proofRoot(envelope, index, size, proof) {
  let r = await sha256(new Uint8Array([0]), envelope);
  let fn = index, sn = size - 1;
  for (const p of proof) {
    if (sn === 0) return null;
    if (fn % 2 === 1 || fn === sn) {
      r = await sha256(new Uint8Array([1]), p, r);
      if (fn % 2 === 0) while (fn % 2 === 0 && fn !== 0) { fn = Math.floor(fn / 2); sn = Math.floor(sn / 2); }
    } else {
      r = await sha256(new Uint8Array([1]), r, p);
    }
    fn = Math.floor(fn / 2); sn = Math.floor(sn / 2);
  }
  return sn === 0 ? r : null;
}

async function recordSection(id) {
  let rec;
  try { rec = await api(`/experiments/${id}/record`); } catch (err) { return section("Log record", failure(err)); }
  let check = el("span", { class: "muted" }, "no checkpoint covers this entry yet");
  if (rec.proof !== null) {
    if (!window.crypto || !crypto.subtle) {
      check = el("span", { class: "muted" }, "not checked here: the browser hashes only in a secure context");
    } else {
      const root = await proofRoot(unb64(rec.envelope), rec.index, rec.tree_size, rec.proof.map(unb64));
      const ok = root !== null && hex(root) === hex(unb64(rec.root_hash));
      check = el("span", { id: "proof-check", class: ok ? "ok" : "bad" },
        ok ? `verified in this browser against the root of size ${rec.tree_size}` : "the proof does not lead to the checkpoint's root");
    }
  }
  return section("Log record and inclusion proof",
    el("p", {}, `entry ${rec.index} (${rec.kind}); checkpoint size ${rec.tree_size ?? "–"}, root `,
      el("code", {}, rec.root_hash ? hex(unb64(rec.root_hash)) : "–"), "; ", check),
    el("h2", {}, "Inclusion proof"),
    el("ol", { id: "proof" }, (rec.proof || []).map((h) => el("li", {}, el("code", {}, hex(unb64(h)))))),
    el("h2", {}, "Statement"),
    el("pre", { id: "record" }, JSON.stringify(rec.statement, null, 2)));
}

async function experimentView(id) {
  const exp = await api(`/experiments/${id}`);
  const curve = exp.train && exp.train.loss_curve ? exp.train.loss_curve : [];
  const metrics = Object.entries(exp.metrics || {});
  return [
    el("h1", {}, `${exp.candidate ? exp.candidate.name : exp.candidate_id} `, el("span", { class: "muted mono" }, exp.id)),
    el("p", {}, `campaign `, link(`#/campaign/${exp.campaign_id}`, exp.campaign_id),
      `; ${exp.role}, seed ${exp.seed}, ${exp.status}${exp.failure_class ? ` (${exp.failure_class})` : ""}; fitness ${fmt(exp.fitness)}`),
    el("div", { class: "grid" },
      section("Loss curve", lossChart([{ id: exp.id, label: exp.id, curve }])),
      section("Metrics", table("metrics", [["metric", ([k]) => k], ["value", ([, v]) => fmt(v)]], metrics, ([k]) => k))),
    await recordSection(id),
    section("Analysis", el("pre", {}, exp.analysis || "")),
    section("Code", el("pre", {}, exp.code)),
  ];
}

// A ballot: its typed data from the node, signed in the voter's wallet when the browser
// has one, else copied out and its signature pasted back.
function ballotForm(proposal) {
  const out = el("div", { class: "ballot-out" });
  const form = el("form", { class: "ballot", "data-proposal": proposal.proposal_id },
    el("input", { name: "voter", placeholder: "voter address 0x…", required: "" }),
    el("select", { name: "support" }, el("option", { value: "1" }, "for"),
      el("option", { value: "0" }, "against"), el("option", { value: "2" }, "abstain")),
    el("button", { type: "submit" }, window.ethereum ? "Sign in wallet" : "Show typed data"));
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    out.replaceChildren();
    const voter = form.voter.value.trim(), support = form.support.value;
    try {
      const typed = await api(`/gov/proposals/${proposal.proposal_id}/ballot?voter=${encodeURIComponent(voter)}&support=${support}`);
      out.append(el("pre", { class: "typed-data" }, JSON.stringify(typed, null, 2)));
      const send = async (signature) => {
        const body = {
          proposal_id: typed.message.proposalId, support: Number(support), voter,
          nonce: typed.message.nonce, signature, chain_id: Number(typed.domain.chainId),
          verifying_contract: typed.domain.verifyingContract,
        };
        // uint256 values go as decimal strings (the API reads them as integers): a JSON
        // number above 2**53 would lose digits in the browser.
        const relayed = await api("/gov/ballots", { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) });
        out.append(el("p", { class: "ok" }, `relayed: ${relayed.tx}`));
      };
      if (window.ethereum) {
        await window.ethereum.request({ method: "eth_requestAccounts" });
        const signature = await window.ethereum.request({ method: "eth_signTypedData_v4", params: [voter, JSON.stringify(typed)] });
        await send(signature);
      } else {
        const pasted = el("input", { name: "signature", placeholder: "signature 0x… from your wallet" });
        const button = el("button", { type: "button" }, "Relay ballot");
        button.addEventListener("click", () => send(pasted.value.trim()).catch((err) => out.append(failure(err))));
        out.append(el("p", { class: "muted" }, "No browser wallet: sign this typed data (eth_signTypedData_v4) in your wallet, then paste the signature."), pasted, button);
      }
    } catch (err) { out.append(failure(err)); }
  });
  return el("div", {}, form, out);
}

async function governanceView() {
  const parts = [el("h1", {}, "Governance")];
  try {
    const [domain, proposals] = await Promise.all([api("/gov/domain"), api("/gov/proposals")]);
    parts.push(el("p", {}, `Governor `, el("code", {}, domain.verifyingContract), ` on chain ${domain.chainId}`));
    parts.push(section("Proposals", table("proposals", [
      ["id", (p) => el("code", { title: p.proposal_id }, p.proposal_id.slice(0, 12) + "…")],
      ["state", (p) => p.state], ["for", (p) => p.votes.for], ["against", (p) => p.votes.against],
      ["abstain", (p) => p.votes.abstain], ["quorum", (p) => p.quorum ?? "–"], ["deadline", (p) => p.deadline],
      ["calls", (p) => p.calls.map((c) => c.function ? `${c.function}(${Object.values(c.args).join(", ")})` : c.error).join("; ")],
    ], proposals, (p) => p.proposal_id)));
    const open = proposals.filter((p) => p.state === "active");
    parts.push(section("Sign a ballot",
      open.length ? open.map((p) => el("div", {}, el("p", {}, el("code", {}, p.proposal_id), ` ${p.description}`), ballotForm(p)))
        : el("p", { class: "muted" }, "no proposal is open for votes")));
  } catch (err) {
    parts.push(section("Proposals", err.status === 503 ? el("p", { class: "muted" }, String(err.message)) : failure(err)));
  }
  const camps = await api("/gov/campaigns");
  const timeline = camps.flatMap((c) => c.directives.map((d) => ({ ...d, name: c.name })))
    .sort((a, b) => a.applied_at.localeCompare(b.applied_at));
  parts.push(section("Directive timeline", timeline.length ? table("timeline", [
    ["applied", (d) => when(d.applied_at)], ["campaign", (d) => d.campaign_id], ["source", (d) => d.source],
    ["epoch", (d) => d.epoch], ["directive", (d) => d.kind], ["acknowledged", (d) => when(d.acknowledged_at)],
  ], timeline, (d) => String(d.id)) : el("p", { class: "muted" }, "no directive applied")));
  return parts;
}

async function nodeView() {
  const parts = [el("h1", {}, "Log, anchors and attestation")];
  try {
    const report = await api("/log/audit");
    const verdict = report.attestation;
    parts.push(section("Audit of this node's log",
      el("p", { id: "audit-result", class: report.ok ? "ok" : "bad" }, report.ok ? "PASS" : "FAIL"),
      report.log ? el("p", {}, `size ${report.log.tree_size}, ${report.log.checkpoints} checkpoints, key `, el("code", {}, report.log.key_fingerprint)) : null,
      table("audit-steps", [["step", (s) => s.number], ["check", (s) => s.name],
        ["result", (s) => el("span", { class: s.ok ? (s.warning ? "" : "ok") : "bad" }, s.ok ? (s.warning ? "warn" : "ok") : "FAIL")],
        ["detail", (s) => s.detail]], report.steps, (s) => String(s.number)),
      el("h2", {}, "Attestation verdict"),
      el("p", { id: "attestation" }, verdict ? `${verdict.status}${verdict.flagged ? " (flagged)" : ""}: ${verdict.detail}` : "not assessed")));
  } catch (err) { parts.push(section("Audit of this node's log", failure(err))); }
  const anchors = await api("/anchors");
  for (const [target, rows] of Object.entries(anchors)) {
    parts.push(section(`Anchors on ${target}`, rows.length ? table(`anchors-${target}`, [
      ["tree size", (a) => a.tree_size], ["status", (a) => a.status],
      ["root", (a) => el("code", {}, a.root.slice(0, 16) + "…")],
      ["transaction", (a) => a.tx_hash ? el("code", {}, a.tx_hash.slice(0, 18) + "…") : (a.anchor_count ?? "–")],
      ["block", (a) => a.block_number ?? "–"], ["confirmed", (a) => when(a.confirmed_at)],
      ["last error", (a) => a.last_error || ""],
    ], rows, (a) => `${a.log_id}:${a.tree_size}`) : el("p", { class: "muted" }, "nothing anchored here")));
  }
  return parts;
}

async function networkView() {
  const rows = await api("/network/leaderboard");
  const by = (reps) => reps.filter((r) => r.outcome === "replicated")
    .map((r) => `${r.node_id.slice(0, 19)}… (${r.peer || "this node"}, ${fmt(r.fitness)})`).join("; ");
  return [el("h1", {}, "Network"), section("Replicated discoveries",
    el("p", { class: "muted" }, "Ranked only once a node with another key re-ran them within the campaign's spread."),
    rows.length ? table("network-leaderboard", [
      ["name", (d) => d.name],
      ["record", (d) => el("code", {}, d.experiment_id)],
      ["campaign", (d) => link(`#/campaign/${d.campaign_id}`, d.campaign_id)],
      ["found by", (d) => d.discovered_by],
      ["fitness", (d) => fmt(d.fitness)],
      ["replicated by", (d) => by(d.replications)],
    ], rows, (d) => d.experiment_id) : el("p", { id: "network-empty", class: "muted" }, "no replicated discoveries yet"))];
}

async function render() {
  const view = document.getElementById("view");
  const [, page, id] = location.hash.replace(/^#/, "").split("/");
  const show = { campaign: () => campaignView(id), experiment: () => experimentView(id),
    governance: governanceView, node: nodeView, network: networkView }[page] || campaignsView;
  document.body.dataset.ready = "";
  try {
    view.replaceChildren(...(await show()));
  } catch (err) {
    view.replaceChildren(failure(err));
  }
  document.body.dataset.ready = location.hash || "#/";
}

async function health() {
  try {
    const h = await api("/health");
    const badge = document.getElementById("health");
    badge.textContent = `${h.status}, ${h.campaigns} campaign(s)`;
    badge.className = h.status === "ok" ? "ok" : "bad";
  } catch (_) { /* the view shows what failed */ }
}

window.addEventListener("hashchange", render);
window.addEventListener("DOMContentLoaded", () => { health(); render(); });
