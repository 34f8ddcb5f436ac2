// The live tail: new rows from the server's event stream. Text only (textContent), never
// markup: event fields are user data.
"use strict";
(function () {
  const status = document.getElementById("status");
  const body = document.getElementById("tail");
  const source = new EventSource(status.dataset.stream);
  const cell = (text) => { const td = document.createElement("td"); td.textContent = text; return td; };
  source.onopen = () => { status.textContent = "live"; };
  source.onerror = () => { status.textContent = "reconnecting"; };
  source.addEventListener("append", (message) => {
    const e = JSON.parse(message.data);
    if (body.querySelector(`tr[data-seq="${e.seq}"]`)) return;  // replayed after a reconnect
    const row = document.createElement("tr");
    row.dataset.seq = String(e.seq);
    row.className = "new";
    for (const value of [e.seq, e.time, e.type, e.conversation_id || "-", e.user_id || "-", e.summary]) {
      row.appendChild(cell(String(value)));
    }
    body.appendChild(row);
    while (body.rows.length > 500) body.deleteRow(0);  // a long session stays light
    row.scrollIntoView({ block: "nearest" });
  });
})();
