// The class annotation tool: the same steps, keys and checks as notebook 01's tool.
// Every check is the server's (the protocol file); this page only draws and sends.
"use strict";

const $ = (id) => document.getElementById(id);
const S = {
  protocol: null, me: null, current: null, shown: null, editing: false, step: 0,
  history: [], backAt: 0, grade: null, ratings: {}, started: 0, spentBefore: 0, busy: false,
};
const STEPS = ["grade", "attributes", "text"];

function sleep(ms) { return new Promise((r) => setTimeout(r, ms)); }

function say(lines, error) {
  const box = $("message");
  box.textContent = "";
  for (const line of lines) {
    const div = document.createElement("div");
    div.className = error ? "error" : "ok";
    div.textContent = line;
    box.appendChild(div);
  }
}

// One request; a server that does not answer (restarting, network gone) is retried until it
// does, and the page keeps every answer meanwhile. Answers with a status are returned.
async function send(method, url, body) {
  for (let attempt = 0; ; attempt++) {
    try {
      const init = { method, credentials: "same-origin", headers: {} };
      if (body !== undefined) {
        init.headers["Content-Type"] = "application/json";
        init.body = JSON.stringify(body);
      }
      const r = await fetch(url, init);
      if (r.status === 502 || r.status === 503 || r.status === 504) throw new Error("gateway " + r.status);
      $("status").textContent = "";
      let data = {};
      try { data = await r.json(); } catch (e) { data = { error: "the server answered " + r.status }; }
      return { status: r.status, ok: r.ok, data };
    } catch (e) {
      $("status").textContent = "The server is not answering; your answers are kept here. Retrying\u2026";
      await sleep(Math.min(500 * (attempt + 1), 3000));
    }
  }
}

function problems(res) {
  return (res.data && res.data.problems) || [res.data.error || "the server refused (" + res.status + ")"];
}

function answers() {
  const attributes = {};
  for (const a of S.protocol.attributes) {
    const word = document.querySelector(`.attr-row[data-key="${a.key}"] input`).value.trim();
    attributes[a.key] = { rating: S.ratings[a.key] ?? null, word: word || null };
  }
  return { grade: S.grade, attributes, description: $("description").value,
           suggestion: $("suggestion").value };
}

function build() {
  const p = S.protocol;
  $("grade-question").textContent = "1. " + p.grade_question;
  for (const g of p.grades) {
    const b = document.createElement("button");
    b.type = "button"; b.className = "grade"; b.dataset.key = g.key;
    b.textContent = g.shortcut ? `${g.label} [${g.shortcut}]` : g.label;
    b.addEventListener("click", () => setGrade(g.key));
    $("grades").appendChild(b);
  }
  const keys = p.grades.filter((g) => g.shortcut).map((g) => `${g.shortcut} = ${g.label}`);
  $("keys-help").textContent = "Keys (outside the text boxes): " + keys.join(", ") + "; n = next, b = back, s = skip";
  for (const a of p.attributes) {
    const row = document.createElement("div");
    row.className = "attr-row"; row.dataset.key = a.key; row.title = a.question;
    const label = document.createElement("span");
    label.className = "label"; label.textContent = a.label;
    row.appendChild(label);
    const group = document.createElement("span");
    group.className = "ratings";
    for (let v = 1; v <= 5; v++) {
      const b = document.createElement("button");
      b.type = "button"; b.className = "rating"; b.dataset.value = String(v); b.textContent = String(v);
      b.title = p.rating_labels[String(v)] || String(v);
      b.addEventListener("click", () => { S.ratings[a.key] = v; draw(); });
      group.appendChild(b);
    }
    row.appendChild(group);
    const word = document.createElement("input");
    word.maxLength = 40;
    word.placeholder = "one word" + (a.word_required ? "" : " (optional)");
    row.appendChild(word);
    $("attributes").appendChild(row);
  }
  $("description-question").textContent = "3. " + p.description.question;
  $("description").placeholder = p.description.question;
  $("suggestion-question").textContent = p.suggestion.question;
  $("suggestion").placeholder = p.suggestion.question;
  for (const r of p.flag_reasons) {
    const o = document.createElement("option");
    o.value = r; o.textContent = r;
    $("flag-reason").appendChild(o);
  }
  $("back").addEventListener("click", () => act(back));
  $("next").addEventListener("click", () => act(next));
  $("submit").addEventListener("click", () => act(submit));
  $("skip").addEventListener("click", () => act(() => passOn("skip")));
  $("flag").addEventListener("click", () => act(() => passOn("flag")));
  document.addEventListener("keydown", onKey);
}

function setGrade(key) { S.grade = key; draw(); }

function clearForm() {
  S.grade = null; S.ratings = {}; S.step = 0;
  for (const input of document.querySelectorAll(".attr-row input")) input.value = "";
  $("description").value = ""; $("suggestion").value = "";
}

function fill(c) {
  S.grade = c.grade;
  for (const [k, j] of Object.entries(c.attributes)) {
    S.ratings[k] = j.rating;
    const input = document.querySelector(`.attr-row[data-key="${k}"] input`);
    if (input) input.value = j.word || "";
  }
  $("description").value = c.description; $("suggestion").value = c.suggestion;
  S.spentBefore = c.seconds_spent;
}

function show(image) {
  S.shown = image; S.spentBefore = 0;
  clearForm();
  if (image) {
    $("image-id").textContent = image.id;
    $("image-title").textContent = image.exists ? image.title : "the image file is missing: flag it as broken";
    $("image").hidden = !image.exists;
    if (image.exists) $("image").src = image.url;
  } else {
    $("image-id").textContent = "All done";
    $("image-title").textContent = `${S.me} has no images left to critique. Thank you!`;
    $("image").hidden = true; $("image").removeAttribute("src");
  }
  S.started = performance.now();
  draw();
}

function draw() {
  const active = !!S.shown;
  STEPS.forEach((_, i) => { $("step-" + i).hidden = !active || i !== S.step; });
  for (const b of document.querySelectorAll("button.grade")) b.classList.toggle("active", b.dataset.key === S.grade);
  for (const row of document.querySelectorAll(".attr-row")) {
    for (const b of row.querySelectorAll("button.rating")) {
      b.classList.toggle("active", Number(b.dataset.value) === S.ratings[row.dataset.key]);
    }
  }
  const last = S.step === STEPS.length - 1;
  $("next").hidden = last; $("submit").hidden = !last;
  for (const id of ["next", "submit"]) $(id).disabled = !active || S.busy;
  for (const id of ["skip", "flag"]) $(id).disabled = !active || S.busy || S.editing;
  $("back").disabled = S.busy || !(S.step > 0 || S.backAt > 0);
}

function drawProgress(state) {
  const p = state.progress;
  $("me").textContent = state.annotator;
  $("progress").max = Math.max(1, p.share); $("progress").value = Math.min(p.done, p.share);
  $("progress-label").textContent =
    `${p.done} critiqued, ${p.skipped} skipped, ${p.flagged} flagged (your share: about ${p.share})`;
  $("class-label").textContent = `Class: ${p.class_done} / ${p.class_target} critiques ` +
    `(${p.per_image} per image, ${p.images} images, ${p.annotators} annotators)`;
}

async function loadState() {
  const res = await send("GET", "/api/state");
  if (res.status === 401) { showNameForm(); return; }
  if (!res.ok) { say(problems(res), true); return; }
  S.me = res.data.annotator; S.history = res.data.history; S.backAt = S.history.length;
  S.editing = false; S.current = res.data.image;
  $("name-form").hidden = true; $("tool").hidden = false;
  drawProgress(res.data);
  show(S.current);
}

function showNameForm() { $("tool").hidden = true; $("name-form").hidden = false; $("name").focus(); }

// Run one action at a time; a second click while one is under way does nothing.
async function act(fn) {
  if (S.busy) return;
  S.busy = true; draw();
  try { await fn(); } finally { S.busy = false; draw(); }
}

async function check(step) {
  const res = await send("POST", "/api/check", { step, answers: answers() });
  if (!res.ok) { say(problems(res), true); return false; }
  return true;
}

async function next() {
  if (!S.shown) return;
  if (!(await check(STEPS[S.step]))) return;
  say([], false);
  if (S.step < STEPS.length - 1) S.step += 1;
}

async function back() {
  if (S.step > 0) { S.step -= 1; say([], false); return; }
  if (S.backAt === 0) return;
  const imageId = S.history[S.backAt - 1];
  const res = await send("GET", "/api/critique/" + encodeURIComponent(imageId));
  if (!res.ok) { say(problems(res), true); return; }
  S.backAt -= 1; S.editing = true;
  show({ id: imageId, title: "(your critique: change it and submit again)", exists: true,
         url: "/api/image/" + encodeURIComponent(imageId) });
  fill(res.data);
  say([], false);
}

async function submit() {
  if (!S.shown) return;
  const imageId = S.shown.id;
  const seconds = S.spentBefore + (performance.now() - S.started) / 1000;
  $("status").textContent = "saving\u2026";
  const res = await send("POST", "/api/submit", { image_id: imageId, answers: answers(), seconds });
  $("status").textContent = "";
  if (!res.ok) {
    say(problems(res), true);
    const p = (res.data.problems || []).join(" ");   // go to the level with the first problem
    if (/grade/.test(p)) S.step = 0; else if (/rate |rating|word|attribute/.test(p)) S.step = 1;
    return;
  }
  await loadState();
  say([`saved critique of ${imageId}`], false);
}

async function passOn(kind) {
  if (!S.shown || S.editing) return;
  const imageId = S.shown.id;
  const res = await send("POST", "/api/" + kind, { image_id: imageId, reason: $("flag-reason").value });
  if (!res.ok) { say(problems(res), true); return; }
  await loadState();
  say([`${kind === "skip" ? "skipped" : "flagged"} ${imageId}`], false);
}

function onKey(event) {
  const t = event.target;
  if (t && (t.tagName === "INPUT" || t.tagName === "TEXTAREA" || t.tagName === "SELECT")) return;
  if (event.ctrlKey || event.metaKey || event.altKey || $("tool").hidden) return;
  const key = event.key.toLowerCase();
  const grade = S.protocol.grades.find((g) => g.shortcut && g.shortcut === key);
  if (grade && S.step === 0 && S.shown) { setGrade(grade.key); event.preventDefault(); }
  else if (key === "n") { act(next); event.preventDefault(); }
  else if (key === "b") { act(back); event.preventDefault(); }
  else if (key === "s" && !S.editing) { act(() => passOn("skip")); event.preventDefault(); }
}

async function claimName(event) {
  event.preventDefault();
  const res = await send("POST", "/api/name", { name: $("name").value });
  if (!res.ok) { say(problems(res), true); $("name-form").appendChild($("message")); return; }
  $("tool").insertBefore($("message"), $("status"));
  say([], false);
  await loadState();
}

async function main() {
  const res = await send("GET", "/api/protocol");
  if (!res.ok) { document.body.textContent = problems(res).join(" "); return; }
  S.protocol = res.data;
  build();
  $("name-entry").addEventListener("submit", claimName);
  await loadState();
  setInterval(() => { if (S.me) send("POST", "/api/heartbeat", {}); }, 60000);
}

main();
