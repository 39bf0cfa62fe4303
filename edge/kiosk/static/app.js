/* The kiosk page: live preview -> capture/upload -> result, symptoms, assistant chat, report; New patient.
 *
 * Vanilla JS, no build step, nothing fetched from outside the device. Every user-facing string comes from
 * the catalogue (state.catalogue, keys like "action.capture"); the server's own `error` text is shown only
 * as a smaller "Details" line under a translated message. DOM is built with textContent only: nothing the
 * server or the model says is ever parsed as HTML.
 */
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  const body = document.body;

  const SEVERITY = { routine: 0, soon: 1, unsure: 1, urgent: 2 };
  const MAX_BARS = 8; // more labels than this (e.g. a test pack) are folded into one "all other kinds" bar
  const POLL_MS = 700;
  const POLL_NO_CAMERA_MS = 5000;
  const POLL_ERROR_MS = 2500;

  const state = {
    lang: body.dataset.lang,
    catalogue: JSON.parse($("catalogue").textContent),
    healthWorker: body.dataset.healthWorker === "true",
    idleTimeoutMs: Math.max(10, Number(body.dataset.idleTimeoutS) || 180) * 1000,
    maxChatChars: Number(body.dataset.maxChatChars) || 500,
    screen: "preview",
    camera: null, // null: not known yet, true/false from /api/preview
    preview: { ok: false, guidance: [], failed: false },
    retake: null, // {issues, guidance} of the last 422
    result: null,
    symptomUrgency: null,
    symptomReasons: [],
    redflag: null, // {text, urgency, flags}
    chatDisabled: false,
    chatBusy: false,
    chatAbort: null,
    busy: false,
    generation: 0, // bumped by New patient: answers to requests from before it are dropped
    lastActivity: Date.now(),
    lastHeartbeat: 0,
    heartbeatMs: 30000, // at most one keep-alive per this while a person reads a result
  };

  // ---------------------------------------------------------------------------------------------- strings
  function t(key, vars) {
    let text = Object.prototype.hasOwnProperty.call(state.catalogue, key) ? state.catalogue[key] : key;
    if (vars) text = text.replace(/\{(\w+)\}/g, (whole, name) => (name in vars ? String(vars[name]) : whole));
    return text;
  }

  function has(key) {
    return Object.prototype.hasOwnProperty.call(state.catalogue, key);
  }

  function labelName(label, displayName) {
    return has(`label.${label}`) ? t(`label.${label}`) : displayName || label;
  }

  function percent(p) {
    const format = new Intl.NumberFormat(state.lang, { style: "percent", maximumFractionDigits: 0 });
    if (p > 0 && p < 0.01) return `< ${format.format(0.01)}`;
    return format.format(p);
  }

  function applyCatalogue() {
    document.documentElement.lang = state.lang;
    document.querySelectorAll("[data-i18n]").forEach((el) => {
      el.textContent = t(el.dataset.i18n);
    });
    document.querySelectorAll("[data-i18n-attr]").forEach((el) => {
      el.dataset.i18nAttr.split(";").forEach((pair) => {
        const [attr, key] = pair.split(":");
        el.setAttribute(attr.trim(), t(key.trim()));
      });
    });
    document.querySelectorAll("[data-lang-choice]").forEach((button) => {
      button.setAttribute("aria-pressed", String(button.dataset.langChoice === state.lang));
    });
    renderGuidance();
    renderRetake();
    if (state.result) renderResult();
    if (state.chatDisabled) showChatNotice(t("chat.disabled"));
  }

  // ---------------------------------------------------------------------------------------------- network
  function withLang(path) {
    return `${path}${path.includes("?") ? "&" : "?"}lang=${encodeURIComponent(state.lang)}`;
  }

  /** fetch + JSON; never throws: {ok, status, data} with status 0 when the server cannot be reached. */
  async function api(path, { method = "GET", json, form } = {}) {
    const options = { method, headers: { Accept: "application/json" } };
    if (json !== undefined) {
      options.headers["Content-Type"] = "application/json";
      options.body = JSON.stringify({ ...json, lang: state.lang });
    } else if (form) {
      form.append("lang", state.lang);
      options.body = form;
    }
    let response;
    try {
      response = await fetch(withLang(path), options);
    } catch (error) {
      return { ok: false, status: 0, data: null };
    }
    let data = null;
    if ((response.headers.get("Content-Type") || "").includes("json")) {
      try {
        data = await response.json();
      } catch (error) {
        data = null;
      }
    }
    return { ok: response.ok, status: response.status, data };
  }

  function errorKey(status, context) {
    if (status === 0) return "error.network";
    if (status === 413) return context === "chat" ? "chat.too_long" : "error.too_large";
    if (status === 400 && context === "upload") return "error.unreadable";
    if (status === 404 || status === 410) return "error.expired"; // 410: analysed across a New patient
    if (status === 409) return "error.unavailable";
    return "error.generic";
  }

  /** Fill an error box with a translated message and, smaller, the server's own reason. That reason is in
   * English: it is shown to a health worker, or when the page is in English, never to a patient who chose
   * another language. */
  function showError(box, status, data, context, key) {
    const lines = [t(key || errorKey(status, context))];
    const detail = data && typeof data.error === "string" && data.error;
    if (detail && (state.lang === "en" || state.healthWorker)) lines.push(t("error.detail", { detail }));
    box.replaceChildren(...lines.map((text, i) => element("p", i ? "detail" : "", text)));
    box.hidden = false;
  }

  function element(tag, className, text) {
    const el = document.createElement(tag);
    if (className) el.className = className;
    if (text !== undefined) el.textContent = text;
    return el;
  }

  // ---------------------------------------------------------------------------------------------- screens
  function showScreen(name) {
    state.screen = name;
    $("screen-preview").hidden = name !== "preview";
    $("screen-result").hidden = name !== "result";
    if (name === "preview") {
      startStream();
      pollPreview();
    } else {
      stopStream();
    }
  }

  function setBusy(busy) {
    state.busy = busy;
    $("busy").hidden = !busy;
    $("capture").disabled = busy;
    $("upload").disabled = busy;
  }

  // ---------------------------------------------------------------------------------------------- preview
  let pollTimer = null;
  let pollSeq = 0;

  function startStream() {
    const img = $("preview-img");
    if (state.camera && !img.getAttribute("src")) img.src = "/api/stream.mjpg";
  }

  function stopStream() {
    // Dropping src closes the multipart stream, which frees its server thread.
    $("preview-img").removeAttribute("src");
  }

  async function pollPreview() {
    clearTimeout(pollTimer);
    if (state.screen !== "preview") return;
    const seq = ++pollSeq;
    const res = await api("/api/preview");
    if (seq !== pollSeq || state.screen !== "preview") return;
    let wait = POLL_MS;
    if (!res.ok || !res.data) {
      state.preview = { ok: false, guidance: [], failed: true };
      wait = POLL_ERROR_MS;
    } else if (!res.data.camera) {
      setCamera(false);
      state.preview = { ok: false, guidance: [], failed: false };
      wait = POLL_NO_CAMERA_MS;
    } else {
      setCamera(true);
      state.preview = { ok: Boolean(res.data.ok), guidance: res.data.guidance || [], failed: false };
    }
    renderGuidance();
    pollTimer = setTimeout(pollPreview, wait);
  }

  function setCamera(present) {
    if (state.camera === present) return;
    state.camera = present;
    $("no-camera").hidden = present;
    $("preview-img").hidden = !present;
    $("capture").hidden = !present;
    $("upload").classList.toggle("btn-primary", !present);
    $("upload").classList.toggle("btn-big", !present);
    $("upload").classList.toggle("btn-secondary", present);
    if (present) startStream();
    else stopStream();
  }

  function renderGuidance() {
    const frame = $("preview-frame");
    const guidance = $("guidance");
    const status = $("frame-status");
    let text = "";
    let frameState = "waiting";
    if (state.preview.failed) {
      text = t("error.network");
    } else if (state.camera === false) {
      frameState = "none";
    } else if (state.camera === null) {
      text = t("preview.waiting");
    } else if (state.preview.ok) {
      text = t("preview.ready");
      frameState = "ok";
    } else {
      text = state.preview.guidance.join(" ");
      frameState = "bad";
    }
    frame.dataset.state = frameState;
    status.textContent = frameState === "ok" ? t("preview.status_ok") : frameState === "bad" ? t("preview.status_bad") : "";
    status.hidden = !status.textContent;
    if (guidance.textContent !== text) guidance.textContent = text; // unchanged text is not re-announced
    guidance.hidden = !text;
  }

  function renderRetake() {
    const box = $("retake");
    if (!state.retake) {
      box.hidden = true;
      return;
    }
    // Prefer the catalogue (follows a language switch); fall back to the server's translated text.
    const issues = state.retake.issues || [];
    const lines = issues.length && issues.every((i) => has(`quality.${i}`))
      ? issues.map((i) => t(`quality.${i}`))
      : state.retake.guidance || [];
    $("retake-list").replaceChildren(...lines.map((line) => element("li", "", line)));
    box.hidden = false;
  }

  function clearPreviewMessages() {
    state.retake = null;
    renderRetake();
    $("preview-error").hidden = true;
    markPreviewMessage();
  }

  function markPreviewMessage() {
    $("screen-preview").querySelector(".preview-messages")
      .classList.toggle("has-message", !$("retake").hidden || !$("preview-error").hidden);
  }

  async function classify(send, context) {
    if (state.busy) return;
    clearPreviewMessages();
    setBusy(true);
    const generation = state.generation;
    const res = await send();
    setBusy(false);
    if (generation !== state.generation) return;
    if (res.ok && res.data) {
      showResult(res.data);
    } else if (res.status === 422 && res.data && res.data.error === "retake") {
      state.retake = { issues: (res.data.quality && res.data.quality.issues) || [], guidance: res.data.guidance || [] };
      renderRetake();
    } else {
      showError($("preview-error"), res.status, res.data, context);
    }
    markPreviewMessage();
  }

  function capture() {
    return classify(() => api("/api/capture", { method: "POST" }), "capture");
  }

  function upload(file) {
    const form = new FormData();
    form.append("image", file, file.name || "photo");
    return classify(() => api("/api/classify", { method: "POST", form }), "upload");
  }

  // ---------------------------------------------------------------------------------------------- result
  function showResult(result) {
    resetResultState();
    state.result = result;
    const saliency = $("saliency-img");
    $("saliency-missing").hidden = true;
    saliency.hidden = false;
    saliency.src = result.saliency_url;
    renderResult();
    showScreen("result");
    $("result-title").focus();
    $("main").querySelector(".result-scroll").scrollTop = 0;
  }

  function currentUrgency() {
    if (!state.result) return "routine";
    let urgency = state.symptomUrgency || state.result.urgency;
    if (state.redflag && SEVERITY.urgent > (SEVERITY[urgency] ?? 0)) urgency = "urgent";
    return urgency;
  }

  function renderResult() {
    const result = state.result;
    const name = labelName(result.label, result.display_name);
    $("unsure-banner").hidden = !result.abstained;
    $("history-unsaved").hidden = result.saved_to_history !== false; // only in health-worker mode
    const reasonKey = `abstain.${result.abstain_reason}`;
    $("unsure-reason").textContent = result.abstained && has(reasonKey) ? t(reasonKey) : "";
    $("name-kicker").textContent = t(result.abstained ? "result.closest" : "result.most_likely");
    $("result-name").textContent = name;
    $("result-name").classList.toggle("is-unsure", Boolean(result.abstained));
    renderUrgency();
    renderBars(result);
    const chosen = result.probabilities[result.label] ?? result.confidence;
    $("confidence-text").textContent = t("result.confidence_text", { n: Math.round(chosen * 100), name });
  }

  function renderUrgency() {
    const result = state.result;
    const urgency = currentUrgency();
    const serverText = urgency === result.urgency ? result.urgency_text : null;
    $("urgency-badge").dataset.urgency = urgency;
    // the "unsure" banner already says it; the badge comes back if symptoms or a red flag set a time frame
    $("urgency-badge").hidden = Boolean(result.abstained) && urgency === "unsure";
    $("urgency-text").textContent = has(`urgency.${urgency}`) ? t(`urgency.${urgency}`) : serverText || urgency;
    $("next-step").textContent = has(`next.${urgency}`) ? t(`next.${urgency}`) : result.next_step || "";
    const reasons = state.symptomReasons;
    $("symptom-reason-list").replaceChildren(...reasons.map((reason) => element("li", "", reason)));
    $("symptom-reasons").hidden = reasons.length === 0;
    $("redflag").hidden = !state.redflag;
    $("redflag-text").textContent = state.redflag ? state.redflag.text : "";
  }

  function renderBars(result) {
    const entries = Object.entries(result.probabilities).sort((a, b) => b[1] - a[1]);
    let shown = entries;
    let rest = null;
    if (entries.length > MAX_BARS) {
      shown = entries.slice(0, MAX_BARS - 1);
      const others = entries.slice(MAX_BARS - 1);
      if (!shown.some(([label]) => label === result.label)) {
        shown.push(others.splice(others.findIndex(([label]) => label === result.label), 1)[0]);
      }
      rest = [t("result.other_labels", { n: others.length }), others.reduce((sum, [, p]) => sum + p, 0)];
    }
    const rows = shown.map(([label, p]) => bar(label === result.label ? labelName(label, result.display_name)
      : labelName(label, label), p, label === result.label, label));
    if (rest) rows.push(bar(rest[0], rest[1], false, ""));
    $("bars").replaceChildren(...rows);
  }

  function bar(name, p, chosen, label) {
    const row = element("li", chosen ? "bar is-chosen" : "bar");
    if (label) row.dataset.label = label;
    const text = element("span", "bar-text");
    text.append(element("span", "bar-name", name), element("span", "bar-value", percent(p)));
    const track = element("span", "bar-track");
    track.setAttribute("aria-hidden", "true");
    const fill = element("span", "bar-fill");
    fill.style.width = `${Math.max(0, Math.min(100, p * 100)).toFixed(1)}%`;
    track.append(fill);
    row.append(text, track);
    return row;
  }

  // ---------------------------------------------------------------------------------------------- symptoms
  let symptomSeq = 0;

  function tickedSymptoms() {
    return [...document.querySelectorAll('#symptoms input[name="symptom"]')].filter((c) => c.checked).map((c) => c.value);
  }

  // One symptoms request at a time, each sending what is ticked when it goes: the server's last write is then
  // always the newest set (two quick ticks must not leave the older set stored, and the report lower).
  let symptomChain = Promise.resolve();

  function postSymptoms() {
    symptomChain = symptomChain.then(sendSymptoms, sendSymptoms);
    return symptomChain;
  }

  async function sendSymptoms() {
    if (!state.result) return;
    const seq = ++symptomSeq;
    const generation = state.generation;
    const res = await api(`/api/symptoms/${encodeURIComponent(state.result.id)}`,
      { method: "POST", json: { symptoms: tickedSymptoms() } });
    if (seq !== symptomSeq || generation !== state.generation || !state.result) return;
    const box = $("symptom-error");
    if (!res.ok || !res.data) {
      showError(box, res.status, res.data, "symptoms", res.status === 404 ? "error.expired" : "symptoms.unavailable");
      return;
    }
    box.hidden = true;
    state.symptomUrgency = res.data.urgency;
    state.symptomReasons = Array.isArray(res.data.reasons) ? res.data.reasons : [];
    renderUrgency();
  }

  // ---------------------------------------------------------------------------------------------- chat
  function addBubble(role, text) {
    const item = element("li", `bubble bubble-${role}`);
    const who = element("span", "bubble-who");
    who.dataset.i18n = role === "user" ? "chat.you" : "chat.assistant"; // follows a language switch
    who.textContent = t(who.dataset.i18n);
    item.append(who);
    const content = element("p", "bubble-text", text);
    item.append(content);
    $("chat-log").append(item);
    item.scrollIntoView({ block: "nearest" });
    return item;
  }

  function showChatNotice(text) {
    $("chat-notice").textContent = text;
    $("chat-notice").hidden = !text;
  }

  function setChatBusy(busy) {
    state.chatBusy = busy;
    $("chat-send").disabled = busy;
  }

  async function sendChat(event) {
    event.preventDefault();
    const input = $("chat-input");
    const message = input.value.trim();
    if (!message || state.chatBusy || state.chatDisabled) return;
    if (message.length > state.maxChatChars) {
      showChatNotice(t("chat.too_long"));
      return;
    }
    showChatNotice("");
    addBubble("user", message);
    input.value = "";
    const bubble = addBubble("assistant", t("chat.writing"));
    bubble.classList.add("is-pending");
    bubble.setAttribute("aria-busy", "true");
    setChatBusy(true);
    const controller = new AbortController();
    state.chatAbort = controller;
    const generation = state.generation;
    try {
      await streamAnswer(message, bubble, controller.signal);
    } catch (error) {
      if (generation === state.generation && !controller.signal.aborted) failBubble(bubble, 0, null);
    } finally {
      if (generation === state.generation) {
        bubble.removeAttribute("aria-busy");
        bubble.classList.remove("is-pending");
        setChatBusy(false);
        state.chatAbort = null;
      }
    }
  }

  function failBubble(bubble, status, data) {
    bubble.classList.add("is-error");
    const box = bubble.querySelector(".bubble-text");
    box.textContent = t(status === 404 ? "error.expired" : status === 413 ? "chat.too_long" : status === 0
      ? "error.network" : "chat.error");
    if (data && data.error) bubble.append(element("p", "detail", t("error.detail", { detail: data.error })));
  }

  async function streamAnswer(message, bubble, signal) {
    const response = await fetch(withLang("/api/chat"), {
      method: "POST",
      headers: { "Content-Type": "application/json", Accept: "text/event-stream" },
      body: JSON.stringify({ message, result_id: state.result ? state.result.id : null, lang: state.lang }),
      signal,
    });
    if (!response.ok) {
      let data = null;
      try {
        data = await response.json();
      } catch (error) {
        data = null;
      }
      if (response.status === 409) {
        bubble.remove();
        state.chatDisabled = true;
        $("chat-form").hidden = true;
        showChatNotice(t("chat.disabled"));
      } else {
        failBubble(bubble, response.status, data);
      }
      return;
    }
    const text = bubble.querySelector(".bubble-text");
    let answer = "";
    let started = false;
    await readEventStream(response.body, (kind, data) => {
      if (signal.aborted) return;
      state.lastActivity = Date.now();
      if (kind === "token" || kind === "replace") {
        answer = kind === "token" && started ? answer + (data.text || "") : data.text || "";
        started = true;
        bubble.classList.remove("is-pending");
        text.textContent = answer;
      } else if (kind === "redflag") {
        answer = data.text || "";
        started = true;
        bubble.classList.remove("is-pending");
        bubble.classList.add("is-redflag");
        text.textContent = answer;
        const flags = [...new Set([...(state.redflag ? state.redflag.flags : []), ...(data.flags || [])])];
        state.redflag = { text: answer, urgency: data.urgency, flags };
        if (flags.length > (data.flags || []).length) refreshRedflag(state.redflag);
        if (state.result) renderUrgency();
      } else if (kind === "notice") {
        bubble.append(element("p", "bubble-note", data.text || ""));
      } else if (kind === "error") {
        failBubble(bubble, -1, data);
      }
      bubble.scrollIntoView({ block: "nearest" });
    });
    if (!started && !bubble.classList.contains("is-error")) failBubble(bubble, -1, null);
  }

  /** Server-sent events from a fetch body: "event: x\ndata: {json}\n\n" blocks. */
  async function readEventStream(stream, onEvent) {
    const reader = stream.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    const dispatch = (block) => {
      let kind = "message";
      const data = [];
      for (const line of block.split("\n")) {
        if (!line || line.startsWith(":")) continue;
        const colon = line.indexOf(":");
        const field = colon < 0 ? line : line.slice(0, colon);
        let value = colon < 0 ? "" : line.slice(colon + 1);
        if (value.startsWith(" ")) value = value.slice(1);
        if (field === "event") kind = value;
        else if (field === "data") data.push(value);
      }
      if (!data.length) return;
      let parsed;
      try {
        parsed = JSON.parse(data.join("\n"));
      } catch (error) {
        parsed = { text: data.join("\n") };
      }
      onEvent(kind, parsed || {});
    };
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += decoder.decode(value, { stream: true }).replace(/\r\n?/g, "\n");
      let cut;
      while ((cut = buffer.indexOf("\n\n")) >= 0) {
        dispatch(buffer.slice(0, cut));
        buffer = buffer.slice(cut + 2);
      }
    }
    buffer += decoder.decode();
    if (buffer.trim()) dispatch(buffer);
  }

  // ---------------------------------------------------------------------------------------------- report
  async function openReport() {
    if (!state.result) return;
    const frame = $("report-frame");
    $("report-error").hidden = true;
    $("report-print").hidden = true;
    $("report-dialog").classList.remove("is-error");
    // The frame keeps its last report until the new one arrives (the model may take seconds to write it):
    // hidden meanwhile, so an earlier, perhaps lower-urgency version is never read as the current one.
    frame.hidden = true;
    $("report-loading").hidden = false;
    $("report-dialog").showModal();
    const result = state.result;
    if (tickedSymptoms().length) await postSymptoms(); // the report is built from what the server has stored
    if (state.result !== result || !$("report-dialog").open) return;
    frame.src = withLang(`/api/report/${encodeURIComponent(result.id)}?format=html`);
  }

  function reportLoaded() {
    const frame = $("report-frame");
    if (!frame.getAttribute("src")) return;
    $("report-loading").hidden = true;
    let doc = null;
    try {
      doc = frame.contentDocument;
    } catch (error) {
      doc = null;
    }
    if (!doc) {
      frame.hidden = true;
      $("report-dialog").classList.add("is-error");
      showError($("report-error"), 0, null, "report");
      return;
    }
    if (doc.contentType === "application/json") {
      // The API answered with an error instead of the page (409: no assistant; 404: session cleared).
      let data = null;
      try {
        data = JSON.parse(doc.body.textContent);
      } catch (error) {
        data = null;
      }
      frame.hidden = true;
      $("report-dialog").classList.add("is-error");
      const expired = data && /unknown result/.test(data.error || "");
      showError($("report-error"), expired ? 404 : 409, data, "report", expired ? "error.expired" : "report.unavailable");
      return;
    }
    frame.hidden = false;
    $("report-print").hidden = false;
    if (doc) listenForActivity(doc); // reading the report (its own document) is activity too
  }

  function closeReport() {
    const dialog = $("report-dialog");
    if (dialog.open) dialog.close();
  }

  function resetReport() {
    closeReport();
    $("report-frame").removeAttribute("src");
    $("report-loading").hidden = true;
  }

  /** The health worker's history (every earlier screening and its notes) never stays up for the next person. */
  function closeHistory() {
    for (const id of ["confirm-dialog", "history-dialog"]) {
      if ($(id) && $(id).open) $(id).close();
    }
    if ($("history-list")) $("history-list").replaceChildren();
  }

  // ---------------------------------------------------------------------------------------------- new patient
  function resetResultState() {
    state.symptomUrgency = null;
    state.symptomReasons = [];
    state.redflag = null;
    document.querySelectorAll('#symptoms input[name="symptom"]').forEach((box) => { box.checked = false; });
    $("symptom-error").hidden = true;
    $("chat-log").replaceChildren();
    $("chat-input").value = "";
    if (!state.chatDisabled) showChatNotice("");
  }

  async function newPatient() {
    state.generation += 1;
    if (state.chatAbort) state.chatAbort.abort();
    state.chatAbort = null;
    setChatBusy(false);
    // Clear the page first: nothing of the last patient stays on screen while the server is asked.
    state.result = null;
    resetResultState();
    resetReport();
    closeHistory();
    ["result-name", "name-kicker", "urgency-text", "next-step", "confidence-text", "unsure-reason"].forEach((id) => {
      $(id).textContent = "";
    });
    $("bars").replaceChildren();
    $("unsure-banner").hidden = true;
    $("redflag").hidden = true;
    $("symptom-reasons").hidden = true;
    $("saliency-img").removeAttribute("src");
    clearPreviewMessages();
    $("upload-input").value = "";
    showScreen("preview");
    ($("capture").hidden ? $("upload") : $("capture")).focus();
    const res = await api("/api/session/new", { method: "POST" });
    if (!res.ok) showError($("preview-error"), res.status, res.data, "session");
  }

  const ACTIVITY_EVENTS = ["pointerdown", "keydown", "input", "wheel", "touchstart", "scroll"];

  /** Someone is using the kiosk: the page's idle timer restarts and, on a result, so does the server's (a
   * person reading and scrolling calls no API, and their session must not expire under them). */
  let heartbeatTimer = null;
  function noteActivity() {
    const now = Date.now();
    state.lastActivity = now;
    if (state.screen !== "result" || !state.result || heartbeatTimer) return;
    const due = Math.max(0, state.lastHeartbeat + state.heartbeatMs - now);
    heartbeatTimer = setTimeout(async () => {
      heartbeatTimer = null;
      if (state.screen !== "result" || !state.result) return;
      state.lastHeartbeat = Date.now();
      const shown = state.generation;
      const res = await api("/api/session/touch", { method: "POST" });
      // The server cleared the session (an administrator's purge, a restart, its own expiry): this patient's
      // result must not stay on screen for the next person because someone keeps touching it.
      if (res.ok && res.data && res.data.active === false && state.generation === shown && state.screen === "result") {
        newPatient();
      }
    }, due);
  }

  function listenForActivity(target) {
    for (const kind of ACTIVITY_EVENTS) target.addEventListener(kind, noteActivity, { passive: true, capture: true });
  }

  // An unattended result screen clears itself, like the server's session does.
  function checkIdle() {
    const idle = Date.now() - state.lastActivity > state.idleTimeoutMs;
    if (!idle) return;
    if (state.screen === "result") newPatient();
    else if (state.screen === "preview") {
      closeHistory();
      if (state.retake || !$("preview-error").hidden) clearPreviewMessages();
    }
    state.lastActivity = Date.now();
  }

  // ---------------------------------------------------------------------------------------------- language
  /** The urgent banner's fixed message, again in the page's (new) language. */
  async function refreshRedflag(flag) {
    const flags = (flag.flags || []).map(encodeURIComponent).join(",");
    const res = await api(`/api/redflag-message?flags=${flags}`);
    if (!res.ok || !res.data || state.redflag !== flag) return;
    flag.text = res.data.text;
    renderUrgency();
  }

  async function setLanguage(lang) {
    if (lang === state.lang) return;
    const res = await api(`/api/i18n/${encodeURIComponent(lang)}`);
    if (!res.ok || !res.data) return;
    state.lang = lang;
    state.catalogue = res.data;
    applyCatalogue();
    try {
      history.replaceState(null, "", `?lang=${encodeURIComponent(lang)}`);
    } catch (error) {
      /* a reload then starts in the default language: harmless */
    }
    if (state.screen === "preview") pollPreview();
    if (state.result && tickedSymptoms().length) postSymptoms(); // the reasons come back in the new language
    if (state.redflag) refreshRedflag(state.redflag);
    if (state.healthWorker && $("history-dialog").open) loadHistory();
  }

  // ---------------------------------------------------------------------------------------------- history
  let purgeCount = 0;

  async function openHistory() {
    $("history-status").textContent = "";
    $("history-dialog").showModal();
    await loadHistory();
  }

  async function loadHistory() {
    const res = await api("/api/history");
    const list = $("history-list");
    if (!res.ok || !res.data) {
      list.replaceChildren();
      $("history-status").textContent = t(errorKey(res.status, "history"));
      return;
    }
    const entries = res.data.entries || [];
    purgeCount = entries.length;
    $("history-empty").hidden = entries.length > 0;
    $("history-purge").disabled = entries.length === 0;
    list.replaceChildren(...entries.map(historyEntry));
  }

  function historyEntry(entry) {
    const item = element("li", "history-entry");
    const when = new Intl.DateTimeFormat(state.lang, { dateStyle: "medium", timeStyle: "short" })
      .format(new Date(entry.time * 1000));
    const head = element("p", "history-head");
    head.append(element("span", "history-time", when), element("strong", "", labelName(entry.label, entry.display_name)));
    const urgency = element("span", "history-urgency", t(`urgency.${entry.urgency}`));
    urgency.dataset.urgency = entry.urgency;
    const meta = element("p", "history-meta");
    meta.append(urgency, element("span", "", t("history.probability", { p: percent(entry.confidence) })));
    if (entry.abstained) meta.append(element("span", "", t("history.unsure")));
    const noteId = `note-${entry.id}`;
    const form = element("form", "history-note");
    const label = element("label", "", t("history.note_label"));
    label.htmlFor = noteId;
    const input = element("input");
    input.type = "text";
    input.id = noteId;
    input.maxLength = 1000;
    input.value = entry.note || "";
    const save = element("button", "btn btn-secondary", t("history.note_save"));
    save.type = "submit";
    const status = element("span", "history-note-status");
    status.setAttribute("role", "status");
    form.append(label, input, save, status);
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      const res = await api(`/api/history/${encodeURIComponent(entry.id)}/note`, { method: "POST", json: { note: input.value } });
      status.textContent = res.ok ? t("history.note_saved") : t(errorKey(res.status, "note"));
    });
    item.append(head, meta, form);
    return item;
  }

  function askPurge() {
    $("confirm-text").textContent = t("history.purge_confirm", { n: purgeCount });
    $("confirm-dialog").showModal();
    $("confirm-cancel").focus();
  }

  async function purge() {
    $("confirm-dialog").close();
    const res = await api("/api/history/purge", { method: "POST", json: {} });
    await loadHistory();
    $("history-status").textContent = res.ok ? t("history.purged", { n: res.data.deleted }) : t(errorKey(res.status, "purge"));
  }

  // ---------------------------------------------------------------------------------------------- wiring
  function wire() {
    $("capture").addEventListener("click", capture);
    $("upload").addEventListener("click", () => $("upload-input").click());
    $("upload-input").addEventListener("change", (event) => {
      const [file] = event.target.files;
      event.target.value = "";
      if (file) upload(file);
    });
    $("new-patient").addEventListener("click", newPatient);
    $("report-open").addEventListener("click", openReport);
    $("report-close").addEventListener("click", closeReport);
    $("report-print").addEventListener("click", () => $("report-frame").contentWindow.print());
    $("report-frame").addEventListener("load", reportLoaded);
    $("chat-form").addEventListener("submit", sendChat);
    document.querySelectorAll('#symptoms input[name="symptom"]').forEach((box) => box.addEventListener("change", postSymptoms));
    document.querySelectorAll("[data-lang-choice]").forEach((button) => {
      button.addEventListener("click", () => setLanguage(button.dataset.langChoice));
    });
    $("preview-img").addEventListener("error", () => {
      // the stream broke (server restarted, camera reopened): drop it; the next poll starts a new one
      stopStream();
      setTimeout(() => { if (state.screen === "preview") startStream(); }, POLL_ERROR_MS);
    });
    $("saliency-img").addEventListener("error", () => {
      if (!$("saliency-img").getAttribute("src")) return;
      $("saliency-img").hidden = true;
      $("saliency-missing").hidden = false;
    });
    if (state.healthWorker) {
      $("history-open").addEventListener("click", openHistory);
      $("history-close").addEventListener("click", () => $("history-dialog").close());
      $("history-purge").addEventListener("click", askPurge);
      $("confirm-cancel").addEventListener("click", () => $("confirm-dialog").close());
      $("confirm-ok").addEventListener("click", purge);
    }
    listenForActivity(document);
    setInterval(checkIdle, 1000);
    window.addEventListener("pageshow", () => { if (state.screen === "preview") pollPreview(); });
  }

  wire();
  applyCatalogue();
  showScreen("preview");
  window.kiosk = { state }; // for the browser test and on-device debugging
})();
