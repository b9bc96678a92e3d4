// mserve's live dashboard: polls `data` (GET /dashboard/data, see docs/monitoring.md) once a
// second, keeps the server's window of points and draws them. No libraries; nothing is fetched
// but the page's own folder.
(function () {
  "use strict";

  var POLL_MS = 1000;
  var MIN_SPAN_S = 60; // a chart spans at least this much time, so a fresh server's line grows
  var GAP_S = 3.5; // points further apart than this are not joined (the server was unreachable)
  var SVG = "http://www.w3.org/2000/svg";
  var COLORS = {
    rps: "#1f4fd1",
    p50_ms: "#0e8a7d",
    p99_ms: "#c2410c",
    queue_depth: "#7c3aed",
    errors_per_s: "#c81e1e",
    batch: "#1f4fd1",
  };

  var state = { server: null, names: [], points: [], last: null, failures: 0 };
  var cards = new Map(); // model name -> {root, figures, charts, drift}
  var dataUrl = new URL("data", document.baseURI);

  // ---- formatting -------------------------------------------------------------------------

  function isNum(v) {
    return typeof v === "number" && isFinite(v);
  }

  /** A figure for a person: about three significant digits, "–" when unknown. */
  function fmt(v) {
    if (!isNum(v)) return "–";
    var a = Math.abs(v);
    if (a === 0) return "0";
    if (a >= 100) return String(Math.round(v));
    if (a >= 10) return v.toFixed(1);
    if (a >= 1) return v.toFixed(2);
    if (a >= 0.01) return v.toFixed(3);
    return v.toPrecision(2);
  }

  /** Compact tick labels: 1500 -> 1.5k. */
  function tick(v) {
    var a = Math.abs(v);
    if (a >= 1e6) return +(v / 1e6).toFixed(1) + "M";
    if (a >= 1e3) return +(v / 1e3).toFixed(1) + "k";
    return String(+v.toPrecision(3));
  }

  function clock(t) {
    return new Date(t * 1000).toLocaleTimeString([], { hour12: false });
  }

  function ago(s) {
    if (s === 0) return "now";
    return "−" + (s >= 60 && s % 60 === 0 ? s / 60 + "m" : s + "s");
  }

  function setFigure(el, value, text) {
    if (!el) return;
    el.dataset.value = value === null || value === undefined ? "" : String(value);
    el.textContent = text;
  }

  // ---- charts (inline SVG) ----------------------------------------------------------------

  function node(name, attrs, parent) {
    var el = document.createElementNS(SVG, name);
    for (var k in attrs) el.setAttribute(k, attrs[k]);
    if (parent) parent.appendChild(el);
    return el;
  }

  function text(parent, x, y, s, cls, anchor) {
    var el = node("text", { x: x, y: y, class: cls || "tick", "text-anchor": anchor || "start" }, parent);
    el.textContent = s;
    return el;
  }

  /** The smallest of 1, 2, 2.5, 5 times a power of ten that is at least v. */
  function niceCeil(v) {
    if (!(v > 0)) return 1;
    var p = Math.pow(10, Math.floor(Math.log10(v)));
    var steps = [1, 2, 2.5, 5, 10];
    for (var i = 0; i < steps.length; i++) if (steps[i] * p >= v * 0.9999) return steps[i] * p;
    return 10 * p;
  }

  function size(svg, height) {
    var w = Math.max(Math.floor(svg.getBoundingClientRect().width), 160);
    svg.setAttribute("viewBox", "0 0 " + w + " " + height);
    while (svg.firstChild) svg.removeChild(svg.firstChild);
    return w;
  }

  /** A line chart of one or more series over the time window ending at the last point. */
  function lineChart(svg, times, series) {
    var H = 118;
    var W = size(svg, H);
    var pad = { l: 38, r: 12, t: 8, b: 18 };
    var iw = W - pad.l - pad.r;
    var ih = H - pad.t - pad.b;
    var windowS = (state.server && state.server.window_s) || 300;
    var end = times.length ? times[times.length - 1] : 0;
    var span = times.length ? Math.min(Math.max(end - times[0], MIN_SPAN_S), windowS) : MIN_SPAN_S;
    var start = end - span;
    var max = 0;
    series.forEach(function (s) {
      s.values.forEach(function (v) {
        if (isNum(v) && v > max) max = v;
      });
    });
    var top = niceCeil(max);
    var x = function (t) {
      return pad.l + ((t - start) / span) * iw;
    };
    var y = function (v) {
      return pad.t + ih - (v / top) * ih;
    };

    var axes = node("g", { class: "axes" }, svg);
    [0, top / 2, top].forEach(function (v) {
      node("line", { x1: pad.l, x2: W - pad.r, y1: y(v), y2: y(v), class: v ? "grid" : "axis" }, axes);
      text(axes, pad.l - 5, y(v) + 3.5, tick(v), "tick", "end");
    });
    var steps = [10, 15, 30, 60, 120, 300];
    var step = steps.find(function (s) { return span / s <= 5; }) || 300;
    for (var k = 0; k * step <= span + 0.001; k++) {
      var tx = x(end - k * step);
      node("line", { x1: tx, x2: tx, y1: pad.t + ih, y2: pad.t + ih + 3, class: "axis" }, axes);
      text(axes, tx, H - 4, ago(k * step), "tick", k === 0 ? "end" : "middle");
    }

    var drawn = 0;
    series.forEach(function (s) {
      var d = "";
      var area = "";
      var prevT = null;
      var runStart = null;
      var lastX = null;
      var lastY = null;
      for (var i = 0; i < times.length; i++) {
        var v = s.values[i];
        var t = times[i];
        if (t < start || !isNum(v)) {
          if (runStart !== null) area += "L" + lastX + "," + y(0) + "Z";
          runStart = null;
          prevT = null;
          continue;
        }
        var px = +x(t).toFixed(1);
        var py = +y(v).toFixed(1);
        var joined = prevT !== null && t - prevT <= GAP_S;
        if (!joined && runStart !== null) area += "L" + lastX + "," + y(0) + "Z";
        if (!joined) {
          runStart = px;
          area += "M" + px + "," + y(0) + "L" + px + "," + py;
        } else {
          area += "L" + px + "," + py;
        }
        d += (joined ? "L" : "M") + px + "," + py;
        prevT = t;
        lastX = px;
        lastY = py;
        drawn++;
      }
      if (runStart !== null) area += "L" + lastX + "," + y(0) + "Z";
      if (s.fill && area) node("path", { d: area, fill: s.color, class: "area" }, svg);
      if (d) {
        node("path", { d: d, stroke: s.color, class: "line", "data-series": s.key }, svg);
        if (lastX !== null && runStart !== null) {
          node("circle", { cx: lastX, cy: lastY, r: 3, fill: s.color, class: "last" }, svg);
        }
      }
    });
    svg.dataset.points = String(drawn);
    if (!drawn) text(svg, pad.l + iw / 2, pad.t + ih / 2, "no data yet", "none", "middle");
  }

  function bucketOrder(a, b) {
    var x = a === "+Inf" ? Infinity : parseFloat(a);
    var y = b === "+Inf" ? Infinity : parseFloat(b);
    return x - y;
  }

  /** Bars of executions per batch-size bucket (each labelled with its upper bound). */
  function batchChart(svg, sizes) {
    var H = 118;
    var W = size(svg, H);
    var pad = { l: 12, r: 12, t: 16, b: 18 };
    var keys = Object.keys(sizes || {}).sort(bucketOrder);
    var total = 0;
    keys.forEach(function (k) { total += sizes[k]; });
    svg.dataset.points = String(keys.length);
    node("line", { x1: pad.l, x2: W - pad.r, y1: H - pad.b, y2: H - pad.b, class: "axis" }, svg);
    if (!keys.length || !(total > 0)) {
      text(svg, W / 2, (H - pad.b) / 2 + 6, "no executions in the last 10 s", "none", "middle");
      return;
    }
    var most = Math.max.apply(null, keys.map(function (k) { return sizes[k]; }));
    var slot = (W - pad.l - pad.r) / keys.length;
    var bw = Math.min(slot * 0.7, 56);
    var ih = H - pad.t - pad.b;
    keys.forEach(function (k, i) {
      var c = sizes[k];
      var h = Math.max((c / most) * ih, 1);
      var cx = pad.l + slot * (i + 0.5);
      var bar = node("rect", {
        x: +(cx - bw / 2).toFixed(1), y: +(H - pad.b - h).toFixed(1), width: +bw.toFixed(1),
        height: +h.toFixed(1), rx: 2, fill: COLORS.batch, class: "bar", "data-bucket": k,
        "data-count": c,
      }, svg);
      node("title", {}, bar).textContent = c + " executions of batch size ≤ " + k;
      text(svg, cx, H - 5, k === "+Inf" ? "more" : "≤" + k, "tick", "middle");
      text(svg, cx, H - pad.b - h - 4, Math.round((100 * c) / total) + "%", "bar-label", "middle");
    });
  }

  // ---- cards --------------------------------------------------------------------------------

  function makeCard(name) {
    var root = document.getElementById("card-template").content.firstElementChild.cloneNode(true);
    root.dataset.model = name;
    root.querySelector(".model-name").textContent = name;
    var figures = {};
    root.querySelectorAll("[data-figure]").forEach(function (el) {
      figures[el.dataset.figure] = el;
    });
    var charts = {};
    root.querySelectorAll("[data-chart]").forEach(function (el) {
      charts[el.dataset.chart] = { svg: el.querySelector("svg"), legend: el.querySelector(".legend") };
    });
    return { root: root, figures: figures, charts: charts, drift: root.querySelector(".drift") };
  }

  function legend(el, items) {
    el.textContent = "";
    items.forEach(function (it) {
      var span = document.createElement("span");
      span.className = "key";
      span.style.setProperty("--c", it.color);
      span.dataset.series = it.key;
      span.textContent = (it.label ? it.label + " " : "") + fmt(it.value);
      el.appendChild(span);
    });
  }

  function psiLevel(psi) {
    if (!isNum(psi)) return "none";
    return psi < 0.1 ? "ok" : psi < 0.25 ? "warn" : "alert";
  }

  function renderDrift(card, drift) {
    var inputs = drift ? Object.keys(drift).sort() : [];
    card.drift.hidden = inputs.length === 0;
    var body = card.drift.querySelector("tbody");
    body.textContent = "";
    inputs.forEach(function (input) {
      var d = drift[input] || {};
      var tr = document.createElement("tr");
      tr.dataset.input = input;
      var cells = [
        ["input", null, input],
        ["psi", d.psi, fmt(d.psi)],
        ["feature_shift", d.feature_shift, fmt(d.feature_shift) + (isNum(d.feature_shift) ? " σ" : "")],
        ["mean", d.mean, fmt(d.mean)],
        ["std", d.std, fmt(d.std)],
      ];
      cells.forEach(function (c) {
        var td = document.createElement(c[0] === "input" ? "th" : "td");
        if (c[0] === "psi") {
          var pill = document.createElement("span");
          pill.className = "psi";
          pill.dataset.level = psiLevel(d.psi);
          pill.dataset.figure = "psi";
          setFigure(pill, d.psi, c[2]);
          pill.title = { ok: "stable (< 0.1)", warn: "shifted (0.1–0.25)", alert: "large shift (≥ 0.25)", none: "" }[pill.dataset.level];
          td.appendChild(pill);
        } else {
          if (c[0] !== "input") td.dataset.figure = c[0];
          setFigure(td, c[0] === "input" ? input : c[1], c[2]);
        }
        tr.appendChild(td);
      });
      body.appendChild(tr);
    });
  }

  function renderCard(card, name) {
    var pts = state.points;
    var last = pts.length ? pts[pts.length - 1].models[name] : undefined;
    var m = last || {};
    var f = card.figures;
    ["rps", "p50_ms", "p99_ms", "errors_per_s", "queue_depth", "batch_avg", "queue_ms", "compute_ms"].forEach(
      function (key) {
        setFigure(f[key], isNum(m[key]) ? m[key] : null, fmt(m[key]));
      }
    );
    ["requests_total", "errors_total"].forEach(function (key) {
      setFigure(f[key], isNum(m[key]) ? m[key] : null, isNum(m[key]) ? String(Math.round(m[key])) : "–");
    });
    var ready = typeof m.ready === "boolean" ? m.ready : null;
    setFigure(f.ready, ready, ready === null ? "–" : ready ? "ready" : "not ready");
    f.ready.dataset.state = ready === null ? "unknown" : ready ? "ready" : "down";
    card.root.classList.toggle("has-errors", isNum(m.errors_per_s) && m.errors_per_s > 0);

    var times = [];
    var col = function (key) {
      return pts.map(function (p) {
        var v = p.models[name];
        return v ? v[key] : null;
      });
    };
    pts.forEach(function (p) { times.push(p.t); });
    var rps = col("rps");
    var p50 = col("p50_ms");
    var p99 = col("p99_ms");
    var depth = col("queue_depth");
    var errs = col("errors_per_s");
    var c = card.charts;
    lineChart(c.rps.svg, times, [{ key: "rps", values: rps, color: COLORS.rps, fill: true }]);
    legend(c.rps.legend, [{ key: "rps", value: m.rps, color: COLORS.rps }]);
    lineChart(c.latency.svg, times, [
      { key: "p50_ms", values: p50, color: COLORS.p50_ms },
      { key: "p99_ms", values: p99, color: COLORS.p99_ms },
    ]);
    legend(c.latency.legend, [
      { key: "p50_ms", label: "p50", value: m.p50_ms, color: COLORS.p50_ms },
      { key: "p99_ms", label: "p99", value: m.p99_ms, color: COLORS.p99_ms },
    ]);
    lineChart(c.queue_depth.svg, times, [
      { key: "queue_depth", values: depth, color: COLORS.queue_depth, fill: true },
    ]);
    legend(c.queue_depth.legend, [{ key: "queue_depth", value: m.queue_depth, color: COLORS.queue_depth }]);
    lineChart(c.errors_per_s.svg, times, [
      { key: "errors_per_s", values: errs, color: COLORS.errors_per_s, fill: true },
    ]);
    legend(c.errors_per_s.legend, [{ key: "errors_per_s", value: m.errors_per_s, color: COLORS.errors_per_s }]);
    batchChart(c.batch_sizes.svg, m.batch_sizes);
    legend(c.batch_sizes.legend, [{ key: "batch_avg", label: "mean", value: m.batch_avg, color: COLORS.batch }]);
    renderDrift(card, m.drift);
  }

  // ---- the page -----------------------------------------------------------------------------

  function modelNames() {
    var names = new Set(state.names);
    var last = state.points[state.points.length - 1];
    if (last) Object.keys(last.models || {}).forEach(function (n) { names.add(n); });
    return Array.from(names).sort();
  }

  function setHeader(key, value, textValue) {
    setFigure(document.querySelector("[data-server] [data-figure='" + key + "']"), value, textValue);
  }

  function render() {
    var s = state.server || {};
    setHeader("name", s.name || null, s.name || "mserve");
    setHeader("version", s.version || null, s.version ? "v" + s.version : "");
    setHeader("workers", isNum(s.workers) ? s.workers : null, isNum(s.workers) ? String(s.workers) : "–");
    if (isNum(s.window_s)) {
      document.getElementById("window").textContent =
        s.window_s % 60 === 0 ? s.window_s / 60 + " minutes" : s.window_s + " seconds";
    }
    var p = state.points[state.points.length - 1] || {};
    setHeader("in_flight", isNum(p.in_flight) ? p.in_flight : null, isNum(p.in_flight) ? String(Math.round(p.in_flight)) : "–");
    setHeader("cpu", isNum(p.cpu) ? p.cpu : null, fmt(p.cpu));
    var mib = isNum(p.rss_bytes) ? p.rss_bytes / 1048576 : null;
    setHeader("rss_mib", mib, mib === null ? "–" : mib.toFixed(1));
    setHeader("updated", isNum(p.t) ? p.t : null, isNum(p.t) ? clock(p.t) : "–");

    var names = modelNames();
    var grid = document.getElementById("models");
    cards.forEach(function (card, name) {
      if (names.indexOf(name) < 0) {
        card.root.remove();
        cards.delete(name);
      }
    });
    names.forEach(function (name, i) {
      var card = cards.get(name);
      if (!card) {
        card = makeCard(name);
        cards.set(name, card);
      }
      if (grid.children[i] !== card.root) grid.insertBefore(card.root, grid.children[i] || null);
      renderCard(card, name);
    });
    document.getElementById("empty").hidden = names.length > 0 || !state.server;
    if (isNum(p.t)) document.body.dataset.updated = String(p.t);
  }

  function setConnection(ok) {
    var el = document.getElementById("connection");
    var label = el.querySelector(".connection-text");
    var status = ok ? "live" : "lost";
    document.body.dataset.connection = status;
    el.dataset.state = status;
    label.textContent = ok
      ? "live"
      : "connection lost" + (state.failures > 1 ? " (" + state.failures + " tries)" : "") + " — retrying";
  }

  function merge(doc) {
    state.server = doc.server || state.server;
    state.names = Array.isArray(doc.models) ? doc.models : state.names;
    var fresh = (doc.points || []).filter(function (p) {
      return isNum(p.t) && (state.last === null || p.t > state.last);
    });
    if (fresh.length) {
      state.points = state.points.concat(fresh);
      state.last = state.points[state.points.length - 1].t;
    }
    var windowS = (state.server && state.server.window_s) || 300;
    var cut = state.last === null ? -Infinity : state.last - windowS;
    var first = 0;
    while (first < state.points.length && state.points[first].t <= cut) first++;
    state.points = state.points.slice(Math.max(first, state.points.length - windowS));
  }

  function poll() {
    var url = new URL(dataUrl);
    if (state.last !== null) url.searchParams.set("since", String(state.last));
    fetch(url, { cache: "no-store" })
      .then(function (r) {
        if (!r.ok) throw new Error("HTTP " + r.status);
        return r.json();
      })
      .then(function (doc) {
        state.failures = 0;
        merge(doc);
        setConnection(true);
        render();
      })
      .catch(function () {
        state.failures++;
        setConnection(false);
      })
      .finally(function () {
        setTimeout(poll, POLL_MS);
      });
  }

  var resizeTimer = null;
  window.addEventListener("resize", function () {
    clearTimeout(resizeTimer);
    resizeTimer = setTimeout(render, 150);
  });

  // index.html adds this script from its head (it runs as soon as it arrives): start once the
  // body is there.
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", poll);
  else poll();
})();
