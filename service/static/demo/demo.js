// The demo page: plain browser JavaScript over the service's /v1 API, no build step.
// Errors show the problem document's title (and its client-safe detail), never anything else.
"use strict";

const $ = (id) => document.getElementById(id);
const PREVIEW_WIDTH = 320;

class ApiError extends Error {
  constructor(title, detail) {
    super(title);
    this.title = title;
    this.detail = detail;
  }
}

function headers(withVariant) {
  const out = {};
  const key = $("api-key").value.trim();
  if (key) out["X-API-Key"] = key;
  const variant = $("variant").value;
  if (withVariant && variant) out["X-Model-Variant"] = variant;
  return out;
}

async function call(method, path, { body, variant = false } = {}) {
  let response;
  try {
    response = await fetch(path, { method, body, headers: headers(variant) });
  } catch (error) {
    throw new ApiError("Service unreachable", "The request did not reach the service.");
  }
  const type = response.headers.get("content-type") || "";
  const payload = type.includes("json") ? await response.json().catch(() => null) : null;
  if (!response.ok) {
    if (payload && typeof payload.title === "string") {
      throw new ApiError(payload.title, typeof payload.detail === "string" ? payload.detail : "");
    }
    throw new ApiError(`Request failed (HTTP ${response.status})`, "");
  }
  return payload;
}

function showError(section, error) {
  const box = $(`${section}-error`);
  box.replaceChildren();
  const title = document.createElement("span");
  title.className = "title";
  title.textContent = error instanceof ApiError ? error.title : "Unexpected error";
  box.append(title);
  if (error instanceof ApiError && error.detail) box.append(document.createTextNode(error.detail));
  box.hidden = false;
  $(`${section}-result`).hidden = true;
}

function clearMessages(section) {
  $(`${section}-error`).hidden = true;
  $(`${section}-result`).hidden = true;
}

// Runs one action with its button disabled; any failure lands in the section's error box.
function action(section, run) {
  const button = $(`${section}-run`);
  button.addEventListener("click", async () => {
    clearMessages(section);
    button.disabled = true;
    try {
      await run();
      $(`${section}-result`).hidden = false;
    } catch (error) {
      showError(section, error);
    } finally {
      button.disabled = false;
    }
  });
}

// ---- photo previews with face boxes -----------------------------------------------------------
const previews = new Map(); // canvas id → decoded bitmap of the chosen file (or null)

async function preview(input, canvasId) {
  const file = input.files[0];
  let bitmap = null;
  if (file) {
    try {
      bitmap = await createImageBitmap(file, { imageOrientation: "from-image" });
    } catch (error) {
      bitmap = null; // not an image the browser can show; the service will say what is wrong
    }
  }
  previews.set(canvasId, bitmap);
  draw(canvasId, null);
}

// The service's boxes are in pixels of the upright (EXIF-rotated) image, as the bitmap is decoded.
function draw(canvasId, box) {
  const canvas = $(canvasId);
  const bitmap = previews.get(canvasId);
  if (!bitmap) {
    canvas.width = 0;
    canvas.height = 0;
    return;
  }
  const scale = Math.min(1, PREVIEW_WIDTH / bitmap.width);
  canvas.width = Math.round(bitmap.width * scale);
  canvas.height = Math.round(bitmap.height * scale);
  const ctx = canvas.getContext("2d");
  ctx.drawImage(bitmap, 0, 0, canvas.width, canvas.height);
  if (box) {
    const [x1, y1, x2, y2] = box.map((v) => v * scale);
    ctx.lineWidth = 3;
    ctx.strokeStyle = "#19d15b";
    ctx.strokeRect(x1, y1, x2 - x1, y2 - y1);
  }
}

function file(id, name) {
  const chosen = $(id).files[0];
  if (!chosen) throw new ApiError("No photo chosen", `Choose ${name} first.`);
  return chosen;
}

// ---- models -----------------------------------------------------------------------------------
async function loadModels() {
  const select = $("variant");
  const status = $("models-status");
  status.textContent = "loading models…";
  try {
    const models = await call("GET", "/v1/models");
    select.replaceChildren();
    for (const variant of models.variants) {
      const option = document.createElement("option");
      option.value = variant.ref;
      const lfw = variant.metrics && variant.metrics.lfw && variant.metrics.lfw.accuracy_mean;
      const notes = [variant.default ? "default" : null, variant.quantization ? "int8" : null,
        variant.pruning ? "pruned" : null, lfw ? `LFW ${(100 * lfw).toFixed(2)} %` : null];
      option.textContent = `${variant.ref} (${notes.filter(Boolean).join(", ")})`;
      option.selected = variant.default;
      select.append(option);
    }
    status.textContent = `${models.variants.length} variants, detector ${models.detector}`;
  } catch (error) {
    status.textContent = error instanceof ApiError ? `${error.title}: ${error.detail}` : "models unavailable";
  }
}

// ---- actions ----------------------------------------------------------------------------------
action("verify", async () => {
  draw("verify-a-canvas", null); // no box of an earlier answer stays on a photo
  draw("verify-b-canvas", null);
  const form = new FormData();
  form.append("image_a", file("verify-a", "photo A"));
  form.append("image_b", file("verify-b", "photo B"));
  const result = await call("POST", "/v1/verify", { body: form, variant: true });
  draw("verify-a-canvas", result.faces[0].box);
  draw("verify-b-canvas", result.faces[1].box);
  const decision = $("verify-decision");
  decision.textContent = result.match ? "match" : "no match";
  decision.className = `decision ${result.match ? "match" : "no-match"}`;
  $("verify-score").textContent = result.score.toFixed(4);
  $("verify-threshold").textContent = result.threshold.toFixed(4);
  $("verify-variant").textContent = result.variant;
});

action("enroll", async () => {
  const images = $("enroll-images").files;
  if (!images.length) throw new ApiError("No photo chosen", "Choose one or more photos of the user.");
  const form = new FormData();
  form.append("user_id", $("enroll-user").value.trim());
  for (const image of images) form.append("images", image);
  const result = await call("POST", "/v1/enroll", { body: form });
  const variants = Object.keys(result.templates_added).length;
  $("enroll-result").textContent = `Enrolled ${result.user_id}: ${result.images} photo(s), ` +
    `templates for ${variants} variant(s), ${result.total_templates} template(s) in all.`;
});

action("identify", async () => {
  draw("identify-canvas", null);
  const form = new FormData();
  form.append("image", file("identify-image", "a photo"));
  const result = await call("POST", "/v1/identify", { body: form, variant: true });
  draw("identify-canvas", result.face.box);
  $("identify-summary").textContent = result.candidates.length
    ? `Candidates (${result.variant}, threshold ${result.threshold.toFixed(4)}):`
    : `No enrolled user passes the threshold (${result.variant}, ${result.threshold.toFixed(4)}).`;
  const list = $("identify-candidates");
  list.replaceChildren();
  for (const candidate of result.candidates) {
    const item = document.createElement("li");
    item.textContent = `${candidate.user_id}: score ${candidate.score.toFixed(4)}`;
    list.append(item);
  }
});

action("delete", async () => {
  const user = $("delete-user").value.trim();
  if (!user) throw new ApiError("No user id", "Type the id of the user to delete.");
  const result = await call("DELETE", `/v1/users/${encodeURIComponent(user)}`);
  $("delete-result").textContent = `Deleted ${result.user_id}: ${result.deleted_templates} template(s).`;
});

$("verify-a").addEventListener("change", (e) => preview(e.target, "verify-a-canvas"));
$("verify-b").addEventListener("change", (e) => preview(e.target, "verify-b-canvas"));
$("identify-image").addEventListener("change", (e) => preview(e.target, "identify-canvas"));
$("reload-models").addEventListener("click", loadModels);
loadModels();
