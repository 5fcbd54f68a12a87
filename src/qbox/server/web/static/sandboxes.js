// The Sandboxes page: its table body polls every few seconds (hx-trigger "every 3s"); while
// the keyboard is inside it (typing a new timeout, on a Kill button) the poll waits, so a
// refresh never takes the focus or a half-typed value away. A refresh after a change
// (the "sandboxes-changed" event) still happens.
"use strict";

document.addEventListener("htmx:configRequest", (event) => {
  const rows = event.detail.elt;
  if (rows.id === "sandbox-rows" && !event.detail.triggeringEvent && rows.contains(document.activeElement)) {
    event.preventDefault();
  }
});
