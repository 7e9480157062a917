// rackboot console: keeps the live part of a page current. The element with
// `data-live` names its event stream (`data-stream`) and the URL of its own
// contents (`data-part`); on each event the part is fetched again and put in
// place, so what shows is always what the server reads now. No other script
// runs on the console's pages.
"use strict";
(function () {
  const live = document.querySelector("[data-live]");
  if (!live || !window.EventSource) return;
  let busy = false;
  let again = false;
  async function refresh() {
    if (busy) { again = true; return; }
    busy = true;
    try {
      const r = await fetch(live.dataset.part, { credentials: "same-origin" });
      if (r.status === 401) { window.location.assign(live.dataset.login); return; }
      if (r.ok) {
        live.innerHTML = await r.text();
        live.dataset.refreshed = String(Date.now());
      }
    } catch (e) {
      // The appliance restarting: the stream reconnects and refreshes again.
    } finally {
      busy = false;
      if (again) { again = false; refresh(); }
    }
  }
  const events = new EventSource(live.dataset.stream);
  events.addEventListener("fleet", refresh);
  events.addEventListener("node", refresh);
  // A stream that comes back after a gap may have missed changes.
  events.addEventListener("open", function () {
    if (live.dataset.opened) refresh();
    live.dataset.opened = "1";
  });
})();
