// Inline SVG charts (no library): a line chart and a stacked bar chart over days, with a legend and a
// text alternative (a <title> and a table-like description) for screen readers.
const NS = "http://www.w3.org/2000/svg";
const W = 480;
const H = 220;
const PAD = { l: 64, r: 12, t: 12, b: 36 };

function el(tag, attrs = {}, text) {
  const node = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  if (text !== undefined) node.textContent = text;
  return node;
}

function frame(days, max, format, title) {
  const svg = el("svg", { viewBox: `0 0 ${W} ${H}`, class: "chart", role: "img" });
  svg.append(el("title", {}, title));
  const plotH = H - PAD.t - PAD.b;
  for (let k = 0; k <= 4; k++) {
    const v = (max * k) / 4;
    const y = PAD.t + plotH - (plotH * k) / 4;
    svg.append(el("line", { x1: PAD.l, x2: W - PAD.r, y1: y, y2: y, stroke: "#e3e7ee" }));
    svg.append(el("text", { x: PAD.l - 6, y: y + 4, "text-anchor": "end" }, format(Math.round(v))));
  }
  const step = Math.max(1, Math.ceil(days.length / 6));
  days.forEach((d, i) => {
    if (i % step === 0) svg.append(el("text", { x: xAt(i, days.length), y: H - PAD.b + 16, "text-anchor": "middle" }, d.slice(5)));
  });
  return svg;
}

function xAt(i, n) {
  const plotW = W - PAD.l - PAD.r;
  return PAD.l + (n === 1 ? plotW / 2 : (plotW * i) / (n - 1));
}

function yAt(v, max) {
  const plotH = H - PAD.t - PAD.b;
  return PAD.t + plotH - (max ? (plotH * v) / max : 0);
}

function legend(series) {
  const box = document.createElement("div");
  box.className = "legend";
  for (const s of series) {
    const item = document.createElement("span");
    const swatch = document.createElement("i");
    swatch.style.background = s.colour;
    item.append(swatch, s.label);
    box.append(item);
  }
  return box;
}

function wrap(svg, series, days, format) {
  const desc = series.map((s) => `${s.label}: ` + days.map((d, i) => `${d} ${format(s.values[i])}`).join(", ")).join("; ");
  svg.append(el("desc", {}, desc));
  const box = document.createElement("div");
  box.append(svg, legend(series));
  return box;
}

// series [{label, colour, values[]}] over days; format(v) labels the axis
export function lineChart(days, series, format, fixedMax) {
  const max = fixedMax || Math.max(1, ...series.flatMap((s) => s.values));
  const svg = frame(days, max, format, series.map((s) => s.label).join(" and ") + " per day");
  for (const s of series) {
    const points = s.values.map((v, i) => `${xAt(i, days.length)},${yAt(v, max)}`).join(" ");
    svg.append(el("polyline", { points, fill: "none", stroke: s.colour, "stroke-width": 2 }));
    s.values.forEach((v, i) => svg.append(el("circle", { cx: xAt(i, days.length), cy: yAt(v, max), r: 3, fill: s.colour })));
  }
  return wrap(svg, series, days, format);
}

// stacked bars: series [{label, colour, values[]}] (counts) over days
export function barChart(days, series) {
  const totals = days.map((_, i) => series.reduce((n, s) => n + s.values[i], 0));
  const max = Math.ceil(Math.max(1, ...totals) / 4) * 4; // whole numbers on the four grid lines
  const format = (v) => String(v);
  const svg = frame(days, max, format, "backups per day by status");
  const plotW = W - PAD.l - PAD.r;
  const width = Math.max(4, Math.min(40, (plotW / days.length) * 0.6));
  days.forEach((_, i) => {
    let base = 0;
    for (const s of series) {
      const v = s.values[i];
      if (!v) continue;
      const y1 = yAt(base + v, max);
      const y0 = yAt(base, max);
      svg.append(el("rect", { x: xAt(i, days.length) - width / 2, y: y1, width, height: y0 - y1, fill: s.colour },
      ));
      base += v;
    }
  });
  return wrap(svg, series, days, format);
}
