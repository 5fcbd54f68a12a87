// The Code tab: notebook-like cells run in one code context per browser tab.
// The context's id is kept in sessionStorage (this tab only), so a reload keeps the
// kernel's state; a context the sandbox no longer has is replaced by a new one. Each run
// answers an HTML fragment the server rendered and escaped (nothing from the kernel is
// put into the page as markup here).
"use strict";

(function () {
  const notebook = document.getElementById("notebook");
  if (!notebook) return;
  const sandboxId = notebook.dataset.sandboxId;
  const base = `/sandboxes/${encodeURIComponent(sandboxId)}/code`;
  const language = document.getElementById("code-language");
  const contextStatus = document.getElementById("code-context");
  const cells = document.getElementById("cells");
  const template = document.getElementById("cell-template");
  const storeKey = `qbox-code-contexts:${sandboxId}`;
  const alive = new Set(JSON.parse(notebook.dataset.contexts || "[]"));
  const contexts = stored(); // language -> context id
  const starting = {}; // language -> Promise of its context id
  let cellCount = 0;

  function stored() {
    try {
      const found = JSON.parse(sessionStorage.getItem(storeKey) || "{}");
      for (const [lang, id] of Object.entries(found)) if (!alive.has(id)) delete found[lang];
      return found;
    } catch (_) {
      return {};
    }
  }
  function keep() {
    try { sessionStorage.setItem(storeKey, JSON.stringify(contexts)); } catch (_) { /* private mode */ }
  }

  class SignedOut extends Error {}

  function csrf() {
    return document.querySelector('meta[name="csrf-token"]')?.content || "";
  }

  async function post(path, body, signal) {
    const response = await fetch(path, {
      method: "POST",
      credentials: "same-origin",
      signal,
      headers: { "Content-Type": "application/json", "X-CSRF-Token": csrf(), "HX-Request": "true" },
      body: JSON.stringify(body),
    });
    const redirect = response.headers.get("HX-Redirect");
    if (redirect) {
      window.location.assign(redirect);
      throw new SignedOut("signed out");
    }
    return response;
  }

  // The readable message of an error answer (the server's alert fragment), as plain text.
  async function problem(response) {
    const text = await response.text().catch(() => "");
    const doc = new DOMParser().parseFromString(text, "text/html");
    doc.querySelectorAll("button").forEach((b) => b.remove());
    const message = (doc.body.textContent || "").replace(/\s+/g, " ").trim();
    return message.slice(0, 500) || `The server answered ${response.status}.`;
  }

  function contextFor(lang) {
    if (contexts[lang]) return Promise.resolve(contexts[lang]);
    if (!starting[lang]) {
      contextStatus.textContent = `Starting a ${lang} context…`;
      starting[lang] = (async () => {
        try {
          const response = await post(`${base}/contexts`, { language: lang });
          if (!response.ok) throw new Error(await problem(response));
          const context = await response.json();
          contexts[lang] = context.id;
          keep();
          contextStatus.textContent = `Context ${context.id} (${lang}) is ready.`;
          return context.id;
        } catch (error) {
          if (!(error instanceof SignedOut)) {
            contextStatus.textContent = `Could not start a ${lang} context: ${error.message}`;
          }
          throw error;
        } finally {
          delete starting[lang];
        }
      })();
    }
    return starting[lang];
  }

  function showContext() {
    const lang = language.value;
    if (contexts[lang]) contextStatus.textContent = `Context ${contexts[lang]} (${lang}) is ready.`;
    else contextFor(lang).catch(() => {});
  }

  function message(output, text) {
    const box = document.createElement("div");
    box.className = "alert alert-error";
    box.setAttribute("role", "alert");
    box.textContent = text;
    output.replaceChildren(box);
  }

  function addCell(focus) {
    cellCount += 1;
    const cell = template.content.firstElementChild.cloneNode(true);
    const input = cell.querySelector("textarea");
    const label = cell.querySelector("label");
    input.id = `cell-${cellCount}`;
    label.htmlFor = input.id;
    label.textContent = `Cell ${cellCount}`;
    cells.appendChild(cell);
    if (focus) input.focus();
    return cell;
  }

  async function run(cell, advance) {
    if (cell.stop) {
      cell.stop.abort();
      return;
    }
    const input = cell.querySelector("textarea");
    const button = cell.querySelector("[data-run]");
    const state = cell.querySelector(".cell-state");
    const output = cell.querySelector(".cell-output");
    const lang = language.value;
    const stop = new AbortController();
    const began = Date.now();
    const ticker = setInterval(() => {
      state.textContent = `Running… ${Math.round((Date.now() - began) / 1000)} s`;
    }, 1000);
    cell.stop = stop;
    cell.setAttribute("aria-busy", "true");
    button.textContent = "Stop";
    state.textContent = "Running…";
    output.replaceChildren();
    if (advance) {
      const next = cell.nextElementSibling || addCell(false);
      next.querySelector("textarea").focus();
    }
    try {
      const contextId = await contextFor(lang);
      const response = await post(`${base}/run`, { code: input.value, contextId }, stop.signal);
      if (response.ok) {
        output.innerHTML = await response.text(); // our own fragment: the kernel's output escaped
        state.textContent = output.querySelector(".code-error") ? "Failed" : "Done";
      } else {
        if (response.status === 404) {
          // The context is gone (or the sandbox): the next run starts a new one.
          delete contexts[lang];
          keep();
        }
        message(output, await problem(response));
        state.textContent = "Not run";
      }
    } catch (error) {
      if (error instanceof SignedOut) return;
      if (stop.signal.aborted) {
        message(output, "Stopped: the cell was interrupted.");
        state.textContent = "Stopped";
      } else if (error instanceof TypeError) {
        message(output, "Could not reach the server. Check your connection and run the cell again.");
        state.textContent = "Not run";
      } else {
        message(output, error.message);
        state.textContent = "Not run";
      }
    } finally {
      clearInterval(ticker);
      cell.stop = null;
      cell.removeAttribute("aria-busy");
      button.textContent = "Run";
    }
  }

  cells.addEventListener("click", (event) => {
    const button = event.target.closest("[data-run]");
    if (button) run(button.closest(".cell"), false);
  });
  cells.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && event.shiftKey && event.target.matches("textarea")) {
      event.preventDefault();
      run(event.target.closest(".cell"), true);
    }
  });
  document.getElementById("add-cell").addEventListener("click", () => addCell(true));
  language.addEventListener("change", showContext);

  addCell(true);
  showContext();
})();
