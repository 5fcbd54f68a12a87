// A template's page while it builds: its log streamed from /templates/{id}/log/stream
// (server-sent events), and its summary swapped anew once the build ends.
"use strict";

(function () {
  function follow(pre) {
    const source = new EventSource(pre.dataset.logStream);
    let fresh = true;  // the stream starts with the whole log: it replaces what the page showed
    source.addEventListener("open", () => { fresh = true; });
    source.addEventListener("log", (event) => {
      const atEnd = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 4;
      if (fresh) { pre.textContent = ""; fresh = false; }
      pre.append(event.data + "\n");
      if (atEnd) pre.scrollTop = pre.scrollHeight;
    });
    source.addEventListener("end", (event) => {
      source.close();
      delete pre.dataset.logStream;
      if (event.data === "deleted") {
        window.qbox.showAlert("This template was deleted.");
        return;
      }
      if (event.data === "building") {  // rebuilt meanwhile: follow the new build
        window.location.reload();
        return;
      }
      window.htmx.ajax("GET", pre.dataset.summary, { target: "#template-summary", swap: "outerHTML" });
    });
  }

  document.addEventListener("DOMContentLoaded", () => {
    document.querySelectorAll("pre[data-log-stream]").forEach(follow);
  });
})();
