// The dashboard's shared behaviour. No inline scripts anywhere (the CSP forbids
// them): pages mark elements with data-* attributes and this file wires them.
"use strict";

(function () {
  const csrf = () => document.querySelector('meta[name="csrf-token"]')?.content || "";

  // Every htmx request carries the session's CSRF token.
  document.addEventListener("htmx:configRequest", (event) => {
    event.detail.headers["X-CSRF-Token"] = csrf();
  });

  // A request that never reached the server (network down, server restarting).
  document.addEventListener("htmx:sendError", () => {
    showAlert("The server did not answer. Check your connection and try again.");
  });

  function showAlert(text, kind) {
    const area = document.getElementById("alerts");
    if (!area) return;
    const box = document.createElement("div");
    box.className = "alert " + (kind === "ok" ? "alert-ok" : "alert-error");
    box.setAttribute("role", "alert");
    box.textContent = text + " ";
    const close = document.createElement("button");
    close.type = "button";
    close.className = "link dismiss";
    close.setAttribute("aria-label", "Dismiss");
    close.dataset.dismiss = "";
    close.textContent = "×";
    box.appendChild(close);
    area.replaceChildren(box);
  }
  window.qbox = { csrf, showAlert };

  document.addEventListener("click", (event) => {
    const target = event.target.closest("[data-dismiss]");
    if (target) target.closest(".alert")?.remove();
    const copy = event.target.closest("[data-copy]");
    if (copy) {
      const source = document.getElementById(copy.dataset.copy);
      const text = source ? (source.value ?? source.textContent) : copy.dataset.copyText || "";
      navigator.clipboard?.writeText(text).then(
        () => { copy.textContent = "Copied"; setTimeout(() => { copy.textContent = "Copy"; }, 1500); },
        () => { source?.select?.(); });
    }
  });

  // <time datetime="…" data-local>: shown in the browser's zone.
  // <time datetime="…" data-countdown>: time left, counted down each second.
  // <time datetime="…" data-age>: how long ago.
  function span(seconds) {
    seconds = Math.max(0, Math.round(seconds));
    const d = Math.floor(seconds / 86400), h = Math.floor(seconds / 3600) % 24,
      m = Math.floor(seconds / 60) % 60, s = seconds % 60;
    if (d) return `${d}d ${h}h`;
    if (h) return `${h}h ${m}m`;
    if (m) return `${m}m ${s}s`;
    return `${s}s`;
  }
  function tick() {
    const now = Date.now();
    document.querySelectorAll("time[data-countdown]").forEach((el) => {
      const left = (Date.parse(el.getAttribute("datetime")) - now) / 1000;
      el.textContent = left > 0 ? span(left) : "now";
    });
    document.querySelectorAll("time[data-age]").forEach((el) => {
      el.textContent = span((now - Date.parse(el.getAttribute("datetime"))) / 1000);
    });
  }
  function localise(root) {
    root.querySelectorAll("time[data-local]").forEach((el) => {
      const when = new Date(el.getAttribute("datetime"));
      if (!isNaN(when)) el.textContent = when.toLocaleString();
    });
  }
  // A table box that scrolls sideways (a narrow window) takes the keyboard's focus, so
  // it can be scrolled without a mouse; it is named after its page's heading.
  function scrollable(root) {
    root.querySelectorAll(".table-wrap:not([tabindex])").forEach((box) => {
      box.tabIndex = 0;
      if (!box.hasAttribute("role")) {
        const heading = box.closest("section")?.querySelector("h1, h2") || document.querySelector("main h1");
        box.setAttribute("role", "region");
        box.setAttribute("aria-label", (heading?.textContent || "Table").trim());
      }
    });
  }
  document.addEventListener("DOMContentLoaded", () => { localise(document); scrollable(document); tick(); });
  document.addEventListener("htmx:afterSettle", (event) => {
    localise(event.target); scrollable(document); tick();
  });
  setInterval(tick, 1000);
})();
