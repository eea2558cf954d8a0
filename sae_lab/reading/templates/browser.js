"use strict";
const data = JSON.parse(document.getElementById("data").textContent);
const byId = new Map(data.latents.map((l) => [l.id, l]));
const list = document.getElementById("list");
const panel = document.getElementById("panel");
const search = document.getElementById("search");
const count = document.getElementById("count");
const show = (t) => t.replace(/\n/g, "\u21b5");

function el(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined) e.textContent = text;
  return e;
}

function fmtDensity(d) {
  return d > 0 ? (100 * d).toPrecision(3) + "% (log10 " + Math.log10(d).toFixed(2) + ")"
               : "never fired";
}

function haystack(l) {
  if (l._hay === undefined) {
    const parts = l.contexts.map((c) => c.tokens.join(""));
    if (l.promoted) parts.push(l.promoted.map((p) => p[0]).join(" "));
    if (l.title) parts.push(l.title);
    l._hay = parts.join("\n").toLowerCase();
  }
  return l._hay;
}

function matches(l, q) {
  if (!q) return true;
  if (/^\d+$/.test(q)) return l.id === Number(q);
  return haystack(l).includes(q.toLowerCase());
}

function renderList(q) {
  list.replaceChildren();
  let n = 0;
  for (const l of data.latents) {
    if (!matches(l, q)) continue;
    const pct = l.density > 0 ? (100 * l.density).toPrecision(2) + "%" : "dead";
    const b = el("button", l.density > 0 ? "" : "dead",
                 "#" + l.id + "  " + pct + (l.title ? "  " + l.title : ""));
    b.id = "item-" + l.id;
    b.dataset.latent = l.id;
    b.addEventListener("click", () => { location.hash = "latent=" + l.id; });
    list.appendChild(b);
    n += 1;
  }
  count.textContent = n + " of " + data.latents.length + " latents";
  list.dataset.shown = String(n);
}

function renderPanel(id) {
  const l = byId.get(id);
  panel.replaceChildren();
  for (const b of list.querySelectorAll("button.selected")) b.classList.remove("selected");
  if (!l) { panel.appendChild(el("p", "", "Latent " + id + " is not in this browser.")); return; }
  const item = document.getElementById("item-" + id);
  if (item) item.classList.add("selected");
  panel.dataset.latent = String(id);
  panel.appendChild(el("h2", "", "Latent " + id + (l.title ? ": " + l.title : "")));
  if (l.explanation) panel.appendChild(el("p", "explanation", l.explanation));
  const stats = "Density: " + fmtDensity(l.density) + "   max activation: " + l.max;
  panel.appendChild(el("p", "", stats));
  panel.appendChild(el("h3", "", "Top-activating contexts"));
  if (l.contexts.length === 0) {
    panel.appendChild(el("p", "", "It never fired on the inspected tokens."));
  }
  for (const c of l.contexts) {
    const row = el("div", "ctx");
    row.appendChild(el("span", "val", c.value.toFixed(3)));
    c.tokens.forEach((t, i) => {
      if (i !== c.at) { row.appendChild(el("span", "", show(t))); return; }
      // A piece carries the space before its word (" parse"): only the word is highlighted.
      const lead = t.match(/^\s*/)[0];
      if (lead && lead !== t) row.appendChild(el("span", "", show(lead)));
      const s = el("span", "hot", show(lead !== t ? t.slice(lead.length) : t));
      s.title = "activation " + c.value;
      row.appendChild(s);
    });
    panel.appendChild(row);
  }
  if (l.promoted) {
    panel.appendChild(el("h3", "", "Output tokens it promotes most (W_dec \u00b7 W_U)"));
    const box = el("div", "promoted");
    for (const [t, v] of l.promoted) {
      const c = el("span", "chip", show(t));
      c.title = String(v);
      box.appendChild(c);
    }
    panel.appendChild(box);
  }
}

function fromHash() {
  const h = new URLSearchParams(location.hash.slice(1));
  if (h.has("q")) { search.value = h.get("q"); renderList(search.value.trim()); }
  if (h.has("latent")) renderPanel(Number(h.get("latent")));
}

document.getElementById("summary").textContent = data.summary;
search.addEventListener("input", () => renderList(search.value.trim()));
window.addEventListener("hashchange", fromHash);
renderList("");
if (data.latents.length) renderPanel(data.latents[0].id);
fromHash();
document.body.dataset.ready = "1";
