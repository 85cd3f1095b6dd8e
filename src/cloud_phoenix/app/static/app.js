// The Try buttons of the endpoint catalogue: call the endpoint, show what came back.
"use strict";

function element(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

function targetUrl(section, form) {
  const url = new URL(section.dataset.path, window.location.origin);
  for (const input of form.querySelectorAll("input")) {
    if (input.value.trim() !== "") url.searchParams.set(input.name, input.value.trim());
  }
  return url;
}

function showMeta(meta, parts) {
  meta.replaceChildren();
  for (const [label, value, cls] of parts) {
    const item = element("span", "meta-item " + (cls || ""));
    item.append(element("b", "", label + " "), element("span", "", value));
    meta.append(item);
  }
}

function pem(label, text) {
  const block = element("div", "pem-block");
  block.append(element("h3", "", label));
  const pre = element("pre", "pem");
  pre.append(element("code", "", text));
  block.append(pre);
  return block;
}

function showBody(body, contentType, text, url, isHtml) {
  body.replaceChildren();
  if (contentType.includes("application/json")) {
    let data;
    try { data = JSON.parse(text); } catch (e) { data = null; }
    if (data && typeof data === "object") {
      const rest = Object.assign({}, data);
      const blocks = [];
      for (const field of ["cert", "key"]) {
        if (typeof rest[field] === "string" && rest[field].startsWith("-----BEGIN")) {
          blocks.push(pem(field === "cert" ? "Certificate (PEM)" : "Private key (PEM)", rest[field]));
          delete rest[field];
        }
      }
      const pre = element("pre", "json");
      pre.append(element("code", "", JSON.stringify(rest, null, 2)));
      body.append(pre, ...blocks);
      return;
    }
  }
  if (isHtml || contentType.includes("text/html")) {
    const link = element("a", "", "Open the page");
    link.href = url.pathname + url.search;
    body.append(link);
  }
  const pre = element("pre", "text");
  pre.append(element("code", "", text.length > 20000 ? text.slice(0, 20000) + "\n…" : text));
  body.append(pre);
}

async function tryEndpoint(section, form) {
  if (section.dataset.confirm && !window.confirm(section.dataset.confirm)) return;
  const result = section.querySelector(".result");
  const meta = result.querySelector(".meta");
  const body = result.querySelector(".body");
  const button = form.querySelector("button");
  const url = targetUrl(section, form);
  result.hidden = false;
  button.disabled = true;
  showMeta(meta, [["calling", url.pathname + url.search]]);
  body.replaceChildren();
  const started = performance.now();
  try {
    const response = await fetch(url, { headers: { "Accept": "application/json, text/plain, */*" } });
    const text = await response.text();
    const ms = (performance.now() - started).toFixed(1);
    showMeta(meta, [
      ["status", String(response.status), response.ok ? "ok" : "bad"],
      ["time", ms + " ms"],
      ["worker", response.headers.get("x-phoenix-worker") || response.headers.get("x-served-by") || "?"],
      ["request id", response.headers.get("x-request-id") || "?"],
    ]);
    showBody(body, response.headers.get("content-type") || "", text, url, section.dataset.html === "yes");
  } catch (error) {
    const ms = (performance.now() - started).toFixed(1);
    showMeta(meta, [["no response", "the connection closed after " + ms + " ms", "bad"]]);
    body.append(element("p", "note", section.dataset.path === "/crash"
      ? "Expected: the worker exited. Try another endpoint: the platform has already replaced it."
      : String(error)));
  } finally {
    button.disabled = false;
  }
}

document.addEventListener("DOMContentLoaded", () => {
  for (const section of document.querySelectorAll("section.endpoint")) {
    const form = section.querySelector("form.try");
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      tryEndpoint(section, form);
    });
  }
});
