// Small enhancements of the dashboard's pages; every page works without this file.
"use strict";

document.addEventListener("DOMContentLoaded", () => {
  // Copy buttons: shown only where the clipboard can be written.
  for (const button of document.querySelectorAll("button[data-copy]")) {
    const field = document.getElementById(button.dataset.copy);
    if (!field || !navigator.clipboard) continue;
    button.hidden = false;
    button.addEventListener("click", async () => {
      const label = button.textContent;
      try {
        await navigator.clipboard.writeText(field.value);
        button.textContent = "Copied";
      } catch {
        field.select();
        button.textContent = "Press Ctrl+C to copy";
      }
      setTimeout(() => { button.textContent = label; }, 2000);
    });
  }
});

// Analytics: the charts are drawn on the server; every few seconds this asks the dashboard's
// JSON endpoint for the same figures and swaps the lines and numbers in place (no reload, no
// layout change: only attributes and text move).
document.addEventListener("DOMContentLoaded", () => {
  const section = document.querySelector("[data-analytics]");
  if (!section) return;
  const url = section.dataset.analytics + "?period=" + encodeURIComponent(section.dataset.period);
  const status = section.querySelector("[data-live-status]");
  const number = (n) => Number(n).toLocaleString("en-US");
  async function refresh() {
    if (document.hidden) return;
    try {
      const response = await fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } });
      if (!response.ok) throw new Error("HTTP " + response.status);
      const data = await response.json();
      for (const [key, chart] of Object.entries(data.charts)) {
        const figure = section.querySelector('[data-chart="' + key + '"]');
        if (!figure) continue;
        figure.querySelector(".line").setAttribute("points", chart.line);
        figure.querySelector(".area").setAttribute("d", chart.area);
        figure.querySelector("[data-max]").textContent = chart.max;
      }
      for (const [key, value] of Object.entries(data.totals)) {
        for (const el of section.querySelectorAll('[data-total="' + key + '"]')) el.textContent = number(value);
      }
      for (const [key, value] of Object.entries(data.now)) {
        for (const el of section.querySelectorAll('[data-now="' + key + '"]')) el.textContent = number(value);
      }
      for (const el of section.querySelectorAll("[data-from]")) el.textContent = data.from;
      status.textContent = "Updated " + new Date().toLocaleTimeString() + ".";
    } catch (error) {
      status.textContent = "Could not update (" + error.message + "); retrying.";
    }
  }
  setInterval(refresh, 3000);
});
