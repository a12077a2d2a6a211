// The demo page (/): the embed snippet, with this server's origin. A file, not an inline
// script, so the page's Content-Security-Policy allows scripts from its own origin only.
document.getElementById("snippet").textContent =
  `<script src="${location.origin}/web/ticker.js" defer></script>\n` +
  `<flash-ticker edition="en" topics="politics,mena" min-urgency="urgent"></flash-ticker>`;
