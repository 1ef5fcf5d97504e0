// lore's page: ask (streamed, with citations you can open), search, and
// documents. It talks to the same HTTP API as every other client. Every
// piece of text from the server or a document goes into the page as text
// (textContent, text nodes), never as HTML.
"use strict";

const KEY_STORAGE = "lore-api-key";
const COLLECTION_STORAGE = "lore-collection";
const PAGE_SIZE = 20;
const MAX_BUSY_RETRIES = 5;

const $ = (id) => document.getElementById(id);

// Timings the browser test reads: Enter to the first streamed token.
window.loreTimings = { asks: [] };

// ---------------------------------------------------------------- helpers

/** An element with attributes and children (strings become text nodes). */
function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === false || value === null || value === undefined) continue;
    if (name === "class") node.className = value;
    else if (name.startsWith("data-")) node.setAttribute(name, value);
    else if (name in node) node[name] = value;
    else node.setAttribute(name, value);
  }
  for (const child of children) {
    if (child === null || child === undefined) continue;
    node.append(typeof child === "string" ? document.createTextNode(child) : child);
  }
  return node;
}

function clear(node) {
  node.replaceChildren();
}

/** Shows `message` (an error unless kind is "info"; info fades after a while). */
function notice(message, kind = "error") {
  const box = $("notice");
  box.textContent = message;
  box.className = kind === "info" ? "info" : "";
  box.hidden = !message;
  if (message && kind === "info") {
    setTimeout(() => {
      if (box.textContent === message) box.hidden = true;
    }, 6000);
  }
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

// ------------------------------------------------------------------- keys

function apiKey() {
  return sessionStorage.getItem(KEY_STORAGE) || "";
}

function headers(extra = {}) {
  const key = apiKey();
  return key ? { ...extra, Authorization: `Bearer ${key}` } : extra;
}

function showKeyForm(show) {
  $("key-form").hidden = !show;
  $("key-button").setAttribute("aria-expanded", String(show));
  if (show) $("key-input").focus();
}

let scope = "read"; // "write" when the key may add and delete documents

/** Asks the server what the current key may do; shows write actions. */
async function refreshScope() {
  const response = await api("/v1/whoami");
  if (!response) return false;
  const who = await response.json();
  scope = who.role === "read" ? "read" : "write";
  $("upload").hidden = scope !== "write";
  $("key-button").textContent = who.keys_required ? `API key (${who.role})` : "API key";
  await refreshCollections();
  return true;
}

// ------------------------------------------------------------ collections

/** The collection every request works on (the server checks the key). */
function collection() {
  return sessionStorage.getItem(COLLECTION_STORAGE) || "default";
}

/** `path` with `?collection=` for the routes that work on one. */
function inCollection(path) {
  if (!path.startsWith("/v1/") || path.startsWith("/v1/whoami") || path.startsWith("/v1/collections")) {
    return path;
  }
  const separator = path.includes("?") ? "&" : "?";
  return `${path}${separator}collection=${encodeURIComponent(collection())}`;
}

/** Fills the picker with the collections this key may use. */
async function refreshCollections() {
  const response = await api("/v1/collections");
  if (!response) return;
  const names = (await response.json()).collections.map((c) => c.name);
  const picker = $("collection");
  clear(picker);
  for (const name of names) picker.append(el("option", { value: name }, name));
  if (!names.includes(collection()) && names.length > 0) {
    sessionStorage.setItem(COLLECTION_STORAGE, names[0]);
  }
  picker.value = collection();
  $("collection-picker").hidden = names.length < 2;
}

// -------------------------------------------------------------------- API

/** The error message of a failed response, from its JSON body if any. */
async function errorMessage(response) {
  try {
    const body = await response.json();
    if (body && body.error && body.error.message) return body.error.message;
  } catch (_) {
    // Not JSON: fall through to the status line.
  }
  return `${response.status} ${response.statusText}`;
}

/**
 * fetch() with the key, turning 401/403/429 into plain messages. A 429 is
 * retried after its Retry-After. Resolves to the response when it is OK,
 * else null (the message is shown).
 */
async function api(path, init = {}, { signal } = {}) {
  for (let attempt = 0; ; attempt++) {
    const response = await fetch(inCollection(path), {
      ...init,
      signal,
      headers: headers(init.headers || {}),
      credentials: "omit",
      cache: "no-store",
    });
    if (response.ok) {
      if (attempt > 0) notice("");
      return response;
    }
    if (response.status === 429 && attempt < MAX_BUSY_RETRIES) {
      const seconds = Math.max(1, parseInt(response.headers.get("Retry-After") || "2", 10) || 2);
      await countdown(seconds, signal);
      continue;
    }
    await explain(response);
    return null;
  }
}

/** "busy, retrying in N s", counting down. */
async function countdown(seconds, signal) {
  for (let left = seconds; left > 0; left--) {
    if (signal && signal.aborted) throw new DOMException("stopped", "AbortError");
    notice(`The server is busy, retrying in ${left} s…`, "info");
    await sleep(1000);
  }
}

async function explain(response) {
  const message = await errorMessage(response);
  if (response.status === 401) {
    notice(apiKey() ? "That API key was not accepted. Enter a valid key." : "This server needs an API key. Enter one to continue.");
    showKeyForm(true);
  } else if (response.status === 403) {
    notice(`Not allowed with this key: ${message}`);
  } else if (response.status === 429) {
    notice("The server is still busy. Try again in a moment.");
  } else {
    notice(message);
  }
}

// ------------------------------------------------------------------- tabs

const TABS = ["ask", "search", "docs"];

function showTab(name) {
  for (const tab of TABS) {
    const selected = tab === name;
    $(`tab-${tab}`).setAttribute("aria-selected", String(selected));
    $(`view-${tab}`).hidden = !selected;
  }
  if (name === "docs") loadDocuments();
}

// -------------------------------------------------------------- citations

/**
 * The answer as nodes: code between backticks as <code> (its brackets are
 * code, never citations), every [n] / [n, m] elsewhere turned into links.
 */
function linkCitations(text, citations) {
  const out = [];
  const parts = text.split("`");
  parts.forEach((part, i) => {
    // Odd parts sit between backticks; an unclosed last one is code too.
    if (i % 2 === 1) {
      if (part) out.push(el("code", {}, part));
    } else out.push(...linkProse(part, citations));
  });
  return out;
}

/** Prose as text nodes with every [n] / [n, m] turned into links. */
function linkProse(text, citations) {
  const byNumber = new Map(citations.map((c) => [c.n, c]));
  const out = [];
  const pattern = /\[(\d+(?:\s*,\s*\d+)*)\]/g;
  let last = 0;
  for (const match of text.matchAll(pattern)) {
    out.push(document.createTextNode(text.slice(last, match.index)));
    const numbers = match[1].split(",").map((n) => parseInt(n.trim(), 10));
    out.push(document.createTextNode("["));
    numbers.forEach((n, i) => {
      if (i > 0) out.push(document.createTextNode(", "));
      const citation = byNumber.get(n);
      if (citation) {
        const link = el("a", { href: `#source-${n}`, class: "citation", "data-n": String(n) }, String(n));
        link.addEventListener("click", (event) => {
          event.preventDefault();
          focusSource(n);
          openPassage(citation.chunk_id);
        });
        out.push(link);
      } else {
        out.push(document.createTextNode(String(n)));
      }
    });
    out.push(document.createTextNode("]"));
    last = match.index + match[0].length;
  }
  out.push(document.createTextNode(text.slice(last)));
  return out;
}

function focusSource(n) {
  for (const item of $("sources").children) item.classList.remove("cited-target");
  const item = $(`source-${n}`);
  if (item) item.classList.add("cited-target");
}

function where(hit) {
  const heading = hit.heading && hit.heading.length ? ` — ${hit.heading.join(" › ")}` : "";
  const range = hit.byte_range ? ` (bytes ${hit.byte_range.start}–${hit.byte_range.end})` : "";
  return `${hit.path}${heading}${range}`;
}

function renderSources(citations) {
  const list = $("sources");
  clear(list);
  if (!citations.length) {
    list.append(el("li", { class: "meta" }, "No sources cited."));
    return;
  }
  for (const c of citations) {
    const open = el("button", { type: "button", class: "open-passage" }, "Open passage");
    open.addEventListener("click", () => {
      focusSource(c.n);
      openPassage(c.chunk_id);
    });
    list.append(el("li", { id: `source-${c.n}`, value: c.n }, el("span", { class: "where" }, where(c)), " ", open));
  }
}

/**
 * Opens a chunk's text with the passage highlighted, in its context; a
 * quote's byte range (in the chunk's text) is highlighted inside it.
 */
async function openPassage(chunkId, quote = null) {
  const response = await api(`/v1/chunks/${encodeURIComponent(chunkId)}`);
  if (!response) return;
  const passage = await response.json();
  $("passage-title").textContent = passage.path;
  $("passage-where").textContent = where(passage);
  const box = $("passage");
  clear(box);
  const mark = el("mark", { id: "passage-mark" }, ...quoted(passage.text, quote));
  box.append(el("span", { class: "context" }, passage.before), mark, el("span", { class: "context" }, passage.after));
  $("passage-panel").hidden = false;
  mark.scrollIntoView({ block: "center" });
  box.focus({ preventScroll: true });
}

/** A chunk's text, with the quote's bytes (if any) in a <q class="quote">. */
function quoted(text, quote) {
  if (!quote) return [text];
  const bytes = new TextEncoder().encode(text);
  const decode = (a, b) => new TextDecoder().decode(bytes.slice(a, b));
  const { start, end } = quote.range;
  if (end > bytes.length || decode(start, end) !== quote.text) return [text];
  return [decode(0, start), el("strong", { class: "quote" }, decode(start, end)), decode(end, bytes.length)];
}

function renderQuotes(quotes) {
  const list = $("quotes");
  clear(list);
  $("quotes-fold").hidden = !quotes.length;
  for (const q of quotes) {
    const show = el("button", { type: "button", class: "open-passage" }, "Show in passage");
    show.addEventListener("click", () => openPassage(q.chunk_id, q));
    list.append(el("li", {}, `[${q.n}] `, el("q", {}, q.text), " ", show));
  }
}

// -------------------------------------------------------------------- ask

let running = null; // the AbortController of the answer in progress

function askBody(question) {
  const number = (id) => Number($(id).value);
  const technique = $("opt-technique").value;
  const techniques = {};
  if (technique) techniques[technique] = true;
  if (number("opt-samples") > 0) techniques.samples = number("opt-samples");
  if ($("opt-reflect").checked) techniques.reflect = true;
  const body = {
    question,
    k: number("opt-k"),
    temperature: number("opt-temperature"),
    max_tokens: number("opt-max-tokens"),
    techniques,
    stream: true,
  };
  const whole = $("opt-document").value.trim();
  if (whole) body.document = whole;
  if (summarizing) body.summarize = true;
  summarizing = false;
  return body;
}

let summarizing = false; // the next answer is a summary of opt-document

/** Asks for a summary of `doc`, read whole, on the Ask tab. */
function summarize(doc) {
  showTab("ask");
  $("opt-document").value = doc.id;
  $("question").value = `Summarize ${doc.path}`;
  summarizing = true;
  $("ask-form").requestSubmit();
}

/** Splits an SSE byte stream into {event, data} objects. */
async function* sseEvents(response) {
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += decoder.decode(value, { stream: true });
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      let event = "message";
      const data = [];
      for (const line of block.split("\n")) {
        if (line.startsWith("event:")) event = line.slice(6).trim();
        else if (line.startsWith("data:")) data.push(line.slice(5).replace(/^ /, ""));
      }
      yield { event, data: data.join("\n") };
    }
  }
}

function setRunning(controller) {
  running = controller;
  $("stop-button").disabled = !controller;
  $("ask-button").disabled = !!controller;
  $("answer").setAttribute("aria-busy", String(!!controller));
}

async function ask(event) {
  event.preventDefault();
  const question = $("question").value.trim();
  if (!question || running) return;
  const started = performance.now();
  const timing = { question, started, first_token_ms: null, done_ms: null };
  window.loreTimings.asks.push(timing);
  const controller = new AbortController();
  setRunning(controller);
  notice("");
  $("answer-panel").hidden = false;
  $("passage-panel").hidden = true;
  $("abstained").hidden = true;
  $("reasoning-fold").hidden = true;
  clear($("answer"));
  clear($("sources"));
  $("answer-meta").textContent = "Retrieving and reading…";
  try {
    const response = await api("/v1/ask", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(askBody(question)),
    }, { signal: controller.signal });
    if (!response) {
      $("answer-meta").textContent = "";
      return;
    }
    for await (const { event: name, data } of sseEvents(response)) {
      if (name === "token") {
        $("answer").append(document.createTextNode(JSON.parse(data).text));
        if (timing.first_token_ms === null) {
          timing.first_token_ms = performance.now() - started;
          $("answer-meta").textContent = `First token after ${Math.round(timing.first_token_ms)} ms…`;
        }
      } else if (name === "done") {
        timing.done_ms = performance.now() - started;
        showAnswer(JSON.parse(data), timing);
      } else if (name === "error") {
        const body = JSON.parse(data);
        notice(body.error ? body.error.message : "The answer failed.");
        $("answer-meta").textContent = "";
      }
    }
  } catch (err) {
    if (err.name === "AbortError") {
      $("answer-meta").textContent = "Stopped.";
    } else {
      notice(`The answer could not be read: ${err.message}`);
    }
  } finally {
    setRunning(null);
  }
}

function showAnswer(answer, timing) {
  const box = $("answer");
  clear(box);
  box.append(...linkCitations(answer.answer, answer.citations));
  $("abstained").hidden = !answer.abstained;
  if (answer.reasoning) {
    $("reasoning").textContent = answer.reasoning;
    $("reasoning-fold").hidden = false;
  }
  renderSources(answer.citations);
  renderQuotes(answer.quotes || []);
  const parts = [];
  if (timing.first_token_ms !== null) parts.push(`first token ${Math.round(timing.first_token_ms)} ms`);
  parts.push(`answer ${Math.round(timing.done_ms)} ms`);
  if (answer.votes && answer.votes.length) {
    parts.push(`votes: ${answer.votes.map((v) => `${v.count}× ${v.answer.slice(0, 40)}`).join("; ")}`);
  }
  if (answer.reflection) parts.push(`reflection: ${answer.reflection.verdict}`);
  if (typeof answer.support === "number") {
    parts.push(`support ${Math.round(answer.support * 100)}%: the best source holds that much of what was asked`);
  }
  if (answer.abstained_because) {
    const why = {
      no_match: "nothing close enough was found",
      unsupported: "what was found does not cover the question",
      model: "the model found no answer in the sources",
      reflection: "reflection withdrew the draft",
      unsourced: "the answer named what no source holds",
    };
    parts.push(why[answer.abstained_because] || answer.abstained_because);
    if (answer.unsourced) parts.push(`withdrawn, it named: ${answer.unsourced.names.join(", ")}`);
  }
  if (answer.corrected_citations && answer.corrected_citations.length) {
    parts.push(`${answer.corrected_citations.length} citation(s) corrected`);
  }
  $("answer-meta").textContent = parts.join(" · ");
}

function stop() {
  if (running) running.abort();
}

// ----------------------------------------------------------------- search

function searchFilter() {
  const filter = {};
  const path = $("filter-path").value.trim();
  const type = $("filter-type").value.trim();
  if (path) filter.path = path;
  if (type) filter.type = type;
  const metadata = {};
  for (const pair of $("filter-metadata").value.split(",")) {
    const [key, ...rest] = pair.split("=");
    if (key.trim() && rest.length) metadata[key.trim()] = rest.join("=").trim();
  }
  if (Object.keys(metadata).length) filter.metadata = metadata;
  return filter;
}

const RETRIEVER_NAMES = { dense: "dense", bm25: "BM25" };

async function search(event) {
  event.preventDefault();
  const query = $("query").value.trim();
  if (!query) return;
  notice("");
  const list = $("hits");
  clear(list);
  $("search-meta").textContent = "Searching…";
  const response = await api("/v1/search", {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ query, k: Number($("search-k").value), mode: $("search-mode").value, filter: searchFilter() }),
  });
  if (!response) {
    $("search-meta").textContent = "";
    return;
  }
  const result = await response.json();
  $("search-meta").textContent = `${result.hits.length} hit(s) in ${Math.round(result.timings.total_ms)} ms`;
  for (const hit of result.hits) {
    const found = hit.found_by || [];
    const badge = found.length === 2 ? "dense + BM25" : found.map((r) => RETRIEVER_NAMES[r] || r).join("");
    const open = el("a", { href: `#chunk-${hit.chunk_id}` }, hit.path);
    open.addEventListener("click", (e) => {
      e.preventDefault();
      openPassage(hit.chunk_id);
    });
    list.append(el("li", { class: "hit" },
      open,
      el("span", { class: "badge", title: "score" }, hit.score.toFixed(3)),
      badge ? el("span", { class: "badge found-by", title: "found by" }, badge) : null,
      el("div", { class: "meta" }, where(hit)),
      el("p", { class: "snippet" }, hit.text.length > 400 ? `${hit.text.slice(0, 400)}…` : hit.text)));
  }
}

// -------------------------------------------------------------- documents

let offset = 0;

function formatBytes(n) {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) {
    n /= 1024;
    i++;
  }
  return `${n.toFixed(i ? 1 : 0)} ${units[i]}`;
}

async function loadStatus() {
  const response = await api("/v1/status");
  if (!response) return;
  const status = await response.json();
  const box = $("index-status");
  clear(box);
  const rows = [
    ["Documents", String(status.documents)],
    ["Chunks", String(status.chunks)],
    ["Size on disk", formatBytes(status.index_bytes)],
    ["Consistent", status.consistent ? "yes" : "no — run lore status on the server"],
    ["Embedder", `${status.embedder.id} (${status.embedder.dim} dims)`],
  ];
  for (const [name, value] of rows) box.append(el("dt", {}, name), el("dd", {}, value));
}

async function loadDocuments() {
  loadStatus();
  const filter = encodeURIComponent($("docs-filter").value.trim());
  const response = await api(`/v1/documents?offset=${offset}&limit=${PAGE_SIZE}&path=${filter}`);
  if (!response) return;
  const page = await response.json();
  const body = $("docs");
  clear(body);
  for (const doc of page.documents) {
    const cells = [
      el("td", { class: "path" }, doc.path),
      el("td", {}, doc.kind),
      el("td", {}, String(doc.chunks.length)),
      el("td", {}, summarizeButton(doc), scope === "write" ? deleteButton(doc) : null),
    ];
    body.append(el("tr", { "data-doc-id": doc.id }, ...cells));
  }
  const last = Math.min(offset + page.documents.length, page.total);
  $("docs-page").textContent = page.total ? `${offset + 1}–${last} of ${page.total}` : "No documents.";
  $("docs-prev").disabled = offset === 0;
  $("docs-next").disabled = last >= page.total;
}

/** Summarize: the whole document, on the Ask tab. */
function summarizeButton(doc) {
  const button = el("button", { type: "button", class: "summarize", "aria-label": `Summarize ${doc.path}` }, "Summarize");
  button.addEventListener("click", () => summarize(doc));
  return button;
}

/** Delete, then "Really delete?" on the same button. */
function deleteButton(doc) {
  const button = el("button", { type: "button", class: "delete", "aria-label": `Delete ${doc.path}` }, "Delete");
  let armed = false;
  button.addEventListener("click", async () => {
    if (!armed) {
      armed = true;
      button.textContent = "Really delete?";
      return;
    }
    button.disabled = true;
    const response = await api(`/v1/documents/${encodeURIComponent(doc.id)}`, { method: "DELETE" });
    if (response) {
      notice(`Deleted ${doc.path}.`, "info");
      loadDocuments();
    } else {
      button.disabled = false;
    }
  });
  return button;
}

/** Uploads one file with a progress bar and the server's verdict. */
function upload(file) {
  const progress = el("progress", { max: 100, value: 0 });
  const verdict = el("span", { class: "verdict" }, "uploading…");
  const item = el("li", { class: "upload" }, el("span", { class: "name" }, file.name), progress, verdict);
  $("uploads").append(item);
  const form = new FormData();
  form.append("file", file, file.name);
  return new Promise((resolve) => {
    const xhr = new XMLHttpRequest();
    xhr.open("POST", inCollection("/v1/documents"));
    const key = apiKey();
    if (key) xhr.setRequestHeader("Authorization", `Bearer ${key}`);
    xhr.upload.addEventListener("progress", (e) => {
      if (e.lengthComputable) progress.value = Math.round((100 * e.loaded) / e.total);
    });
    xhr.addEventListener("load", () => {
      progress.value = 100;
      let body = null;
      try {
        body = JSON.parse(xhr.responseText);
      } catch (_) {
        body = null;
      }
      if (xhr.status >= 200 && xhr.status < 300) {
        const n = body && body.documents ? body.documents.length : 0;
        verdict.textContent = `added (${n} document${n === 1 ? "" : "s"})`;
        verdict.className = "verdict ok";
      } else {
        const reason = body && body.error ? body.error.message : `${xhr.status} ${xhr.statusText}`;
        verdict.textContent = `skipped: ${reason}`;
        verdict.className = "verdict bad";
        if (xhr.status === 401) showKeyForm(true);
      }
      resolve();
    });
    xhr.addEventListener("error", () => {
      verdict.textContent = "failed: the connection was lost";
      verdict.className = "verdict bad";
      resolve();
    });
    xhr.send(form);
  });
}

async function uploadAll(files) {
  // One at a time: the server ingests uploads in turn anyway.
  for (const file of files) await upload(file);
  loadDocuments();
}

// ------------------------------------------------------------------ start

function wire() {
  for (const tab of TABS) $(`tab-${tab}`).addEventListener("click", () => showTab(tab));
  $("key-button").addEventListener("click", () => showKeyForm($("key-form").hidden));
  $("key-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    sessionStorage.setItem(KEY_STORAGE, $("key-input").value.trim());
    $("key-input").value = "";
    notice("");
    if (await refreshScope()) {
      showKeyForm(false);
      notice("Key accepted.", "info");
    }
  });
  $("key-forget").addEventListener("click", () => {
    sessionStorage.removeItem(KEY_STORAGE);
    notice("Key forgotten.", "info");
    refreshScope();
  });
  $("collection").addEventListener("change", (event) => {
    sessionStorage.setItem(COLLECTION_STORAGE, event.target.value);
    offset = 0;
    notice(`Working on the collection ${event.target.value}.`, "info");
    if (!$("view-docs").hidden) loadDocuments();
  });
  $("ask-form").addEventListener("submit", ask);
  $("question").addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      $("ask-form").requestSubmit();
    }
  });
  $("stop-button").addEventListener("click", stop);
  document.addEventListener("keydown", (event) => {
    if (event.key === "Escape") stop();
  });
  $("search-form").addEventListener("submit", search);
  $("passage-close").addEventListener("click", () => {
    $("passage-panel").hidden = true;
  });
  $("docs-filter-form").addEventListener("submit", (event) => {
    event.preventDefault();
    offset = 0;
    loadDocuments();
  });
  $("docs-prev").addEventListener("click", () => {
    offset = Math.max(0, offset - PAGE_SIZE);
    loadDocuments();
  });
  $("docs-next").addEventListener("click", () => {
    offset += PAGE_SIZE;
    loadDocuments();
  });
  $("file-input").addEventListener("change", (event) => {
    uploadAll([...event.target.files]);
    event.target.value = "";
  });
  const zone = $("drop-zone");
  zone.addEventListener("dragover", (event) => {
    event.preventDefault();
    zone.classList.add("over");
  });
  zone.addEventListener("dragleave", () => zone.classList.remove("over"));
  zone.addEventListener("drop", (event) => {
    event.preventDefault();
    zone.classList.remove("over");
    uploadAll([...event.dataTransfer.files]);
  });
}

wire();
refreshScope();
