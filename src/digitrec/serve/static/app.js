// The drawing page: strokes on a canvas -> PNG -> POST /api/v1/predict or /read-number -> the answer.
// No framework and no CDN, so the page works offline and on any machine that can reach the server.
"use strict";

const API = "/api/v1";
const SIZES = { digit: [280, 280, 18], number: [700, 240, 16] };  // width, height, pen width (px)

const $ = (id) => document.getElementById(id);
const pad = $("pad");
const ctx = pad.getContext("2d");
let mode = "digit";
let hasInk = false;       // anything drawn since the last clear
let showingUpload = false; // the pad shows an uploaded image, which the next stroke replaces
let lastUpload = null;     // that image's file, which Read sends again
let drawing = null;       // the pointer id of the stroke in progress
let last = null;
let readTimer = null;
let requestNo = 0;        // answers to older requests are dropped

function clearPad() {
  const [w, h, pen] = SIZES[mode];
  if (pad.width !== w || pad.height !== h) { pad.width = w; pad.height = h; }
  ctx.fillStyle = "#fff";
  ctx.fillRect(0, 0, pad.width, pad.height);
  ctx.strokeStyle = "#111";
  ctx.fillStyle = "#111";
  ctx.lineWidth = pen;
  ctx.lineCap = "round";
  ctx.lineJoin = "round";
  hasInk = false;
  showingUpload = false;
  lastUpload = null;
}

function point(event) {
  const r = pad.getBoundingClientRect();
  return [(event.clientX - r.left) * pad.width / r.width, (event.clientY - r.top) * pad.height / r.height];
}

pad.addEventListener("pointerdown", (event) => {
  if (event.button !== 0 || drawing !== null) return;
  if (showingUpload) clearPad();
  drawing = event.pointerId;
  pad.setPointerCapture(event.pointerId);
  last = point(event);
  ctx.beginPath();                       // a dot, so a tap leaves ink too
  ctx.arc(last[0], last[1], ctx.lineWidth / 2, 0, 2 * Math.PI);
  ctx.fill();
  hasInk = true;
  clearTimeout(readTimer);
  event.preventDefault();
});

pad.addEventListener("pointermove", (event) => {
  if (event.pointerId !== drawing) return;
  const events = event.getCoalescedEvents ? event.getCoalescedEvents() : [event];
  for (const e of events.length ? events : [event]) {
    const p = point(e);
    ctx.beginPath();
    ctx.moveTo(last[0], last[1]);
    ctx.lineTo(p[0], p[1]);
    ctx.stroke();
    last = p;
  }
  event.preventDefault();
});

function endStroke(event) {
  if (event.pointerId !== drawing) return;
  drawing = null;
  clearTimeout(readTimer);
  readTimer = setTimeout(readPad, 400);  // read once the writer pauses, not after every stroke of a 4
}
pad.addEventListener("pointerup", endStroke);
pad.addEventListener("pointercancel", endStroke);

function setStatus(text) { $("status").textContent = text; $("status").hidden = !text; }

function showError(text) {
  $("error").textContent = text;
  $("error").hidden = !text;
  if (text) { $("digit-result").hidden = true; $("number-result").hidden = true; }
}

async function send(blob, name) {
  const no = ++requestNo;
  const form = new FormData();
  form.append("file", blob, name);
  const url = mode === "digit" ? `${API}/predict?top_k=3&include_image=true` : `${API}/read-number`;
  setStatus("Reading…");
  showError("");
  let response, body = null;
  try {
    response = await fetch(url, { method: "POST", body: form });
  } catch (err) {
    if (no === requestNo) { setStatus(""); showError(`Could not reach the server (${err.message}).`); }
    return;
  }
  // A proxy in front may answer an error with an HTML page: then say what it answered, not that JSON broke.
  if ((response.headers.get("content-type") || "").includes("application/json")) {
    try { body = await response.json(); } catch (err) { body = null; }
  }
  if (no !== requestNo) return;
  setStatus("");
  if (!response.ok || body === null) {
    const said = body && typeof body.detail === "string" ? body.detail : "";
    showError(said || `The server answered ${response.status} ${response.statusText}.`.replace(" .", "."));
    $("announce").textContent = "Error: " + $("error").textContent;
    return;
  }
  if (mode === "digit") showDigit(body); else showNumber(body);
  document.body.dataset.answered = String(no);  // lets a test (or a script) wait for the answer
}

function readPad() {
  if (showingUpload && lastUpload) { send(lastUpload, lastUpload.name); return; }
  if (!hasInk) { setStatus(mode === "digit" ? "Draw a digit first." : "Draw a number first."); return; }
  pad.toBlob((blob) => send(blob, "drawing.png"), "image/png");
}

function percent(p) { return `${(100 * p).toFixed(1)} %`; }

function showDigit(r) {
  $("digit-result").hidden = false;
  $("number-result").hidden = true;
  $("result-digit").textContent = r.digit === null ? "–" : String(r.digit);
  $("result-confidence").textContent = r.digit === null ? "no ink found" : percent(r.confidence);
  $("result-unsure").hidden = !r.unsure;
  $("result-several").hidden = !r.several_digits;
  $("announce").textContent = r.digit === null ? "No digit found." :
    `Read ${r.digit}, confidence ${percent(r.confidence)}${r.unsure ? ", unsure" : ""}` +
    `${r.several_digits ? ": it looks like several digits" : ""}.`;
  const list = $("probs");
  list.replaceChildren();
  r.probabilities.forEach((p, d) => {
    const li = document.createElement("li");
    if (d === r.digit) li.className = "top";
    const bar = document.createElement("span");
    bar.className = "bar";
    const fill = document.createElement("span");
    fill.style.width = `${Math.max(0, Math.min(100, 100 * p))}%`;
    bar.append(fill);
    const label = document.createElement("span");
    label.textContent = String(d);
    const value = document.createElement("span");
    value.textContent = percent(p);
    li.append(label, bar, value);
    list.append(li);
  });
  drawSeen(r.image);
}

function drawSeen(image) {
  const seen = $("seen").getContext("2d");
  const data = seen.createImageData(28, 28);
  for (let y = 0; y < 28; y++) {
    for (let x = 0; x < 28; x++) {
      const v = Math.round(255 * (image ? image[y][x] : 0));
      const i = 4 * (28 * y + x);
      data.data[i] = data.data[i + 1] = data.data[i + 2] = v;
      data.data[i + 3] = 255;
    }
  }
  const small = document.createElement("canvas");
  small.width = small.height = 28;
  small.getContext("2d").putImageData(data, 0, 0);
  seen.imageSmoothingEnabled = false;
  seen.drawImage(small, 0, 0, 112, 112);
}

function showNumber(r) {
  $("number-result").hidden = false;
  $("digit-result").hidden = true;
  $("result-text").textContent = r.text || "–";
  $("result-number-confidence").textContent = r.text ? percent(r.confidence) : "no digits found";
  $("result-number-unsure").hidden = !r.unsure;
  $("announce").textContent = r.text ? `Read ${r.text}, confidence ${percent(r.confidence)}${r.unsure ? ", unsure" : ""}.` :
    "No digits found.";
  const list = $("number-digits");
  list.replaceChildren();
  for (const d of r.digits) {
    const li = document.createElement("li");
    if (d.confidence < 0.75) li.className = "low";
    const b = document.createElement("b");
    b.textContent = String(d.digit);
    li.append(b, percent(d.confidence));
    list.append(li);
  }
}

function drawFitted(image, width, height) {
  const scale = Math.min(pad.width / width, pad.height / height);
  const w = width * scale, h = height * scale;
  ctx.drawImage(image, (pad.width - w) / 2, (pad.height - h) / 2, w, h);
}

function showUpload(file) {
  const url = URL.createObjectURL(file);
  const img = new Image();
  clearPad();  // the previous drawing or photo is not what is being read now
  showingUpload = true;  // even where the browser cannot show it (a TIFF): Read sends it again
  lastUpload = file;
  img.onload = () => {
    if (lastUpload === file) drawFitted(img, img.width, img.height);
    URL.revokeObjectURL(url);
  };
  img.onerror = () => URL.revokeObjectURL(url);  // not an image the browser shows: the server says why
  img.src = url;
}

$("file").addEventListener("change", (event) => {
  const file = event.target.files[0];
  if (!file) return;
  clearTimeout(readTimer);  // a stroke's pending read must not answer for the upload
  showUpload(file);
  send(file, file.name);
  event.target.value = "";  // choosing the same file again reads it again
});

$("read").addEventListener("click", () => {
  clearTimeout(readTimer);
  readPad();
});

$("clear").addEventListener("click", () => {
  clearTimeout(readTimer);
  requestNo++;
  clearPad();
  showError("");
  $("digit-result").hidden = true;
  $("number-result").hidden = true;
  setStatus("Draw something to start.");
});

// The box round the pad's ink (darker than light grey), or null when the pad is blank.
function inkBox() {
  const { data, width, height } = ctx.getImageData(0, 0, pad.width, pad.height);
  let x0 = width, y0 = height, x1 = -1, y1 = -1;
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      if (data[4 * (y * width + x)] < 200) {
        if (x < x0) x0 = x;
        if (x > x1) x1 = x;
        if (y < y0) y0 = y;
        if (y > y1) y1 = y;
      }
    }
  }
  return x1 < 0 ? null : { x: x0, y: y0, w: x1 - x0 + 1, h: y1 - y0 + 1 };
}

// Switching mode keeps what is on the pad and reads it the new way: the "several digits" hint sends the
// user here, and redrawing or uploading again would be their work lost.
for (const radio of document.querySelectorAll('input[name="mode"]')) {
  radio.addEventListener("change", () => {
    const upload = showingUpload ? lastUpload : null;
    const box = !upload && hasInk ? inkBox() : null;
    let drawn = null;
    if (box) {  // the ink alone, so that switching back and forth does not shrink it each time
      drawn = document.createElement("canvas");
      drawn.width = box.w;
      drawn.height = box.h;
      drawn.getContext("2d").drawImage(pad, box.x, box.y, box.w, box.h, 0, 0, box.w, box.h);
    }
    mode = radio.value;
    $("clear").click();
    if (upload) {
      showUpload(upload);
      send(upload, upload.name);
    } else if (drawn) {
      const scale = Math.min(0.8 * pad.width / drawn.width, 0.8 * pad.height / drawn.height, 1);
      const w = drawn.width * scale, h = drawn.height * scale;
      ctx.drawImage(drawn, (pad.width - w) / 2, (pad.height - h) / 2, w, h);
      hasInk = true;
      readPad();
    }
  });
}

async function showModel() {
  try {
    const r = await (await fetch(`${API}/model`)).json();
    const acc = r.test_accuracy == null ? "" : `, ${(100 * r.test_accuracy).toFixed(2)} % on the MNIST test set`;
    $("model-line").textContent = `Model: ${r.name} (${r.model}${acc}).`;
  } catch (err) {
    $("model-line").textContent = "";
  }
}

clearPad();
showModel();
