// omoi board: follow the page's event stream (/board/stream) and, whenever something happens,
// re-render the live region from the server (?partial=1). On a ticket's page, zoom and pan the
// task graph and open a task's panel (/board/tasks/<id>, JSON) by clicking its node; the panel
// follows the task's log (/board/tasks/<id>/logs/stream). Same-origin
// requests only: the board session is a cookie; when it ends the server redirects to the
// sign-in page, and so does this page. Everything is built with textContent: no markup from
// data ever reaches innerHTML except the server's own rendered partials.
(function () {
  "use strict";
  const live = document.getElementById("live");
  const badge = document.getElementById("connection");
  if (!live) return;
  const panel = document.getElementById("task-panel");
  const filters = document.getElementById("filters");
  const view = { zoom: 1, left: 0, top: 0 };  // the graph's, kept across refreshes
  let openTask = null;
  let timer = null;
  let fetching = false;
  let again = false;
  let took = 0;  // how long the last refresh took: a big page refreshes less often

  // -- the live region ---------------------------------------------------------------------

  function signedOut(resp) {
    if (!resp.redirected) return false;
    window.location.assign(resp.url);
    return true;
  }

  async function refresh() {
    if (fetching) { again = true; return; }
    fetching = true;
    const started = performance.now();
    try {
      const resp = await fetch(live.dataset.partial, { credentials: "same-origin" });
      if (signedOut(resp)) return;
      if (resp.ok) {
        keepView();
        live.innerHTML = await resp.text();
        showView();
      }
    } finally {
      took = performance.now() - started;
      fetching = false;
      if (again) { again = false; soon(); }
    }
  }

  function soon(event) {  // a burst of events costs one refresh
    clearTimeout(timer);
    timer = setTimeout(refresh, Math.max(150, 2 * took));
    if (openTask && event && event.data && JSON.parse(event.data).entity_id === openTask) {
      loadTask(openTask);
    }
  }

  // -- the task graph: zoom (buttons, ctrl + wheel), pan (drag, scroll) ----------------------

  const dagView = () => document.getElementById("dag-view");

  function keepView() {
    const box = dagView();
    if (box) { view.left = box.scrollLeft; view.top = box.scrollTop; }
  }

  function showView() {
    const box = dagView();
    if (!box) return;
    const svg = box.querySelector("svg");
    const size = svg.getAttribute("viewBox").split(" ").map(Number);
    svg.setAttribute("width", size[2] * view.zoom);
    svg.setAttribute("height", size[3] * view.zoom);
    box.scrollLeft = view.left;
    box.scrollTop = view.top;
    if (openTask) select(openTask);
  }

  function zoomTo(zoom) {
    const box = dagView();
    if (!box) return;
    const old = view.zoom;
    view.zoom = Math.min(4, Math.max(0.05, zoom));
    const midX = (box.scrollLeft + box.clientWidth / 2) / old;  // keep the middle in place
    const midY = (box.scrollTop + box.clientHeight / 2) / old;
    view.left = midX * view.zoom - box.clientWidth / 2;
    view.top = midY * view.zoom - box.clientHeight / 2;
    showView();
  }

  function fit() {
    const box = dagView();
    const size = box.querySelector("svg").getAttribute("viewBox").split(" ").map(Number);
    view.left = view.top = 0;
    view.zoom = Math.min(1, box.clientWidth / size[2], box.clientHeight / size[3]);
    showView();
  }

  const ZOOMS = {
    in: () => zoomTo(view.zoom * 1.25),
    out: () => zoomTo(view.zoom / 1.25),
    fit: fit,
    reset: () => { view.zoom = 1; view.left = view.top = 0; showView(); },
  };

  live.addEventListener("wheel", (event) => {
    if (!event.ctrlKey || !event.target.closest("#dag-view")) return;
    event.preventDefault();
    zoomTo(view.zoom * (event.deltaY < 0 ? 1.1 : 1 / 1.1));
  }, { passive: false });

  let drag = null;
  live.addEventListener("mousedown", (event) => {
    const box = event.target.closest("#dag-view");
    if (!box || event.button !== 0 || event.target.closest(".node, a")) return;
    drag = { x: event.clientX, y: event.clientY, left: box.scrollLeft, top: box.scrollTop };
    box.classList.add("panning");
  });
  window.addEventListener("mousemove", (event) => {
    const box = dagView();
    if (!drag || !box) return;
    box.scrollLeft = drag.left - (event.clientX - drag.x);
    box.scrollTop = drag.top - (event.clientY - drag.y);
  });
  window.addEventListener("mouseup", () => {
    drag = null;
    const box = dagView();
    if (box) box.classList.remove("panning");
  });

  // -- the task panel ----------------------------------------------------------------------

  function el(tag, className, ...children) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    for (const child of children) {
      if (child !== null && child !== undefined) node.append(child);
    }
    return node;
  }

  const when = (iso) => (iso ? new Date(iso).toLocaleString() : "–");
  const clock = (iso) => (iso ? new Date(iso).toLocaleTimeString() : "–");

  function statusBadge(status) {
    return el("span", `badge status-${status}`, status);
  }

  function facts(rows) {
    const list = el("dl");
    for (const [term, value] of rows) {
      if (value === null || value === undefined || value === "") continue;
      list.append(el("dt", null, term), el("dd", null, value));
    }
    return list;
  }

  function taskList(tasks) {
    if (!tasks.length) return null;
    const span = el("span");
    tasks.forEach((t, i) => {
      if (i) span.append(", ");
      span.append(`${t.key} `, statusBadge(t.status));
    });
    return span;
  }

  function section(title, ...body) {
    return el("section", null, el("h3", null, title), ...body);
  }

  function attemptsTable(attempts) {
    const table = el("table", "attempts",
      el("tr", null, ...["#", "started", "ended", "outcome", "agent"].map((h) => el("th", null, h))));
    for (const a of attempts) {
      const outcome = el("td", null, a.outcome || "running");
      if (a.error) outcome.append(el("div", "meta", `${a.error.category}: ${a.error.message}`));
      const agent = a.agent_name || (a.agent_id ? a.agent_id.slice(0, 8) : "–");
      table.append(el("tr", `outcome-${a.outcome || "running"}`,
        el("td", null, String(a.attempt)), el("td", null, clock(a.started_at)),
        el("td", null, clock(a.ended_at)), outcome, el("td", null, agent)));
    }
    return table;
  }

  function errorBox(error) {
    const box = el("div", "error-box",
      el("div", "meta", `${error.category} · ${error.type}`),
      el("div", "message", error.message));
    if (error.traceback) {
      box.append(el("details", null, el("summary", null, "traceback"), el("pre", "traceback", error.traceback)));
    }
    return box;
  }

  function render(task) {
    document.getElementById("panel-title").replaceChildren(task.key, " ", statusBadge(task.status));
    const body = [
      facts([
        ["type", task.task_type],
        ["phase", task.phase.replace("PHASE_", "").toLowerCase()],
        ["description", task.description],
        ["attempt", `${task.attempt} (retries used ${task.retry_count} of ${task.max_retries})`],
        ["next attempt", task.next_attempt_at ? when(task.next_attempt_at) : null],
        ["waiting for", task.waiting_for],
        ["depends on", taskList(task.depends_on)],
        ["blocks", taskList(task.blocks)],
        ["created", when(task.created_at)],
        ["started", task.started_at ? when(task.started_at) : null],
        ["finished", task.finished_at ? when(task.finished_at) : null],
      ]),
    ];
    if (task.error) body.push(section("Error", errorBox(task.error)));
    body.push(section("Attempts", task.attempts.length ? attemptsTable(task.attempts) : el("p", "meta", "not started yet")));
    const none = el("p", "meta", task.finished_at ? "none" : "none yet");
    body.push(section("Result", task.result === null ? none : el("pre", "result", task.result)));
    body.push(section("Payload", el("pre", "payload", task.payload || "{}")));
    document.getElementById("panel-body").replaceChildren(...body);
    const log = document.getElementById("task-log");
    if (log.dataset.taskId !== task.id) {  // another task's log does not belong here
      log.dataset.taskId = task.id;
      log.replaceChildren();
      panel.dispatchEvent(new CustomEvent("omoi:task", { detail: { id: task.id } }));
    }
  }

  // -- the open task's log, live ----------------------------------------------------------

  let logStream = null;

  function stopLog() {
    if (logStream) logStream.close();
    logStream = null;
  }

  function followLog(id) {  // the latest attempt's lines, then live until it ends
    stopLog();
    const log = document.getElementById("task-log");
    const source = new EventSource(`${panel.dataset.tasks}${encodeURIComponent(id)}/logs/stream`);
    logStream = source;
    source.addEventListener("line", (event) => {
      const line = JSON.parse(event.data);
      const follow = log.scrollTop + log.clientHeight >= log.scrollHeight - 4;
      log.append(el("div", `line ${line.stream}`, line.line));
      if (follow) log.scrollTop = log.scrollHeight;
    });
    source.addEventListener("end", (event) => {
      const end = JSON.parse(event.data);
      log.append(el("div", "line end", `attempt ${end.attempt} ended: ${end.status}`));
      if (source === logStream) stopLog();
    });
  }

  function select(id) {
    live.querySelectorAll(".node.selected").forEach((n) => n.classList.remove("selected"));
    const node = live.querySelector(`.node[data-task="${CSS.escape(id)}"]`);
    if (node) node.classList.add("selected");
  }

  async function loadTask(id) {
    const resp = await fetch(panel.dataset.tasks + encodeURIComponent(id), {
      credentials: "same-origin",
      headers: { Accept: "application/json" },
    });
    if (signedOut(resp)) return;
    if (!resp.ok) {
      document.getElementById("panel-body").replaceChildren(el("p", "error", `this task could not be read (${resp.status})`));
      return;
    }
    render(await resp.json());
  }

  function open(id) {
    openTask = id;
    panel.hidden = false;
    document.body.classList.add("panel-open");
    select(id);
    history.replaceState(null, "", `#task=${id}`);
    loadTask(id);
  }

  function close() {
    openTask = null;
    stopLog();
    document.getElementById("task-log").dataset.taskId = "";
    panel.hidden = true;
    document.body.classList.remove("panel-open");
    select("");
    history.replaceState(null, "", window.location.pathname + window.location.search);
  }

  live.addEventListener("click", (event) => {
    const zoom = event.target.closest("[data-zoom]");
    if (zoom) { ZOOMS[zoom.dataset.zoom](); return; }
    const node = event.target.closest(".node[data-task]");
    if (node && panel) open(node.dataset.task);
  });
  live.addEventListener("keydown", (event) => {
    const node = event.target.closest(".node[data-task]");
    if (node && panel && (event.key === "Enter" || event.key === " ")) {
      event.preventDefault();
      open(node.dataset.task);
    }
  });
  if (panel) {
    panel.querySelector("[data-close]").addEventListener("click", close);
    panel.addEventListener("omoi:task", (event) => followLog(event.detail.id));
    document.addEventListener("keydown", (event) => {
      if (event.key === "Escape" && !panel.hidden) close();
    });
    const linked = /^#task=([0-9a-f-]{36})$/.exec(window.location.hash);
    if (linked) open(linked[1]);
  }

  // -- the board's filters: applied as you type, without a reload ----------------------------

  if (filters) {
    let typing = null;
    const apply = () => {
      const query = new URLSearchParams();
      for (const [name, value] of new FormData(filters)) if (value) query.set(name, value);
      const address = query.toString() ? `${filters.action}?${query}` : filters.action;
      history.replaceState(null, "", address);
      query.set("partial", "1");
      live.dataset.partial = `${filters.action}?${query}`;
      refresh();
    };
    filters.addEventListener("submit", (event) => { event.preventDefault(); apply(); });
    filters.addEventListener("change", apply);
    filters.addEventListener("input", () => { clearTimeout(typing); typing = setTimeout(apply, 250); });
  }

  // the stream starts after the newest event at render time, and resumes by Last-Event-ID
  const stream = new EventSource(live.dataset.stream);
  stream.onopen = () => { badge.className = "online"; };
  stream.onerror = () => {  // EventSource reconnects by itself, unless the session ended
    badge.className = "offline";
    if (stream.readyState === EventSource.CLOSED) refresh();
  };
  live.dataset.events.split(",").forEach((type) => stream.addEventListener(type, soon));
  setInterval(refresh, 10000);  // heartbeat ages move without events
})();
