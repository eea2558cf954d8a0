"use strict";
const $ = (id) => document.getElementById(id);
let result = null, selected = null;
const show = (t) => t.replace(/\n/g, "\u21b5\n");

function el(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined) e.textContent = text;
  return e;
}

function paint() {
  const box = $("tokens");
  box.replaceChildren();
  const l = result.latents.find((x) => x.id === selected);
  result.tokens.forEach((t, i) => {
    const s = el("span", "", show(t.text));
    const a = l ? l.acts[i] : 0;
    if (a > 0) {
      s.className = "hot";
      s.dataset.value = String(a);
      s.style.background = "rgba(247, 140, 40, " + (0.15 + 0.85 * a / l.max).toFixed(3) + ")";
    }
    s.title = t.top.map((p) => "#" + p[0] + " " + p[1]).join("\n") || "no latent fires";
    box.appendChild(s);
  });
  for (const d of document.querySelectorAll(".latent")) {
    d.classList.toggle("selected", Number(d.dataset.latent) === selected);
  }
}

function listLatents() {
  const box = $("latents");
  box.replaceChildren(el("h3", "", "Top latents in this text"));
  if (result.latents.length === 0) box.appendChild(el("p", "", "No latent fires."));
  for (const l of result.latents) {
    const d = el("div", "latent");
    d.dataset.latent = String(l.id);
    const head = el("div");
    head.appendChild(el("span", "", "#" + l.id + "  max " + l.max.toFixed(2) + "  "));
    head.appendChild(el("span", "title", l.title));
    d.appendChild(head);
    if (l.explanation) {
      const score = l.score === null || l.score === undefined ? "" :
        " (detection " + l.score.toFixed(2) + ")";
      d.appendChild(el("div", "expl", l.explanation + score));
    }
    for (const c of l.contexts.slice(0, 3)) {
      const row = el("div", "ctx");
      c.tokens.forEach((t, i) => row.appendChild(el(i === c.at ? "b" : "span", "", show(t))));
      d.appendChild(row);
    }
    d.addEventListener("click", () => { selected = l.id; paint(); });
    box.appendChild(d);
  }
}

async function analyse() {
  const text = $("text").value;
  $("status").textContent = "running...";
  document.body.dataset.state = "busy";
  try {
    const r = await fetch("api/analyse", {method: "POST",
      headers: {"Content-Type": "application/json"}, body: JSON.stringify({text})});
    const body = await r.json();
    if (!r.ok) throw new Error(body.error || r.statusText);
    result = body;
    selected = result.latents.length ? result.latents[0].id : null;
    listLatents();
    paint();
    $("status").textContent = result.tokens.length + " tokens, " + result.latents.length +
      " latents fire";
  } catch (e) {
    $("status").textContent = "error: " + e.message;
  }
  document.body.dataset.state = "done";
}

$("go").addEventListener("click", analyse);
$("text").addEventListener("keydown", (e) => {
  if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) analyse();
});
document.body.dataset.ready = "1";
