// Live progress: one EventSource per page, fed by a watch the server makes with the
// user's own token. Only textContent and element properties are set (no HTML is built
// from data), which the Content-Security-Policy and the escaping rely on.
"use strict";

function updateRow(row, job) {
  for (const cell of row.querySelectorAll("[data-field]")) {
    const field = cell.dataset.field;
    if (field === "progress") {
      cell.value = job.percent;
    } else if (field === "percent") {
      cell.textContent = job.percent + "%";
    } else if (field === "phase") {
      cell.textContent = job.phase;
      cell.className = "phase phase-" + job.phase;
    } else if (field in job) {
      cell.textContent = job[field];
    }
  }
}

function start() {
  const table = document.getElementById("jobs");
  const live = document.getElementById("live");
  if (!table || !live) return;
  const namespace = table.dataset.namespace;
  const only = table.dataset.only;
  const source = new EventSource("/jobs/stream?namespace=" + encodeURIComponent(namespace));
  source.onopen = () => { live.textContent = "live updates: on"; };
  source.onerror = () => { live.textContent = "live updates: reconnecting…"; };
  source.addEventListener("failure", (e) => {
    live.textContent = "live updates stopped: " + JSON.parse(e.data);
    source.close();
  });
  source.addEventListener("job", (e) => {
    const job = JSON.parse(e.data);
    if (only && job.name !== only) return;
    const row = document.getElementById("job-" + job.name);
    if (row && job.change === "DELETED") {
      row.remove();
    } else if (row) {
      updateRow(row, job);
      const heading = document.getElementById("phase");
      if (heading && only) {
        heading.textContent = job.phase;
        heading.className = "phase phase-" + job.phase;
      }
    } else if (!only && job.change === "ADDED") {
      live.textContent = "new job " + job.name + ": reload to see it";
    }
  });
}

document.addEventListener("DOMContentLoaded", start);
