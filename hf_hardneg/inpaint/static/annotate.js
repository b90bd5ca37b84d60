// The annotation page: one photograph at a time, steps mask -> inpaint -> choose/rate/caption -> save or skip.
"use strict";

const $ = (id) => document.getElementById(id);
let view = null;          // last answer of /api/task
let chosen = null;        // index of the chosen candidate
let captionSource = null; // the COCO caption the new caption starts from
let busyCount = 0;

function setBusy(text) {
  busyCount += text ? 1 : -1;
  $("busy").textContent = busyCount > 0 ? (text || "working…") : "";
  for (const id of ["make-mask", "generate", "save", "skip"]) $(id).disabled = busyCount > 0 || (id === "generate" && !maskReady());
}

function maskReady() { return !$("inpaint-prompt").disabled; }

function say(message, ok) {
  $("message").textContent = ok ? "" : message;
  $("status").textContent = ok ? message : "";
}

async function api(path, body, busyText) {
  setBusy(busyText || "working…");
  try {
    const response = await fetch(path, body === undefined ? {} : {
      method: "POST", headers: {"Content-Type": "application/json"}, body: JSON.stringify(body),
    });
    const data = await response.json();
    if (!response.ok) throw new Error(data.error || response.statusText);
    return data;
  } finally {
    setBusy(null);
  }
}

function progressText(p) {
  const others = Object.entries(p.saved_by_concept).map(([c, n]) => `${c} ${n}`).join(", ") || "none";
  return `${p.saved} saved · ${p.skipped} skipped · ${p.remaining} left of ${p.offered} · export: ${others}`;
}

function fillSelect(select, options, groups) {
  select.replaceChildren();
  for (const [value, label] of options) select.add(new Option(label, value));
  for (const [label, names] of groups || []) {
    if (!names.length) continue;
    const group = document.createElement("optgroup");
    group.label = label;
    for (const name of names) group.appendChild(new Option(name, name));
    select.appendChild(group);
  }
}

function updateNewObject() {
  const isObject = view && view.concept === "object";
  $("new-object-label").classList.toggle("hidden", !isObject);
  if (!isObject) return;
  const changed = $("changed-object").value;
  const all = Object.keys(view.coco_categories || {});
  const names = changed ? view.coco_categories[changed].same : all;
  fillSelect($("new-object"), [["", "(read off the inpainting prompt)"]], [[changed ? `same super-category (${view.coco_categories[changed].supercategory})` : "COCO categories", names]]);
}

function renderCaptions(captions) {
  const box = $("captions");
  box.replaceChildren();
  captions.forEach((caption, i) => {
    const label = document.createElement("label");
    label.style.display = "block";
    const radio = document.createElement("input");
    radio.type = "radio"; radio.name = "caption"; radio.id = `caption-${i}`; radio.value = caption.text;
    radio.addEventListener("change", () => pickCaption(caption.text));
    label.append(radio, document.createTextNode(" "));
    let at = 0;
    for (const [start, end] of caption.keywords) {
      label.appendChild(document.createTextNode(caption.text.slice(at, start)));
      const mark = document.createElement("mark");
      mark.textContent = caption.text.slice(start, end);
      label.appendChild(mark);
      at = end;
    }
    label.appendChild(document.createTextNode(caption.text.slice(at)));
    box.appendChild(label);
  });
  if (captions.length) { $("caption-0").checked = true; pickCaption(captions[0].text); }
}

function pickCaption(text) {
  const area = $("new-caption");
  if (!area.value.trim() || area.value === captionSource) area.value = text;
  captionSource = text;
}

function render(data) {
  view = data;
  $("concept").textContent = data.concept;
  $("annotator").textContent = data.annotator;
  $("progress").textContent = progressText(data.progress);
  $("build-command").textContent = data.build_command;
  const task = data.task;
  $("done").classList.toggle("hidden", task !== null);
  $("workspace").classList.toggle("hidden", task === null);
  if (task === null) return;
  $("image-id").textContent = `${task.image_id}`;
  $("licence").textContent = `(${task.license})`;
  $("photo").src = task.photo_url;
  $("photo").classList.remove("hidden");
  $("overlay").classList.add("hidden");
  $("overlay").removeAttribute("src");
  $("coverage").textContent = "";
  for (const id of ["mask-prompt", "inpaint-prompt", "seed", "new-caption"]) $(id).value = "";
  $("threshold").value = "0.4"; $("dilate-x").value = "0"; $("dilate-y").value = "0";
  $("guidance").value = data.settings.guidance_scale;
  $("steps").value = data.settings.num_inference_steps;
  $("inpaint-prompt").disabled = true;
  $("generate").disabled = true;
  $("candidates").replaceChildren();
  chosen = null; captionSource = null;
  for (const q of document.querySelectorAll("input[name=quality]")) q.checked = false;
  const others = Object.keys(data.coco_categories).filter((n) => !task.categories.includes(n));
  fillSelect($("changed-object"), [["", "(read off the mask prompt)"]], [["in this photograph", task.categories], ["other COCO categories", others]]);
  updateNewObject();
  renderCaptions(task.captions);
  $("mask-prompt").focus();
}

function showOverlay(on) {
  const hasOverlay = $("overlay").hasAttribute("src");
  $("show-overlay").checked = on;
  $("overlay").classList.toggle("hidden", !(on && hasOverlay));
  $("photo").classList.toggle("hidden", on && hasOverlay);
}

async function makeMask() {
  try {
    const data = await api("/api/mask", {
      image_id: view.task.image_id, prompt: $("mask-prompt").value, threshold: $("threshold").value,
      dilate_x: $("dilate-x").value, dilate_y: $("dilate-y").value,
    }, "masking…");
    $("overlay").src = data.overlay;
    showOverlay(true);
    $("coverage").textContent = `mask covers ${(100 * data.coverage).toFixed(1)}% of the photograph`;
    $("inpaint-prompt").disabled = false;
    $("generate").disabled = false;
    $("candidates").replaceChildren();
    chosen = null;
    say(data.coverage > 0 ? "mask ready: enter the inpainting prompt" : "the mask is empty: lower the threshold or change the prompt", data.coverage > 0);
    if (data.coverage > 0) $("inpaint-prompt").focus();
  } catch (err) { say(err.message, false); }
}

async function generate() {
  try {
    const data = await api("/api/inpaint", {
      image_id: view.task.image_id, prompt: $("inpaint-prompt").value, seed: $("seed").value,
      guidance_scale: $("guidance").value, num_inference_steps: $("steps").value,
    }, "inpainting…");
    const box = $("candidates");
    box.replaceChildren();
    for (const c of data.candidates) {
      const figure = document.createElement("figure");
      figure.className = "candidate"; figure.id = `candidate-${c.index + 1}`; figure.dataset.index = c.index;
      const img = document.createElement("img"); img.src = c.image; img.alt = `candidate ${c.index + 1}`;
      const caption = document.createElement("figcaption"); caption.textContent = `${c.index + 1} · seed ${c.seed}`;
      figure.append(img, caption);
      figure.addEventListener("click", () => choose(c.index));
      box.appendChild(figure);
    }
    chosen = null;
    say("choose the best candidate (1-3), rate it and write the new caption", true);
    document.activeElement.blur();
  } catch (err) { say(err.message, false); }
}

function choose(index) {
  const figures = document.querySelectorAll(".candidate");
  if (index < 0 || index >= figures.length) return;
  chosen = index;
  figures.forEach((f, i) => f.classList.toggle("chosen", i === index));
}

function rate(value) { $(value === "very good" ? "quality-very-good" : "quality-okay").checked = true; }

async function save() {
  const quality = document.querySelector("input[name=quality]:checked");
  try {
    const data = await api("/api/save", {
      image_id: view.task.image_id, choice: chosen, quality: quality ? quality.value : "",
      coco_caption: captionSource || "", inpaint_caption: $("new-caption").value,
      category: $("changed-object").value, replacement: view.concept === "object" ? $("new-object").value : "",
    }, "saving…");
    render(data);
    say(`saved ${data.saved.sample_id} (${data.saved.quality})`, true);
  } catch (err) { say(err.message, false); }
}

async function skip() {
  try {
    const skipped = view.task.image_id;
    render(await api("/api/skip", {image_id: skipped, reason: "skipped in the web app"}, "skipping…"));
    say(`skipped ${skipped}`, true);
  } catch (err) { say(err.message, false); }
}

function typing(target) {
  return target && (target.tagName === "TEXTAREA" || target.tagName === "SELECT" ||
    (target.tagName === "INPUT" && target.type !== "checkbox" && target.type !== "radio"));
}

document.addEventListener("keydown", (event) => {
  if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) { event.preventDefault(); save(); return; }
  if (event.key === "Escape") { document.activeElement.blur(); return; }
  const target = event.target;
  if (event.key === "Enter" && ["mask-prompt", "threshold", "dilate-x", "dilate-y"].includes(target.id)) { event.preventDefault(); makeMask(); return; }
  if (event.key === "Enter" && ["inpaint-prompt", "guidance", "steps", "seed"].includes(target.id)) { event.preventDefault(); generate(); return; }
  if (typing(target) || event.ctrlKey || event.metaKey || event.altKey || !view || !view.task) return;
  const focus = {m: "mask-prompt", i: "inpaint-prompt", c: "new-caption"}[event.key];
  if (focus) { event.preventDefault(); $(focus).focus(); return; }
  if (/^[1-9]$/.test(event.key)) { choose(Number(event.key) - 1); return; }
  if (event.key === "v") rate("very good");
  else if (event.key === "o" || event.key === "k") rate("okay");
  else if (event.key === "t") showOverlay(!$("show-overlay").checked);
  else if (event.key === "s") skip();
});

$("make-mask").addEventListener("click", makeMask);
$("generate").addEventListener("click", generate);
$("save").addEventListener("click", save);
$("skip").addEventListener("click", skip);
$("show-overlay").addEventListener("change", (e) => showOverlay(e.target.checked));
$("changed-object").addEventListener("change", updateNewObject);

api("/api/task").then(render).catch((err) => say(err.message, false));
