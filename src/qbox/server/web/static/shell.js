// The Shell tab: an xterm.js terminal on the sandbox's shell WebSocket (WIRE_PROTOCOL §6).
// Keystrokes and pastes go out as {"type":"input"} frames, the terminal's size as
// {"type":"resize"} frames; the PTY's output comes back as binary frames. The WebSocket
// carries the session cookie, which the server takes from our own origin only.
"use strict";

(function () {
  const box = document.getElementById("terminal");
  if (!box || typeof window.Terminal !== "function" || !window.FitAddon) return;
  const sandboxId = box.dataset.sandboxId;
  const status = document.getElementById("shell-status");
  const reconnect = document.getElementById("shell-reconnect");

  const term = new window.Terminal({
    cursorBlink: true,
    scrollback: 5000,
    fontFamily: 'ui-monospace, SFMono-Regular, Menlo, Consolas, "DejaVu Sans Mono", monospace',
    fontSize: 14,
    theme: { background: "#101215" },
  });
  const fit = new window.FitAddon.FitAddon();
  term.loadAddon(fit);
  term.open(box);
  fit.fit();
  term.focus();

  let socket = null;

  function say(state, text) {
    status.dataset.state = state;
    status.textContent = text;
    reconnect.hidden = state === "connected" || state === "connecting";
  }

  function send(message) {
    if (socket && socket.readyState === WebSocket.OPEN) socket.send(JSON.stringify(message));
  }

  function connect() {
    const url = new URL(`/v1/sandboxes/${encodeURIComponent(sandboxId)}/shell`, window.location.href);
    url.protocol = window.location.protocol === "https:" ? "wss:" : "ws:";
    url.searchParams.set("cols", String(term.cols));
    url.searchParams.set("rows", String(term.rows));
    const ws = new WebSocket(url);
    ws.binaryType = "arraybuffer";
    let opened = false;
    socket = ws;
    say("connecting", "Connecting…");
    ws.addEventListener("open", () => {
      opened = true;
      say("connected", "Connected");
      // The size may have changed while connecting.
      send({ type: "resize", cols: term.cols, rows: term.rows });
      term.focus();
    });
    ws.addEventListener("message", (event) => {
      term.write(typeof event.data === "string" ? event.data : new Uint8Array(event.data));
    });
    ws.addEventListener("close", (event) => {
      if (socket !== ws) return;
      socket = null;
      if (opened) {
        say("ended", "The shell ended" + (event.reason ? ` (${event.reason})` : "") + ".");
      } else {
        // A refused upgrade tells the browser nothing more than that.
        say("failed", "Could not connect to the shell. The sandbox may have ended, or your session expired.");
      }
    });
  }

  // Typing, and pastes (the browser's paste or Ctrl+Shift+V reach the terminal as data).
  term.onData((data) => send({ type: "input", data }));
  term.onBinary((data) => send({ type: "input", data }));
  term.onResize(({ cols, rows }) => send({ type: "resize", cols, rows }));

  // Esc then Tab leaves the terminal for the page (Tab alone goes to the shell: completion).
  let escaped = false;
  term.attachCustomKeyEventHandler((event) => {
    if (event.type !== "keydown") return true;
    if (event.key === "Tab" && escaped && !event.ctrlKey && !event.altKey) return false;
    escaped = event.key === "Escape";
    if (!event.ctrlKey || !event.shiftKey) return true;
    if (event.code === "KeyC") {
      // Ctrl+Shift+C copies the selection (Ctrl+C stays the shell's interrupt).
      const text = term.getSelection();
      if (text) navigator.clipboard?.writeText(text);
      event.preventDefault();
      return false;
    }
    // Ctrl+Shift+V: the browser's own paste event follows, and xterm sends its text.
    return event.code !== "KeyV";
  });

  new ResizeObserver(() => fit.fit()).observe(box);

  reconnect.addEventListener("click", () => {
    term.reset();
    connect();
    term.focus();
  });

  connect();
})();
