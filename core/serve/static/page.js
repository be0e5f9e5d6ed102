// The ragloop web page: ask with a streamed answer and numbered sources, give feedback,
// and rate two blind answers from the keyboard. Model and user text only ever becomes
// text nodes (textContent, createTextNode), never markup.
"use strict";

const TOKEN = new URLSearchParams(location.search).get("token");
const $ = (id) => document.getElementById(id);

// ---- requests -------------------------------------------------------------------------

function headers() {
  const h = {"Content-Type": "application/json"};
  if (TOKEN) h["Authorization"] = "Bearer " + TOKEN;
  return h;
}

// The server's one-line error for a failed response, or a line naming the status.
async function failure(response) {
  let message = "";
  try {
    const body = await response.json();
    message = typeof body.error === "string" ? body.error
      : typeof body.detail === "string" ? body.detail : "";
  } catch (_) { /* not JSON: fall back to the status */ }
  return new Error(message || `the server answered ${response.status} ${response.statusText}`);
}

async function post(path, body, signal) {
  let response;
  try {
    response = await fetch(path, {method: "POST", headers: headers(),
                                  body: JSON.stringify(body), signal});
  } catch (err) {
    if (err.name === "AbortError") throw err;
    throw new Error("cannot reach the server: " + err.message);
  }
  if (!response.ok) throw await failure(response);
  return response;
}

// Each `data:` event of a text/event-stream body, parsed as JSON, as it arrives.
async function* events(response) {
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const {value, done} = await reader.read();
    buffer += decoder.decode(value || new Uint8Array(), {stream: !done});
    buffer = buffer.replace(/\r\n?/g, "\n");
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      const data = block.split("\n").filter((l) => l.startsWith("data:"))
        .map((l) => l.slice(5).replace(/^ /, "")).join("\n");
      if (data) yield JSON.parse(data);
    }
    if (done) return;
  }
}

// ---- showing things -------------------------------------------------------------------

function showError(message) {
  const el = $("error");
  // One line: the server's errors are one line already; a stray newline must not add more.
  el.textContent = message ? "Error: " + String(message).split("\n")[0] : "";
  el.hidden = !message;
}

function status(id, text) { $(id).textContent = text; }

// `text` as text nodes, each [n] naming a shown source made a button that highlights it.
function renderAnswer(el, text, count, prefix) {
  const parts = [];
  let last = 0;
  for (const m of text.matchAll(/\[(\d+)\]/g)) {
    const n = Number(m[1]);
    if (n < 1 || n > count) continue;
    parts.push(document.createTextNode(text.slice(last, m.index)));
    const cite = document.createElement("button");
    cite.type = "button";
    cite.className = "cite";
    cite.textContent = `[${n}]`;
    cite.setAttribute("aria-label", `Show source ${n}`);
    cite.addEventListener("click", () => highlight(prefix, n));
    parts.push(cite);
    last = m.index + m[0].length;
  }
  parts.push(document.createTextNode(text.slice(last)));
  el.replaceChildren(...parts);
}

function highlight(prefix, n) {
  for (const li of document.querySelectorAll(`[id^="${prefix}-source-"]`)) {
    li.classList.toggle("highlight", li.id === `${prefix}-source-${n}`);
  }
  const target = $(`${prefix}-source-${n}`);
  if (target) {
    target.scrollIntoView({block: "nearest"});
    target.focus();
  }
}

// The numbered sources; with `marks`, a relevant / not relevant pair of toggles on each.
function renderSources(list, sources, prefix, marks) {
  list.replaceChildren();
  for (const s of sources) {
    const li = document.createElement("li");
    li.id = `${prefix}-source-${s.n}`;
    li.value = s.n;
    li.tabIndex = -1;
    const head = document.createElement("div");
    head.className = "source-head";
    const where = document.createElement("span");
    where.className = "path";
    where.textContent = s.path;
    head.append(where);
    if (typeof s.score === "number") {
      const score = document.createElement("span");
      score.className = "score-value";
      score.textContent = `score ${s.score.toFixed(3)}`;
      head.append(" ", score);
    }
    const text = document.createElement("p");
    text.className = "passage";
    text.textContent = s.text;
    li.append(head, text);
    if (marks) li.append(markButtons(s.n));
    list.append(li);
  }
}

// ---- ask ------------------------------------------------------------------------------

const ask = {trace: null, sources: [], answer: "", marks: {}, controller: null, ready: false};

function markButtons(n) {
  const group = document.createElement("div");
  group.className = "row marks";
  group.setAttribute("role", "group");
  group.setAttribute("aria-label", `Is source ${n} relevant?`);
  const make = (label, value) => {
    const b = document.createElement("button");
    b.type = "button";
    b.textContent = label;
    b.setAttribute("aria-pressed", "false");
    b.dataset.mark = String(value);
    b.setAttribute("aria-label", `Source ${n}: ${label.toLowerCase()}`);
    b.addEventListener("click", () => {
      // Pressing the pressed one again takes the mark back.
      const on = ask.marks[n] !== value;
      if (on) ask.marks[n] = value; else delete ask.marks[n];
      for (const other of group.querySelectorAll("button")) {
        other.setAttribute("aria-pressed", String(on && other.dataset.mark === String(value)));
      }
    });
    return b;
  };
  group.append(make("Relevant", true), make("Not relevant", false));
  return group;
}

function setFeedbackEnabled(on) {
  ask.ready = on;
  for (const el of $("feedback").querySelectorAll("button, input, textarea")) el.disabled = !on;
}

function resetAsk() {
  Object.assign(ask, {trace: null, sources: [], answer: "", marks: {}});
  $("answer").replaceChildren();
  $("sources").replaceChildren();
  for (const b of document.querySelectorAll(".thumb")) b.setAttribute("aria-pressed", "false");
  for (const r of document.querySelectorAll('input[name="score"]')) r.checked = false;
  $("correction").value = "";
  $("comment").value = "";
  status("feedback-status", "");
  setFeedbackEnabled(false);
}

let frame = 0;
function drawAnswer() {
  // Many deltas a second: draw once per frame, not once per piece.
  if (frame) return;
  frame = requestAnimationFrame(() => {
    frame = 0;
    renderAnswer($("answer"), ask.answer, ask.sources.length, "ask");
  });
}

function onEvent(event) {
  if (event.error) throw new Error(event.error);
  if (event.sources) {
    ask.sources = event.sources;
    renderSources($("sources"), event.sources, "ask", true);
  }
  if (event.trace_id) ask.trace = event.trace_id;
  if (typeof event.delta === "string") {
    ask.answer += event.delta;
    status("ask-status", "Answering\u2026");
    drawAnswer();
  }
  if (event.done) {
    if (typeof event.answer === "string") ask.answer = event.answer;
    return event;
  }
  return null;
}

async function askQuestion(question) {
  if (ask.controller) ask.controller.abort();
  const controller = ask.controller = new AbortController();
  showError("");
  resetAsk();
  $("result").hidden = false;
  $("answer").setAttribute("aria-busy", "true");
  $("ask-button").disabled = true;
  status("ask-status", "Retrieving passages\u2026");
  try {
    const response = await post("/v1/ask", {question, stream: true}, controller.signal);
    let done = null;
    if ((response.headers.get("content-type") || "").includes("text/event-stream")) {
      for await (const event of events(response)) done = onEvent(event) || done;
    } else {
      const body = await response.json();  // a server that does not stream answers whole
      onEvent({sources: body.sources, trace_id: body.trace_id});
      done = onEvent({done: true, answer: body.answer, cached: body.cached});
    }
    if (!done) throw new Error("the answer stream ended before the answer was complete");
    renderAnswer($("answer"), ask.answer, ask.sources.length, "ask");
    status("ask-status", (done.cached ? "Answered from the cache. " : "Answered. ")
           + `Trace ${ask.trace}.`);
    setFeedbackEnabled(Boolean(ask.trace));
  } catch (err) {
    if (err.name === "AbortError") return;
    status("ask-status", "");
    $("result").hidden = !ask.sources.length;  // keep what came before the error, if any
    showError(err.message);
  } finally {
    if (ask.controller === controller) {
      ask.controller = null;
      $("ask-button").disabled = false;
      $("answer").setAttribute("aria-busy", "false");
    }
  }
}

async function sendFeedback(body, what) {
  if (!ask.trace) return;
  showError("");
  status("feedback-status", "Sending\u2026");
  try {
    await post("/v1/feedback", {trace_id: ask.trace, ...body});
    status("feedback-status", `Saved: ${what}.`);
  } catch (err) {
    status("feedback-status", "");
    showError(err.message);
  }
}

function thumbs(value) {
  if (!ask.ready) return;
  $("thumbs-up").setAttribute("aria-pressed", String(value === "up"));
  $("thumbs-down").setAttribute("aria-pressed", String(value === "down"));
  sendFeedback({thumbs: value}, `thumbs ${value}`);
}

function score(value) {
  if (!ask.ready) return;
  const radio = document.querySelector(`input[name="score"][value="${value}"]`);
  radio.checked = true;
  sendFeedback({score: value}, `score ${value}`);
}

function sendDetails() {
  const body = {};
  const correction = $("correction").value.trim();
  const comment = $("comment").value.trim();
  if (correction) body.correction = correction;
  if (comment) body.comment = comment;
  if (Object.keys(ask.marks).length) body.passages = {...ask.marks};
  if (!Object.keys(body).length) {
    showError("nothing to send: write a correction or a comment, or mark a passage");
    return;
  }
  const what = ["correction", "comment", "passages"].filter((k) => k in body)
    .map((k) => (k === "passages" ? "passage marks" : k)).join(", ");
  sendFeedback(body, what);
}

// ---- rate two answers -----------------------------------------------------------------

const rate = {compare: null, busy: false};
const VERDICTS = {a: "A is better", b: "B is better", tie: "a tie", "both-bad": "both bad"};

function setVerdictsEnabled(on) {
  for (const b of document.querySelectorAll("[data-verdict]")) b.disabled = !on;
}

async function compare(question) {
  if (rate.busy) return;
  rate.busy = true;
  showError("");
  rate.compare = null;
  setVerdictsEnabled(false);
  $("pair").hidden = true;  // the last pair's answers must not pass for the new question's
  $("compare-button").disabled = true;
  status("compare-status", "Generating two answers\u2026");
  try {
    const body = await (await post("/v1/compare", {question})).json();
    const count = (body.sources || []).length;
    renderAnswer($("answer-a"), body.a.answer, count, "compare");
    renderAnswer($("answer-b"), body.b.answer, count, "compare");
    renderSources($("compare-sources"), body.sources || [], "compare", false);
    $("pair").hidden = false;
    rate.compare = body.compare_id;
    setVerdictsEnabled(true);
    status("compare-status", "Which answer is better? Press a, b, t or x.");
    document.querySelector('[data-verdict="a"]').focus();
  } catch (err) {
    status("compare-status", "");
    showError(err.message);
  } finally {
    rate.busy = false;
    $("compare-button").disabled = false;
  }
}

async function verdict(value) {
  const id = rate.compare;
  if (!id) return;
  rate.compare = null;  // one verdict per pair, however fast the keys come
  setVerdictsEnabled(false);
  showError("");
  try {
    await post("/v1/feedback", {compare_id: id, verdict: value});
    status("compare-status", `Saved: ${VERDICTS[value]}. Type the next question.`);
    $("compare-question").focus();
    $("compare-question").select();
  } catch (err) {
    rate.compare = id;
    setVerdictsEnabled(true);
    showError(err.message);
  }
}

// ---- tabs and keys --------------------------------------------------------------------

function selectTab(tab) {
  for (const t of document.querySelectorAll('[role="tab"]')) {
    const on = t === tab;
    t.setAttribute("aria-selected", String(on));
    t.tabIndex = on ? 0 : -1;
    $(t.getAttribute("aria-controls")).hidden = !on;
  }
  tab.focus();
}

function onTabKey(event) {
  const tabs = [...document.querySelectorAll('[role="tab"]')];
  const i = tabs.indexOf(event.target);
  const next = {ArrowRight: i + 1, ArrowLeft: i - 1, Home: 0, End: tabs.length - 1}[event.key];
  if (next === undefined) return;
  event.preventDefault();
  selectTab(tabs[(next + tabs.length) % tabs.length]);
}

function typing(target) {
  return target.closest && target.closest("input:not([type=radio]), textarea, select");
}

function onKey(event) {
  if (event.key === "Escape" && typing(event.target)) {
    event.target.blur();  // out of the text box, so the rating keys work
    return;
  }
  if (event.ctrlKey || event.metaKey || event.altKey || typing(event.target)) return;
  const asking = !$("panel-ask").hidden;
  const key = event.key.toLowerCase();
  let act = null;
  if (key === "/") {
    act = () => $(asking ? "question" : "compare-question").focus();
  } else if (asking && ask.ready) {
    if (key === "u") act = () => thumbs("up");
    else if (key === "d") act = () => thumbs("down");
    else if (/^[1-5]$/.test(key)) act = () => score(Number(key));
  } else if (!asking && rate.compare) {
    const value = {a: "a", b: "b", t: "tie", x: "both-bad"}[key];
    if (value) act = () => verdict(value);
  }
  if (act) {
    event.preventDefault();
    act();
  }
}

// Enter sends the form; Shift+Enter (or Enter while an input method composes) is a newline.
function enterSubmits(textarea) {
  textarea.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      textarea.form.requestSubmit();
    }
  });
}

function start() {
  for (const t of document.querySelectorAll('[role="tab"]')) {
    t.addEventListener("click", () => selectTab(t));
    t.addEventListener("keydown", onTabKey);
  }
  enterSubmits($("question"));
  enterSubmits($("compare-question"));
  $("ask-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const q = $("question").value.trim();
    if (q) askQuestion(q);
  });
  $("compare-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const q = $("compare-question").value.trim();
    if (q) compare(q);
  });
  $("thumbs-up").addEventListener("click", () => thumbs("up"));
  $("thumbs-down").addEventListener("click", () => thumbs("down"));
  for (const r of document.querySelectorAll('input[name="score"]')) {
    r.addEventListener("change", () => score(Number(r.value)));
  }
  $("send-details").addEventListener("click", sendDetails);
  for (const b of document.querySelectorAll("[data-verdict]")) {
    b.addEventListener("click", () => verdict(b.dataset.verdict));
  }
  document.addEventListener("keydown", onKey);
  setFeedbackEnabled(false);
  setVerdictsEnabled(false);
  $("question").focus();
  document.body.dataset.ready = "true";
}

start();
