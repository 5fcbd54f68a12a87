// A sandbox's Overview, Logs and Processes tabs: boxes marked data-autoscroll
// follow their newest line across htmx refreshes, unless the reader has
// scrolled up; a form marked data-reset-after empties itself once sent.
"use strict";

(function () {
  const atBottom = (box) => box.scrollHeight - box.scrollTop - box.clientHeight < 8;
  const kept = new Map(); // box id -> {bottom, top}, taken just before a swap

  document.addEventListener("htmx:beforeSwap", (event) => {
    event.detail.target.querySelectorAll?.("[data-autoscroll][id]").forEach((box) => {
      kept.set(box.id, { bottom: atBottom(box), top: box.scrollTop });
    });
    const self = event.detail.target;
    if (self.matches?.("[data-autoscroll][id]")) kept.set(self.id, { bottom: atBottom(self), top: self.scrollTop });
  });

  // Only boxes new to the page (just loaded or swapped in) are placed.
  function follow() {
    document.querySelectorAll("[data-autoscroll]:not([data-followed])").forEach((box) => {
      box.dataset.followed = "";
      const before = kept.get(box.id);
      box.scrollTop = !before || before.bottom ? box.scrollHeight : before.top;
    });
    kept.clear();
  }

  document.addEventListener("DOMContentLoaded", follow);
  document.addEventListener("htmx:afterSettle", follow);

  document.addEventListener("htmx:afterRequest", (event) => {
    const form = event.detail.elt;
    if (event.detail.successful && form.matches?.("form[data-reset-after]")) form.reset();
  });
})();
