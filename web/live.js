// The plain live list (/live?editions=en,ar): LiveTicker from reader.js. A file, not an inline
// script, so the page's Content-Security-Policy allows scripts from its own origin only.
import { LiveTicker } from "/web/reader.js";
const editions = (new URLSearchParams(location.search).get("editions") || "").split(",").filter(Boolean);
new LiveTicker(document.getElementById("lines"), { editions, status: document.getElementById("status") }).start();
