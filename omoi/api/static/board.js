// omoi board: follow the page's event stream (/board/stream) and, whenever something happens,
// re-render the live region from the server (?partial=1). Same-origin requests only: the
// board session is a cookie; when it ends the server redirects to the sign-in page, and so
// does this page.
(function () {
  "use strict";
  const live = document.getElementById("live");
  const badge = document.getElementById("connection");
  if (!live) return;
  let timer = null;
  let fetching = false;
  let again = false;

  async function refresh() {
    if (fetching) { again = true; return; }
    fetching = true;
    try {
      const resp = await fetch(live.dataset.partial, { credentials: "same-origin" });
      if (resp.redirected) { window.location.assign(resp.url); return; }  // signed out
      if (resp.ok) live.innerHTML = await resp.text();
    } finally {
      fetching = false;
      if (again) { again = false; refresh(); }
    }
  }

  function soon() {  // a burst of events costs one refresh
    clearTimeout(timer);
    timer = setTimeout(refresh, 150);
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
