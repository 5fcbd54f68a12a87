// The Files tab: uploads with progress, and resetting the new-directory form once it worked.
// Each file goes as its own raw body (XMLHttpRequest, for its upload progress events), one
// after another, to the form's data-upload-url with the file's name added; the listing is
// fetched again at the end. A refusal is shown in the page's alert area, as htmx shows one.
"use strict";

(function () {
  function sizeText(bytes) {
    const units = ["B", "KiB", "MiB", "GiB"];
    let size = bytes, unit = 0;
    while (size >= 1024 && unit < units.length - 1) { size /= 1024; unit += 1; }
    return unit ? `${size.toFixed(1)} ${units[unit]}` : `${size} B`;
  }

  // What an error answer says: the server sends the alert fragment (we send HX-Request).
  function messageOf(xhr, name) {
    const doc = new DOMParser().parseFromString(xhr.responseText || "", "text/html");
    const alert = doc.querySelector(".alert");
    alert?.querySelector("[data-dismiss]")?.remove();
    const said = alert ? alert.textContent.replace(/\s+/g, " ").trim() : `status ${xhr.status}`;
    return `Upload of ${name} failed: ${said}`;
  }

  function row(list, file) {
    const item = document.createElement("li");
    const label = document.createElement("span");
    label.className = "mono";
    label.textContent = file.name + " ";
    const bar = document.createElement("progress");
    bar.max = Math.max(file.size, 1);
    bar.value = 0;
    bar.setAttribute("aria-label", `Uploading ${file.name}`);
    const state = document.createElement("span");
    state.className = "upload-state";
    state.textContent = " waiting";
    item.append(label, bar, state);
    list.appendChild(item);
    return { item, bar, state };
  }

  function send(form, file, shown) {
    return new Promise((resolve) => {
      const url = form.dataset.uploadUrl + "&name=" + encodeURIComponent(file.name);
      const xhr = new XMLHttpRequest();
      xhr.open("POST", url);
      xhr.setRequestHeader("X-CSRF-Token", window.qbox.csrf());
      xhr.setRequestHeader("HX-Request", "true");
      xhr.setRequestHeader("Content-Type", "application/octet-stream");
      xhr.upload.addEventListener("progress", (event) => {
        if (!event.lengthComputable) return;
        shown.bar.value = event.loaded;
        shown.state.textContent = ` ${Math.floor((100 * event.loaded) / Math.max(event.total, 1))}%`;
      });
      xhr.addEventListener("load", () => {
        const away = xhr.getResponseHeader("HX-Redirect");  // the session ended: sign in again
        if (away) { window.location.assign(away); resolve(false); return; }
        const ok = xhr.status >= 200 && xhr.status < 300;
        if (ok) shown.bar.value = shown.bar.max;
        shown.item.dataset.state = ok ? "done" : "failed";
        shown.state.textContent = ok ? ` uploaded (${sizeText(file.size)})` : " failed";
        if (!ok) window.qbox.showAlert(messageOf(xhr, file.name));
        resolve(ok);
      });
      xhr.addEventListener("error", () => {
        shown.item.dataset.state = "failed";
        shown.state.textContent = " failed";
        window.qbox.showAlert(`Upload of ${file.name} failed: the server did not answer.`);
        resolve(false);
      });
      shown.state.textContent = " 0%";
      xhr.send(file);
    });
  }

  async function upload(form) {
    const input = form.querySelector('input[type="file"]');
    const list = form.querySelector("#file-upload-progress");
    const button = form.querySelector('button[type="submit"]');
    const files = Array.from(input.files);
    const max = Number(form.dataset.maxBytes);
    if (!files.length) return;
    button.disabled = true;
    list.replaceChildren();
    try {
      for (const file of files) {
        const shown = row(list, file);
        if (max && file.size > max) {
          shown.item.dataset.state = "failed";
          shown.state.textContent = ` too large (at most ${sizeText(max)})`;
          continue;
        }
        await send(form, file, shown);
      }
    } finally {
      button.disabled = false;
      input.value = "";
      const listing = document.getElementById("files-listing");
      if (listing && window.htmx) {
        window.htmx.ajax("GET", form.dataset.listingUrl, { target: listing, swap: "outerHTML" });
      }
    }
  }

  document.addEventListener("submit", (event) => {
    const form = event.target.closest("#file-upload");
    if (!form) return;
    event.preventDefault();
    upload(form);
  });

  // The new-directory form is emptied once the directory is made (not when it was refused).
  document.addEventListener("htmx:afterRequest", (event) => {
    const form = event.detail.elt;
    if (form?.matches?.("form[data-reset-after]") && event.detail.successful) form.reset();
  });
})();
