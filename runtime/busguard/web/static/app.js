// busguard's operator page: polls /api/view, draws the tap-off rows, the alarm table and a
// trend from /api/history on a canvas. No framework, no CDN: this file is all the script.
"use strict";
(function () {
  const $ = (id) => document.getElementById(id);
  const POLL_MS = 1000;
  const TREND_MS = { "1h": 5000, "24h": 60000, "30d": 300000 };  // about one new sample a redraw
  let layout = null, trendTimer = null;

  function fmt(v, digits) {
    return v === null || v === undefined ? "–" : Number(v).toFixed(digits);
  }
  function utc(t) {
    if (!t) return "–";
    return new Date(t * 1000).toISOString().replace("T", " ").replace(/\.\d+Z$/, "Z");
  }
  function cell(tr, text, cls) {
    const td = document.createElement("td");
    td.textContent = text;
    if (cls) td.className = cls;
    tr.appendChild(td);
    return td;
  }
  async function getJSON(url) {
    const r = await fetch(url, { credentials: "same-origin", cache: "no-store" });
    if (!r.ok) throw new Error(url + ": " + r.status + " " + (await r.text()).trim());
    return r.json();
  }

  function renderHeader(h) {
    const st = $("state");
    st.textContent = h.data_origin + " · " + h.runtime_state;
    st.className = "badge " + h.data_origin;
    $("origin").textContent = h.data_origin;
    $("lateness").textContent = fmt(h.scan_lateness_p99_ms, 2) + " ms";
    $("overruns").textContent = String(h.overruns);
    $("alarm-count").textContent = h.active_alarms + " active, " + h.unacked_alarms +
      " unacked (" + h.highest_severity + ")";
    $("updated").textContent = utc(h.image_utc);
  }

  function renderTaps(taps) {
    const body = $("taps").tBodies[0];
    const rows = [];
    for (const t of taps) {
      const tr = document.createElement("tr");
      tr.dataset.tap = t.name;
      if (t.tripped) tr.className = "tripped";
      const q = t.meter_quality && t.meter_quality !== "good" ? "q-" + t.meter_quality : "";
      cell(tr, t.name + (t.probes.length ? " / " + t.probes.join(", ") : ""));
      cell(tr, fmt(t.power_kw, 1), q).dataset.field = "power_kw";
      cell(tr, fmt(t.load_pct, 0), q).dataset.field = "load_pct";
      cell(tr, t.current_a.map((a) => fmt(a, 0)).join(" / "), q).dataset.field = "current_a";
      cell(tr, fmt(t.voltage_ll_v, 0), q).dataset.field = "voltage_ll_v";
      cell(tr, fmt(t.power_factor, 3), q).dataset.field = "power_factor";
      cell(tr, fmt(t.thd_v_pct, 2), q).dataset.field = "thd_v_pct";
      cell(tr, fmt(t.temp_c, 1)).dataset.field = "temp_c";
      cell(tr, t.breaker || "–");
      cell(tr, t.led || "–").dataset.field = "led";
      cell(tr, t.tripped ? "TRIPPED" + (t.trip_cause ? " " + t.trip_cause : "") +
        (t.trip_latched ? " (latched)" : "") : (t.breaker ? "closed" : "–")).dataset.field =
        "trip";
      cell(tr, t.alarms.join(" "));
      rows.push(tr);
    }
    body.replaceChildren(...rows);
  }

  function renderAlarms(table) {
    const body = $("alarms").tBodies[0];
    const rows = table.map((a) => {
      const tr = document.createElement("tr");
      tr.dataset.code = a.code;
      cell(tr, utc(a.raised_utc));
      cell(tr, a.code);
      cell(tr, a.severity, "sev-" + a.severity);
      cell(tr, a.device);
      cell(tr, a.state);
      cell(tr, a.acked ? "acked" : "unacked");
      return tr;
    });
    body.replaceChildren(...rows);
    $("no-alarms").hidden = rows.length > 0;
  }

  async function poll() {
    try {
      const v = await getJSON("/api/view");
      renderHeader(v.header);
      renderTaps(v.taps);
      renderAlarms(v.alarm_table);
      if (window.busguardFirstRender === undefined) {
        window.busguardFirstRender = performance.now();
        document.body.dataset.rendered = "1";
      }
    } catch (e) {
      $("state").textContent = "no data: " + e.message;
      $("state").className = "badge stale";
    }
    setTimeout(poll, POLL_MS);
  }

  function trendPoints() {
    const sel = $("trend-point");
    const names = [];
    for (const t of layout.taps) {
      if (t.meter) {
        names.push(t.meter + ".power_kw", t.meter + ".current_l1_a", t.meter + ".thd_v_l1_pct");
      }
      for (const p of t.probes) names.push(p + ".temp_c");
    }
    sel.replaceChildren(...names.map((n) => new Option(n, n)));
  }

  function drawTrend(data) {
    const cv = $("trend"), g = cv.getContext("2d");
    const W = cv.width, H = cv.height, L = 60, R = 10, T = 10, B = 28;
    g.clearRect(0, 0, W, H);
    const s = data.samples.filter((x) => x[2] !== null);
    cv.dataset.samples = String(s.length);
    if (!s.length) {
      $("trend-note").textContent = "No samples for " + data.point + " in " + data.range + ".";
      cv.dataset.drawn = "0";
      return;
    }
    let t0 = s[0][0], t1 = s[s.length - 1][0], lo = Infinity, hi = -Infinity;
    for (const x of s) {
      lo = Math.min(lo, x[1] ?? x[2]); hi = Math.max(hi, x[3] ?? x[2]);
    }
    if (t1 === t0) t1 = t0 + 1;
    if (hi === lo) { hi += 1; lo -= 1; }
    const X = (t) => L + (W - L - R) * (t - t0) / (t1 - t0);
    const Y = (v) => T + (H - T - B) * (1 - (v - lo) / (hi - lo));
    g.strokeStyle = "#c8d0d8"; g.fillStyle = "#445"; g.font = "11px sans-serif";
    g.beginPath();
    for (let i = 0; i <= 4; i++) {
      const v = lo + (hi - lo) * i / 4, y = Y(v);
      g.moveTo(L, y); g.lineTo(W - R, y);
      g.fillText(v.toPrecision(4), 2, y + 4);
    }
    g.stroke();
    for (let i = 0; i <= 4; i++) {
      const t = t0 + (t1 - t0) * i / 4;
      const label = new Date(t * 1000).toISOString().slice(data.range === "30d" ? 5 : 11, 16);
      g.fillText(label, Math.min(X(t) - 14, W - 50), H - 8);
    }
    g.fillStyle = "rgba(40, 110, 200, 0.18)";  // min..max band
    g.beginPath();
    s.forEach((x, i) => { const px = X(x[0]), py = Y(x[3] ?? x[2]);
      if (i) g.lineTo(px, py); else g.moveTo(px, py); });
    for (let i = s.length - 1; i >= 0; i--) g.lineTo(X(s[i][0]), Y(s[i][1] ?? s[i][2]));
    g.closePath(); g.fill();
    g.strokeStyle = "#1f5fb0"; g.lineWidth = 1.5;  // average
    g.beginPath();
    s.forEach((x, i) => { const px = X(x[0]), py = Y(x[2]);
      if (i) g.lineTo(px, py); else g.moveTo(px, py); });
    g.stroke();
    g.lineWidth = 1;
    const last = s[s.length - 1];
    $("trend-note").textContent = data.point + ": " + s.length + " samples, last " +
      fmt(last[2], 2) + " at " + utc(last[0]);
    cv.dataset.drawn = "1";
    cv.dataset.point = data.point;
    cv.dataset.last = String(last[2]);
  }

  async function trend() {
    clearTimeout(trendTimer);
    const p = $("trend-point").value, r = $("trend-range").value;
    if (p) {
      try {
        drawTrend(await getJSON("/api/history?point=" + encodeURIComponent(p) + "&range=" + r));
      } catch (e) {
        $("trend-note").textContent = "Trend unavailable: " + e.message;
        $("trend").dataset.drawn = "0";
      }
    }
    trendTimer = setTimeout(trend, TREND_MS[r] || 60000);
  }

  async function start() {
    try {
      layout = await getJSON("/api/layout");
      $("site").textContent = layout.site;
      trendPoints();
    } catch (e) {
      $("state").textContent = "no layout: " + e.message;
    }
    $("trend-point").addEventListener("change", trend);
    $("trend-range").addEventListener("change", trend);
    poll();
    trend();
  }
  document.addEventListener("DOMContentLoaded", start);
})();
