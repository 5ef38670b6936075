// The facefuse page: analyze a photo, draw its faces, enrol one in a gallery, search it.
"use strict";
const $ = (id) => document.getElementById(id);
let photo = null;  // the File shown

const esc = (text) => String(text).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);

function say(text, isError) {
  $("status").textContent = text;
  $("status").className = isError ? "error" : "";
}

async function call(method, path, body) {
  const headers = {};
  if ($("key").value) headers["x-api-key"] = $("key").value;
  if (body && !(body instanceof FormData)) {
    headers["content-type"] = "application/json";
    body = JSON.stringify(body);
  }
  const response = await fetch(path, { method, headers, body });
  const data = await response.json();
  if (!response.ok) throw new Error(data.error || response.statusText);
  return data;
}

function form(field) {
  const data = new FormData();
  data.append(field, photo, photo.name);
  return data;
}

function describe(face) {
  const parts = [];
  if (face.age !== undefined) parts.push(`${face.age.toFixed(0)} y`);
  for (const task of ["gender", "race", "emotion"]) {
    if (face[task]) parts.push(face[task].label);
  }
  const attributes = face.attributes ? Object.entries(face.attributes) : [];
  const on = attributes.filter(([, v]) => v === true).map(([k]) => k);
  return [parts.join(", "), on.slice(0, 8).join(", ")];
}

function draw(image, faces) {
  const canvas = $("canvas"), ctx = canvas.getContext("2d");
  canvas.width = image.naturalWidth;
  canvas.height = image.naturalHeight;
  ctx.drawImage(image, 0, 0);
  const side = Math.max(canvas.width, canvas.height);
  for (const face of faces) {
    const [x1, y1, x2, y2] = face.box;
    ctx.lineWidth = Math.max(1, side / 250);
    ctx.strokeStyle = "#0c0";
    ctx.strokeRect(x1, y1, x2 - x1, y2 - y1);
    ctx.fillStyle = "#f00";
    for (const [x, y] of face.landmarks || []) {
      ctx.beginPath();
      ctx.arc(x, y, Math.max(1, side / 300), 0, 2 * Math.PI);
      ctx.fill();
    }
    ctx.font = `${Math.max(10, side / 25)}px sans-serif`;
    ctx.fillStyle = "#ff0";
    ctx.fillText(String(face.face), x1 + 2, y1 + Math.max(10, side / 25));
  }
  canvas.dataset.faces = String(faces.length);
}

function table(faces) {
  const rows = faces.map((f) => {
    const [main, attributes] = describe(f);
    return `<tr class="face"><td>${f.face}</td><td>${esc(main)}</td><td>${esc(attributes)}</td></tr>`;
  });
  $("faces").innerHTML = faces.length
    ? `<table><tr><th>face</th><th>predictions</th><th>attributes</th></tr>${rows.join("")}</table>`
    : "<p>no face found</p>";
}

async function analyze(file) {
  photo = file;
  say(`analysing ${file.name} ...`);
  try {
    const data = await call("POST", "/v1/analyze", form("files"));
    const result = data.results[0];
    const image = new Image();
    image.onload = () => {
      draw(image, result.faces);
      table(result.faces);
      say(`${file.name}: ${result.faces.length} face(s)`);
      URL.revokeObjectURL(image.src);
    };
    image.src = URL.createObjectURL(file);
  } catch (err) {
    say(err.message, true);
  }
}

async function galleryAction(action) {
  const gallery = encodeURIComponent($("gallery").value.trim());
  try {
    if (action === "create") {
      const made = await call("POST", "/v1/galleries", { name: $("gallery").value.trim() });
      say(`gallery ${made.name} created (threshold ${made.threshold.toFixed(3)})`);
      return;
    }
    if (!photo) throw new Error("pick a photo first");
    if (action === "enrol") {
      const subject = encodeURIComponent($("subject").value.trim());
      const face = encodeURIComponent($("face").value || "0");
      const added = await call("POST",
        `/v1/galleries/${gallery}/subjects/${subject}/faces?face=${face}`, form("file"));
      say(`face ${added.face} enrolled as ${added.subject} (id ${added.face_id})`);
      return;
    }
    const found = await call("POST", `/v1/galleries/${gallery}/search?limit=3`, form("file"));
    $("matches").innerHTML = found.faces.map((f) => {
      const top = f.top.map((h) => `${h.subject} ${h.score.toFixed(3)}`).join("; ");
      return `<div class="match">face ${f.face}: <b>${esc(f.match || "no match")}</b> ` +
        `(${esc(top || "empty gallery")})</div>`;
    }).join("") || "<div>no face found</div>";
    say(`searched ${found.faces.length} face(s)`);
  } catch (err) {
    say(err.message, true);
  }
}

$("photo").addEventListener("change", (e) => e.target.files[0] && analyze(e.target.files[0]));
const drop = $("drop");
drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", (e) => {
  e.preventDefault();
  drop.classList.remove("over");
  if (e.dataTransfer.files[0]) analyze(e.dataTransfer.files[0]);
});
for (const action of ["create", "enrol", "search"]) {
  $(action).addEventListener("click", () => galleryAction(action));
}
