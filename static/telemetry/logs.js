// Request log: every few seconds, fetch the rows written since the newest one shown and put
// them on top. No framework, no build step. The server says whether the page is live (the
// newest page of an open-ended range) and where to poll. The cursor is the server's: `since`
// (the newest id it looked at) and `gaps` (lower ids whose rows were not committed yet, looked
// up again on the next poll), both sent back unchanged.
(function () {
  "use strict";
  var table = document.getElementById("log-table");
  if (!table || table.dataset.live !== "1") {
    return;
  }
  var rows = document.getElementById("log-rows");
  var toggle = document.getElementById("live-toggle");
  var notice = document.getElementById("live-notice");
  var since = table.dataset.since || "0";
  var gaps = table.dataset.gaps || "";
  var every = parseInt(table.dataset.refreshMs, 10) || 3000;
  var maxRows = 500;
  var paused = false;
  var busy = false;

  function pollUrl() {
    var url = new URL(table.dataset.liveUrl, window.location.href);
    url.searchParams.set("since", since);
    if (gaps) {
      url.searchParams.set("gaps", gaps);
    }
    return url.toString();
  }

  function show(message) {
    notice.textContent = message;
    notice.hidden = !message;
  }

  function insert(html) {
    var holder = document.createElement("tbody");
    holder.innerHTML = html;
    var fresh = Array.prototype.slice.call(holder.querySelectorAll("tr"));
    for (var i = fresh.length - 1; i >= 0; i--) {
      var existing = rows.querySelector('tr[data-id="' + fresh[i].dataset.id + '"]');
      if (!existing) {
        rows.insertBefore(fresh[i], rows.firstChild);
      }
    }
    // Keep the page light on a busy gateway: drop the oldest rows and point the pager's
    // "Older" link just below the last row kept, so nothing becomes unreachable.
    if (rows.children.length > maxRows) {
      while (rows.children.length > maxRows) {
        rows.removeChild(rows.lastElementChild);
      }
      olderFrom(rows.lastElementChild.dataset.cursor);
    }
    var empty = document.getElementById("log-empty");
    if (empty && rows.children.length) {
      empty.hidden = true;
    }
  }

  function olderFrom(cursor) {
    var pager = document.querySelector(".pager");
    var link = pager.querySelector('a[rel="next"]');
    if (!link) {
      link = document.createElement("a");
      link.rel = "next";
      link.textContent = "Older \u203a";
      pager.appendChild(link);
    }
    var url = new URL(table.dataset.liveUrl, window.location.href);
    url.pathname = window.location.pathname;
    url.searchParams.set("before", cursor);
    link.href = url.pathname + url.search;
  }

  function poll() {
    if (paused || busy || document.hidden) {
      return;
    }
    busy = true;
    fetch(pollUrl(), { credentials: "same-origin", headers: { Accept: "application/json" } })
      .then(function (response) {
        if (!response.ok || response.redirected) {
          throw new Error("HTTP " + response.status);
        }
        return response.json();
      })
      .then(function (data) {
        since = String(data.since);
        gaps = data.gaps || "";
        if (data.count) {
          insert(data.html);
        }
        show(data.truncated ? "Many new requests: only the latest are shown. Reload for the full list." : "");
      })
      .catch(function () {
        show("Live updates paused: the gateway did not answer. Retrying…");
      })
      .then(function () {
        busy = false;
      });
  }

  if (toggle) {
    toggle.addEventListener("click", function () {
      paused = !paused;
      toggle.classList.toggle("paused", paused);
      toggle.classList.toggle("on", !paused);
      toggle.setAttribute("aria-pressed", String(!paused));
      toggle.querySelector(".label").textContent = paused ? "Paused" : "Live";
      if (!paused) {
        poll();
      }
    });
  }
  window.setInterval(poll, every);
})();
