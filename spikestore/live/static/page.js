// The page of `spikestore serve`: polls the server's JSON view (/view) and draws it with uPlot.
// Every array it gets is bounded by the server (spikestore/live/_serve_view.py); this script keeps
// nothing but the charts and the last view. window.spikestorePage says what is drawn (for tests).
"use strict";
(() => {
  const cfg = window.SPIKESTORE;
  const $ = (id) => document.getElementById(id);
  // matplotlib's tab10 and viridis (sampled at 16 points): the colours of `spikestore plot`
  const COLORS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
                  "#bcbd22", "#17becf"];
  const VIRIDIS = ["#440154", "#481a6c", "#472f7d", "#414487", "#39568c", "#31688e", "#2a788e", "#23888e",
                   "#1f988b", "#22a884", "#35b779", "#54c568", "#7ad151", "#a5db36", "#d2e21b", "#fde725"];
  const WIDTH = 640;
  const page = { version: 0, drawn: {}, titles: {}, polls: 0 };
  window.spikestorePage = page;
  const charts = {};
  let asked = "";       // the choices of the view drawn last
  let inFlight = false;

  // ---- choices ----------------------------------------------------------------------------------
  const CONTROLS = ["spikes", "voltage", "sample", "t0", "t1", "n0", "n1"];
  const choice = () => Object.fromEntries(CONTROLS.map((id) => [id, $(id).value]));
  for (const id of CONTROLS) $(id).addEventListener("change", () => { asked = ""; poll(); });

  // ---- the stream list --------------------------------------------------------------------------
  const cell = (tr, text, cls) => {
    const td = tr.insertCell();
    td.textContent = text;
    if (cls) td.className = cls;
  };
  const pct = (x) => (x === null ? "" : `${Math.round(100 * x)}%`);

  function drawHead(v) {
    const head = $("head");
    head.replaceChildren();
    const b = document.createElement("b");
    b.textContent = v.path;
    const latest = document.createElement("span");
    latest.className = "ss-latest";
    latest.textContent = v.latest === null ? "" : String(v.latest);
    head.append(b, ` \u00b7 writer ${v.writer} \u00b7 latest step `, latest, ` \u00b7 ${v.streams.length} streams`);
  }

  function drawTable(v) {
    const table = $("streams");
    table.replaceChildren();
    const head = table.insertRow();
    for (const h of ["stream", "latest step", "records", "at the latest step", "dead", "saturated", "on disk",
                     "bits/spike", "vs entropy", "failed"]) {
      const th = document.createElement("th");
      th.textContent = h;
      if (h === "vs entropy") {
        th.title = "stored bits over the entropy of the spikes read, with a rate per neuron given its previous " +
                   "time step (spikestore info shows the three bounds)";
      }
      head.append(th);
    }
    for (const s of v.streams) {
      const tr = table.insertRow();
      tr.dataset.stream = s.key;
      cell(tr, s.key, "ss-key");
      cell(tr, s.step === null ? "" : String(s.step), "ss-step");
      cell(tr, String(s.records));
      cell(tr, s.level === null ? "" : `${s.binary ? "rate" : "mean"} ${s.level}`);
      cell(tr, pct(s.dead));
      cell(tr, pct(s.saturated));
      cell(tr, `${(s.bytes / 1e6).toFixed(2)} MB`);
      cell(tr, s.bits_per_spike === null ? "" : String(s.bits_per_spike));
      cell(tr, s.over_conditional === null ? "" : `${s.over_conditional.toFixed(3)}x`, "ss-over");
      cell(tr, s.failed || "", "ss-failed");
    }
  }

  function setOptions(select, keys, value) {
    const now = Array.from(select.options, (o) => o.value);
    if (now.join("\n") !== keys.join("\n")) select.replaceChildren(...keys.map((k) => new Option(k, k)));
    if (value !== null) select.value = value;
  }

  // ---- charts -----------------------------------------------------------------------------------
  function title(id, text) {
    $(`fig-${id}`).querySelector("figcaption").textContent = text;
    page.titles[id] = text;
  }

  // A chart is rebuilt when its series or axis labels change, else only given new data.
  function chart(id, signature, make, data) {
    const known = charts[id];
    if (known && known.signature === signature) {
      known.plot.setData(data);
      return known.plot;
    }
    if (known) known.plot.destroy();
    const opts = make();
    const plot = new uPlot({ width: WIDTH, height: 280, legend: { live: false }, ...opts }, data, $(`fig-${id}`).querySelector(".ss-chart"));
    charts[id] = { signature, plot };
    return plot;
  }

  // steps, time steps and neurons are whole numbers: ticks never fall between them
  const WHOLE = [1, 2, 5].flatMap((m) => [1, 10, 100, 1e3, 1e4, 1e5, 1e6, 1e7].map((p) => m * p))
    .sort((a, b) => a - b);
  const axes = (x, y, wholeY = false) => [
    { label: x, incrs: WHOLE },
    { label: y, size: 60, ...(wholeY ? { incrs: WHOLE } : {}) },
  ];

  // Draws ``paint(ctx)`` on a chart's canvas, clipped to its plot area (uPlot's draw hooks draw the marks it does
  // not: raster ticks, the heat map's image, the threshold and its spike marks, short-batch steps).
  function inPlot(u, paint) {
    const ctx = u.ctx;
    ctx.save();
    ctx.beginPath(); ctx.rect(u.bbox.left, u.bbox.top, u.bbox.width, u.bbox.height); ctx.clip();
    paint(ctx);
    ctx.restore();
  }

  // Steps whose records hold a smaller batch (an epoch's last one, usually): a rate or a gradient norm over
  // fewer samples can show there as a peak or a stripe, so they are marked, dotted, on the step axes.
  let shortSteps = [];
  function markShort(u) {
    if (!shortSteps.length) return;
    inPlot(u, (ctx) => {
      ctx.setLineDash([2, 3]); ctx.strokeStyle = "#888"; ctx.lineWidth = devicePixelRatio;
      ctx.beginPath();
      for (const step of shortSteps) {
        const x = u.valToPos(step, "x", true);
        ctx.moveTo(x, u.bbox.top); ctx.lineTo(x, u.bbox.top + u.bbox.height);
      }
      ctx.stroke();
    });
  }
  const SHORT_NOTE = () => (shortSteps.length ? "; dotted: steps with a short batch" : "");

  function curves(id, list, yLabel, log, caption) {
    const keys = list.map((c) => c.key);
    const data = list.length ? uPlot.join(list.map((c) => [c.steps, c.values.map(
      (y) => (log && y !== null && y <= 0 ? null : y))])) : [[]];
    chart(id, `${keys.join("\n")}|${log}`, () => ({
      scales: { x: { time: false }, y: log ? { distr: 3 } : {} },
      axes: axes("step", yLabel),
      series: [{ label: "step" }, ...keys.map((k, i) => ({ label: k, stroke: COLORS[i % COLORS.length], width: 2,
                                                         spanGaps: true }))],
      hooks: { draw: [markShort] },
    }), data);
    page.drawn[id] = list.reduce((n, c) => n + c.steps.length, 0);
    title(id, caption + SHORT_NOTE());
  }

  // Bits of np.packbits (big-endian within each byte) from base64.
  function bits(b64, count) {
    const raw = atob(b64);
    const out = new Uint8Array(count);
    for (let i = 0; i < count; i++) out[i] = (raw.charCodeAt(i >> 3) >> (7 - (i & 7))) & 1;
    return out;
  }

  // Plots whose marks uPlot does not draw itself keep them here, for their draw hook.
  const marks = { raster: null, heat: null, voltage: null };

  const frameRange = (lo, hi) => () => [lo - 0.5, hi + 0.5];

  function drawRaster(r, key) {
    if (!r) return;
    const [T, N] = r.shape;
    const on = bits(r.bits, T * N);
    const t = [], n = [];
    for (let i = 0; i < on.length; i++) if (on[i]) { t.push(r.t0 + Math.floor(i / N)); n.push(r.n0 + (i % N)); }
    marks.raster = { t, n };
    chart("raster", `${r.time_label}|${r.t0},${r.t1},${r.n0},${r.n1}`, () => ({
      scales: { x: { time: false, range: frameRange(r.t0, r.t1) }, y: { range: frameRange(r.n0, r.n1) } },
      axes: axes(r.time_label, "neuron", true),
      series: [{ label: "t" }, { label: "spikes", show: false }],
      legend: { show: false },
      hooks: { draw: [(u) => {
        const m = marks.raster;
        if (!m) return;
        const h = Math.max(2, Math.min(12, u.bbox.height / (r.n1 - r.n0 + 1) * 0.8));
        inPlot(u, (ctx) => {
          ctx.fillStyle = "#000";
          for (let i = 0; i < m.t.length; i++) {
            const x = u.valToPos(m.t[i], "x", true), y = u.valToPos(m.n[i], "y", true);
            ctx.fillRect(x - devicePixelRatio, y - h / 2, 2 * devicePixelRatio, h);
          }
        });
      }] },
    }), [[r.t0, r.t1], [null, null]]);
    charts.raster.plot.setScale("x", { min: r.t0 - 0.5, max: r.t1 + 0.5 });
    charts.raster.plot.setScale("y", { min: r.n0 - 0.5, max: r.n1 + 0.5 });
    page.drawn.raster = t.length;
    title("raster", `raster: ${key}, step ${r.step}, sample ${r.sample} (${r.count} spikes)`);
  }

  function viridis(byte) {
    const x = (byte / 255) * (VIRIDIS.length - 1), i = Math.min(Math.floor(x), VIRIDIS.length - 2), f = x - i;
    const a = VIRIDIS[i], b = VIRIDIS[i + 1];
    return [1, 3, 5].map((k) => {
      const p = parseInt(a.slice(k, k + 2), 16), q = parseInt(b.slice(k, k + 2), 16);
      return Math.round(p + (q - p) * f);
    });
  }
  const RAMP = Array.from({ length: 256 }, (_, i) => viridis(i));
  document.querySelector(".ss-ramp").style.background = `linear-gradient(to right, ${VIRIDIS.join(", ")})`;

  function drawHeat(h, key) {
    if (!h) return;
    const raw = atob(h.cells), img = new ImageData(h.columns, h.rows);
    for (let r = 0; r < h.rows; r++) {
      for (let c = 0; c < h.columns; c++) {  // row 0 (the first neurons) at the bottom
        const [R, G, B] = RAMP[raw.charCodeAt(r * h.columns + c)], o = 4 * ((h.rows - 1 - r) * h.columns + c);
        img.data[o] = R; img.data[o + 1] = G; img.data[o + 2] = B; img.data[o + 3] = 255;
      }
    }
    const canvas = document.createElement("canvas");
    canvas.width = h.columns; canvas.height = h.rows;
    canvas.getContext("2d").putImageData(img, 0, 0);
    const top = h.rows * h.group, right = Math.max(h.hi, h.lo + 1);
    marks.heat = { canvas, lo: h.lo, right, top };
    chart("heat", "heat", () => ({
      scales: { x: { time: false, range: () => [marks.heat.lo, marks.heat.right] },
                y: { range: () => [0, marks.heat.top] } },
      axes: axes("step", "neuron", true),
      series: [{ label: "step" }, { label: "rate", show: false }],
      legend: { show: false },
      hooks: { drawClear: [(u) => {
        const m = marks.heat;
        if (!m) return;
        const x0 = u.valToPos(m.lo, "x", true), x1 = u.valToPos(m.right, "x", true);
        const y0 = u.valToPos(0, "y", true), y1 = u.valToPos(m.top, "y", true);
        inPlot(u, (ctx) => {
          ctx.imageSmoothingEnabled = false;
          ctx.drawImage(m.canvas, x0, y1, x1 - x0, y0 - y1);
        });
      }], draw: [markShort] },
    }), [[h.lo, right], [null, null]]);
    charts.heat.plot.setScale("x", { min: h.lo, max: right });
    charts.heat.plot.setScale("y", { min: 0, max: top });
    $("fig-heat").querySelector(".ss-high").textContent = String(h.high);
    page.drawn.heat = h.rows * h.columns;
    const group = h.group > 1 ? `, ${h.group} neurons a row` : "";
    title("heat", `per-neuron firing rate over steps: ${key} (${h.steps} steps${group})${SHORT_NOTE()}`);
  }

  function drawVoltage(v, key, threshold) {
    if (!v) return;
    const times = v.traces.length ? v.traces[0].map((_, i) => v.t0 + i) : [];
    const labels = v.traces.map((_, k) => `neuron ${v.n0 + k}`);
    marks.voltage = { times, marks: v.marks, threshold };
    chart("voltage", `${labels.join(",")}|${v.time_label}`, () => ({
      width: 2 * WIDTH + 16, height: 340,
      scales: { x: { time: false },
                y: { range: (u, lo, hi) => {
                  const a = Math.min(lo ?? threshold, threshold), b = Math.max(hi ?? threshold, threshold);
                  const pad = 0.1 * (b - a || 1);  // room for the spike marks on the threshold
                  return [a - pad, b + pad];
                } } },
      axes: axes(v.time_label, "membrane potential (model units)"),
      series: [{ label: "t" }, ...labels.map((l, k) => ({ label: l, stroke: COLORS[k % COLORS.length], width: 1.5 }))],
      hooks: { draw: [(u) => {
        const m = marks.voltage;
        if (!m) return;
        const y = u.valToPos(m.threshold, "y", true), s = 5 * devicePixelRatio;
        inPlot(u, (ctx) => {
          ctx.setLineDash([6, 4]); ctx.strokeStyle = "gray"; ctx.lineWidth = devicePixelRatio;
          ctx.beginPath(); ctx.moveTo(u.bbox.left, y); ctx.lineTo(u.bbox.left + u.bbox.width, y); ctx.stroke();
          m.marks.forEach((hits, k) => {
            if (!u.series[k + 1].show) return;
            ctx.fillStyle = COLORS[k % COLORS.length];
            for (const i of hits) {  // an inverted triangle on the threshold line at each spike
              const x = u.valToPos(m.times[i], "x", true);
              ctx.beginPath(); ctx.moveTo(x - s, y - s); ctx.lineTo(x + s, y - s); ctx.lineTo(x, y + s / 2);
              ctx.fill();
            }
          });
        });
      }] },
    }), [times, ...v.traces]);
    page.drawn.voltage = { traces: v.traces.length, marks: v.marks.reduce((n, m) => n + m.length, 0) };
    title("voltage", `voltage: ${key}, step ${v.step}, sample ${v.sample}; threshold ${threshold} (dashed); ` +
                     `spikes ${v.source}`);
  }

  function draw(v) {
    drawHead(v);
    drawTable(v);
    setOptions($("spikes"), v.spike_keys, v.spikes);
    setOptions($("voltage"), v.voltage_keys, v.voltage);
    const frame = v.raster || v.trace;
    if (frame) $("sample").max = String(frame.samples - 1);
    shortSteps = v.short_steps;
    curves("rates", v.rates, "spikes / value", false, "firing rate per layer");
    curves("grads", v.grads, "norm", true, "gradient norms (mean per step)");
    drawRaster(v.raster, v.spikes);
    drawHeat(v.heat, v.spikes);
    drawVoltage(v.trace, v.voltage, v.threshold);
    page.version = v.version;
  }

  // ---- polling ----------------------------------------------------------------------------------
  async function poll() {
    if (inFlight) return;
    inFlight = true;
    const c = choice(), key = JSON.stringify(c);
    const params = new URLSearchParams(c);
    if (key === asked && page.version) params.set("since", String(page.version));
    try {
      const reply = await fetch(`view?${params}`);
      const v = await reply.json();
      if (!reply.ok) throw new Error(v.error || reply.statusText);
      if (v.streams) {
        asked = key;
        draw(v);
      }
      $("head").classList.remove("ss-error");
    } catch (err) {
      $("head").classList.add("ss-error");
      $("head").textContent = `spikestore serve: ${err.message} (showing the last view)`;
    } finally {
      inFlight = false;
      page.polls += 1;
    }
  }
  poll();
  setInterval(poll, cfg.poll_ms);
})();
