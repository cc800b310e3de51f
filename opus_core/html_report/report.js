/* The opus run report: draws the header, the task graph, the timeline of attempts and the
   task table from the JSON in #opus-run. Every string from the run (task names, errors,
   tracebacks) is written with textContent or as an SVG attribute, never parsed as markup. */
(function () {
  "use strict";
  const SVGNS = "http://www.w3.org/2000/svg";
  const data = JSON.parse(document.getElementById("opus-run").textContent);
  const run = data.run;
  const tasks = data.tasks;
  const LIMIT = data.graph_limit;
  const N = tasks.length;
  const STATUSES = ["succeeded", "failed", "timed_out", "skipped", "cancelled", "restored",
    "running", "interrupted", "stopped"];
  const SEVERITY = { failed: 0, timed_out: 1, cancelled: 2, skipped: 3, running: 4,
    interrupted: 5, stopped: 6, restored: 7, succeeded: 8 };
  const BLOCKED = { failed: 1, timed_out: 1, cancelled: 1 };

  // -- small helpers ------------------------------------------------------------------------
  function known(status) { return STATUSES.indexOf(status) >= 0 ? status : "unknown"; }
  function st(status) { return "st-" + known(status); }
  function h(tag, props, children) {
    const node = document.createElement(tag);
    if (props) {
      for (const key in props) {
        const value = props[key];
        if (value === undefined || value === null) continue;
        if (key === "text") node.textContent = value;
        else if (key === "cls") node.className = value;
        else if (key === "on") for (const ev in value) node.addEventListener(ev, value[ev]);
        else node.setAttribute(key, value);
      }
    }
    for (const child of children || []) if (child) node.appendChild(child);
    return node;
  }
  function s(tag, attrs, parent) {
    const node = document.createElementNS(SVGNS, tag);
    for (const key in attrs) node.setAttribute(key, attrs[key]);
    if (parent) parent.appendChild(node);
    return node;
  }
  function stext(parent, x, y, text, cls) {
    const node = s("text", { x: x, y: y }, parent);
    if (cls) node.setAttribute("class", cls);
    node.textContent = text;
    return node;
  }
  function fmtSec(value) {
    if (value === null || value === undefined) return "–";
    if (value === 0) return "0 s";
    const a = Math.abs(value);
    if (a < 1) return (value * 1000).toFixed(a < 0.01 ? 2 : 0) + " ms";
    if (a < 60) return value.toFixed(a < 10 ? 2 : 1) + " s";
    if (a < 3600) return Math.floor(value / 60) + " min " + Math.round(value % 60) + " s";
    return Math.floor(value / 3600) + " h " + Math.round((value % 3600) / 60) + " min";
  }
  function fmtAxis(value, step) {
    const digits = step >= 1 ? 0 : Math.min(6, Math.ceil(-Math.log10(step) - 1e-9));
    return value.toFixed(digits) + "s";
  }
  function fmtCount(n) { return n.toLocaleString("en-US"); }
  function clock(epoch) {
    if (epoch === null || epoch === undefined) return "–";
    // Local time as the CLI writes it: 2026-06-12 22:33:13.
    const d = new Date(epoch * 1000), p = (n) => String(n).padStart(2, "0");
    return d.getFullYear() + "-" + p(d.getMonth() + 1) + "-" + p(d.getDate()) + " " +
      p(d.getHours()) + ":" + p(d.getMinutes()) + ":" + p(d.getSeconds());
  }
  function truncate(text, max) { return text.length > max ? text.slice(0, max - 1) + "…" : text; }
  function niceStep(raw) {
    const p = Math.pow(10, Math.floor(Math.log10(raw)));
    const f = raw / p;
    return (f <= 1 ? 1 : f <= 2 ? 2 : f <= 5 ? 5 : 10) * p;
  }

  const dependents = tasks.map(() => []);
  tasks.forEach((t, i) => t.deps.forEach((d) => dependents[d].push(i)));

  // A big run with failures lists its failures first; a small one keeps the plan's order.
  const troubled = tasks.some((t) => t.status !== "succeeded" && t.status !== "restored");
  const state = { selected: -1, filter: "", statuses: new Set(), only: null, onlyLabel: "",
    sortKey: N > 100 && troubled ? "status" : null, sortDir: 1, shown: 100 };
  const main = h("main");
  document.body.appendChild(main);
  const tip = h("div", { cls: "tip", role: "tooltip" });
  document.body.appendChild(tip);

  // -- header -------------------------------------------------------------------------------
  function renderHeader() {
    const status = run.status || "unknown";
    const counts = h("div", { cls: "counts", "aria-label": "tasks by status" });
    const ordered = Object.keys(run.counts).sort((a, b) =>
      (SEVERITY[a] ?? 99) - (SEVERITY[b] ?? 99));
    for (const key of ordered) {
      const chip = h("button", { cls: "chip", "data-status": key, title: "filter the table" }, [
        h("span", { cls: "dot " + st(key) }), h("span", { text: fmtCount(run.counts[key]) + " " + key.replace("_", " ") }),
      ]);
      chip.addEventListener("click", () => {
        if (state.statuses.has(key)) state.statuses.delete(key); else state.statuses.add(key);
        chip.classList.toggle("active", state.statuses.has(key));
        state.shown = 100;
        renderTable();
      });
      counts.appendChild(chip);
    }
    const duration = run.duration !== null ? fmtSec(run.duration)
      : "no end recorded (last activity " + fmtSec(run.span) + " after the start)";
    const facts = h("dl", { cls: "facts" });
    const add = (label, value, mono) => {
      if (value === null || value === undefined || value === "") return;
      facts.appendChild(h("dt", { text: label }));
      facts.appendChild(h("dd", { text: String(value), cls: mono ? "mono" : null }));
    };
    add("started", clock(run.started_at));
    add("duration", duration);
    add("runner", run.runner);
    add("persistence", run.persistence);
    add("config", run.config, true);
    add("pid", run.pid);
    const title = h("div", { cls: "title" }, [
      h("h1", {}, [document.createTextNode("opus run "), h("span", { cls: "mono", text: run.id || "(no id)" }),
        document.createTextNode(" "), h("span", { cls: "badge " + st(status), text: status.replace("_", " ") })]),
      h("div", { cls: "sub" }, [document.createTextNode("command "), h("b", { text: run.command || "?" }),
        document.createTextNode(" in context "), h("b", { text: run.context || "?" }),
        document.createTextNode(" · " + fmtCount(N) + " task" + (N === 1 ? "" : "s"))]),
      counts,
    ]);
    main.appendChild(h("header", { cls: "run" }, [title, facts]));
  }

  // -- graph --------------------------------------------------------------------------------
  const graph = { subset: "all", expanded: new Set(), scale: 1, nodes: new Map(), edges: [],
    model: null };
  const NODE_W = 184, NODE_H = 28, CLUSTER_W = 204, CLUSTER_H = 56, COL_GAP = 70, ROW_GAP = 10;

  function subsetIndices() {
    const out = [];
    for (let i = 0; i < N; i++) {
      if (graph.subset === "all" || tasks[i].status !== "succeeded" && tasks[i].status !== "restored") out.push(i);
    }
    return out;
  }

  // How the shown tasks are grouped: one box per task up to LIMIT, else per layer and kind,
  // per layer, or per band of layers, whichever gives few enough groups.
  function groupingFor(subset) {
    if (subset.length <= LIMIT) return { mode: "tasks" };
    const layerKinds = new Set(), layers = new Set();
    let maxLayer = 0;
    for (const i of subset) {
      layerKinds.add(tasks[i].layer + "\u0000" + tasks[i].kind);
      layers.add(tasks[i].layer);
      maxLayer = Math.max(maxLayer, tasks[i].layer);
    }
    if (layerKinds.size <= 120) return { mode: "layer-kind" };
    if (layers.size <= 120) return { mode: "layer" };
    return { mode: "band", band: Math.ceil((maxLayer + 1) / 100) };
  }

  function baseKey(grouping, i) {
    const t = tasks[i];
    if (grouping.mode === "layer-kind") return "g" + t.layer + "\u0000" + t.kind;
    if (grouping.mode === "layer") return "g" + t.layer;
    return "g" + Math.floor(t.layer / grouping.band);
  }

  function buildModel() {
    const subset = subsetIndices();
    const grouping = groupingFor(subset);
    const groups = new Map();
    if (grouping.mode !== "tasks") {
      for (const i of subset) {
        const key = baseKey(grouping, i);
        let g = groups.get(key);
        if (!g) {
          const t = tasks[i];
          let label;
          if (grouping.mode === "layer-kind") label = (t.kind || "(no kind)") + " · layer " + t.layer;
          else if (grouping.mode === "layer") label = "layer " + t.layer;
          else {
            const b = Math.floor(t.layer / grouping.band) * grouping.band;
            label = "layers " + b + "–" + (b + grouping.band - 1);
          }
          g = { key: key, label: label, members: [], col: t.layer, parent: null };
          groups.set(key, g);
        }
        g.members.push(i);
        if (tasks[i].layer < g.col) g.col = tasks[i].layer;
      }
      for (const g of Array.from(groups.values())) {  // status sub-groups, for big groups
        if (g.members.length <= LIMIT) continue;
        for (const i of g.members) {
          const key = g.key + "\u0001" + tasks[i].status;
          let sub = groups.get(key);
          if (!sub) {
            sub = { key: key, label: g.label + " · " + tasks[i].status.replace("_", " "),
              members: [], col: g.col, parent: g.key };
            groups.set(key, sub);
          }
          sub.members.push(i);
        }
      }
    }
    const nodeOf = new Map();  // task index -> node id
    const nodes = new Map();   // node id -> {id, task | group, col}
    for (const i of subset) {
      let id = "t" + i;
      if (grouping.mode !== "tasks") {
        const key = baseKey(grouping, i), g = groups.get(key);
        if (!graph.expanded.has(key)) id = "c" + key;
        else if (g.members.length > LIMIT) {
          const sub = groups.get(key + "\u0001" + tasks[i].status);
          if (!(graph.expanded.has(sub.key) && sub.members.length <= LIMIT)) id = "c" + sub.key;
        }
      }
      nodeOf.set(i, id);
      if (!nodes.has(id)) {
        if (id[0] === "t") nodes.set(id, { id: id, task: i, col: tasks[i].layer, order: i });
        else {
          const g = groups.get(id.slice(1));
          nodes.set(id, { id: id, group: g, col: g.col, order: i });
        }
      }
    }
    const edgeMap = new Map();
    for (const i of subset) {
      const to = nodeOf.get(i);
      for (const d of tasks[i].deps) {
        const from = nodeOf.get(d);
        if (from === undefined || from === to) continue;
        const key = from + ">" + to;
        const e = edgeMap.get(key);
        if (e) e.count++;
        else edgeMap.set(key, { from: from, to: to, count: 1, blocked: !!BLOCKED[tasks[d].status] });
      }
    }
    return { subset: subset, grouping: grouping, groups: groups, nodeOf: nodeOf, nodes: nodes,
      edges: Array.from(edgeMap.values()) };
  }

  // A layered (Sugiyama) layout. A node's column is its layer (the longest chain of
  // dependencies before it, from the Python side). An edge that spans several columns gets a
  // dummy node in each column between its ends: a slot of its own that the edge is drawn
  // through, so no edge passes under a box. Nodes are ordered within their columns by the
  // barycentre of their neighbours (sweeps right and left), then each column is placed as
  // near its neighbours' heights as that order allows.
  const DUMMY_H = 6, DUMMY_BUDGET = 8000;

  function layout(model) {
    const cols = Array.from(new Set(Array.from(model.nodes.values(), (n) => n.col))).sort((a, b) => a - b);
    const colIndex = new Map(cols.map((c, k) => [c, k]));
    const columns = cols.map(() => []);
    const all = [];
    for (const n of model.nodes.values()) {
      n.c = colIndex.get(n.col);
      n.w = n.task !== undefined ? NODE_W : CLUSTER_W;
      n.h = n.task !== undefined ? NODE_H : CLUSTER_H;
      n.preds = [];
      n.succs = [];
      columns[n.c].push(n);
      all.push(n);
    }
    const link = (a, b) => { a.succs.push(b); b.preds.push(a); };
    // Dummies for the shortest long edges first, up to a budget that keeps huge graphs quick;
    // an edge past the budget is drawn straight to its end.
    const spanOf = (e) => model.nodes.get(e.to).c - model.nodes.get(e.from).c - 1;
    let budget = DUMMY_BUDGET;
    const byLength = model.edges.slice().sort((x, y) => spanOf(x) - spanOf(y));
    for (const e of byLength) {
      const a = model.nodes.get(e.from), b = model.nodes.get(e.to);
      e.via = [];
      if (b.c <= a.c) continue;  // within a column (groups of one band): drawn as a loop
      const span = b.c - a.c - 1;
      if (span > budget) { link(a, b); continue; }
      budget -= span;
      let prev = a;
      for (let c = a.c + 1; c < b.c; c++) {
        const d = { id: "d" + all.length, dummy: true, c: c, w: CLUSTER_W, h: DUMMY_H, order: a.order,
          preds: [], succs: [], y: 0, bary: 0 };
        columns[c].push(d);
        all.push(d);
        link(prev, d);
        e.via.push(d);
        prev = d;
      }
      link(prev, b);
    }
    const mid = (n) => n.y + n.h / 2;
    function stack(column) {
      let total = 0;
      for (const n of column) total += n.h + ROW_GAP;
      let y = -total / 2;
      for (const n of column) { n.y = y; y += n.h + ROW_GAP; }
    }
    for (const column of columns) {
      column.sort((a, b) => a.order - b.order);
      stack(column);
    }
    const sweep = (column, side) => {
      for (const n of column) {
        const near = n[side];
        let sum = 0;
        for (const m of near) sum += mid(m);
        n.bary = near.length ? sum / near.length : mid(n);
      }
      column.sort((a, b) => a.bary - b.bary || a.order - b.order);
      stack(column);
    };
    for (let round = 0; round < 4; round++) {
      for (let c = 1; c < columns.length; c++) sweep(columns[c], "preds");
      for (let c = columns.length - 2; c >= 0; c--) sweep(columns[c], "succs");
    }
    // Heights: each node as near the mean height of its neighbours as the order and the gaps
    // allow (least squares under the order: pool-adjacent-violators on the offsets).
    const settle = (column, sides) => {
      const k = column.length;
      const off = new Array(k), want = new Array(k);
      let acc = 0;
      for (let i = 0; i < k; i++) {
        const n = column[i];
        off[i] = acc;
        acc += n.h + ROW_GAP;
        let sum = 0, count = 0;
        for (const side of sides) for (const m of n[side]) { sum += mid(m); count++; }
        want[i] = (count ? sum / count : mid(n)) - n.h / 2 - off[i];
      }
      const blocks = [];  // [sum, count] of pooled targets, non-decreasing means
      for (let i = 0; i < k; i++) {
        blocks.push([want[i], 1]);
        while (blocks.length > 1) {
          const last = blocks[blocks.length - 1], prev = blocks[blocks.length - 2];
          if (prev[0] / prev[1] <= last[0] / last[1]) break;
          prev[0] += last[0]; prev[1] += last[1];
          blocks.pop();
        }
      }
      let i = 0;
      for (const [sum, count] of blocks) {
        for (let j = 0; j < count; j++, i++) column[i].y = sum / count + off[i];
      }
    };
    for (let round = 0; round < 4; round++) {
      for (let c = 1; c < columns.length; c++) settle(columns[c], ["preds"]);
      for (let c = columns.length - 2; c >= 0; c--) settle(columns[c], ["succs"]);
    }
    for (let c = 0; c < columns.length; c++) settle(columns[c], ["preds", "succs"]);
    let top = Infinity, bottom = -Infinity;
    for (const n of all) { top = Math.min(top, n.y); bottom = Math.max(bottom, n.y + n.h); }
    const margin = 16;
    for (const n of all) {
      n.y = n.y - top + margin;
      n.x = margin + n.c * (CLUSTER_W + COL_GAP) + (CLUSTER_W - n.w) / 2;
    }
    return { width: margin * 2 + cols.length * (CLUSTER_W + COL_GAP) - COL_GAP,
      height: (isFinite(bottom) ? bottom - top : 0) + margin * 2 + 12 };
  }

  // An edge's path: across each gap between columns a curve (its control points keep it
  // inside the gap), through each dummy slot a straight line.
  function edgePath(e, a, b) {
    let x = a.x + a.w, y = a.y + a.h / 2;
    let d = "M" + x + "," + y;
    const curve = (x2, y2) => {
      const dx = (x2 - x) * 0.45;
      d += y2 === y ? " L" + x2 + "," + y2
        : " C" + (x + dx) + "," + y + " " + (x2 - dx) + "," + y2 + " " + x2 + "," + y2;
      x = x2; y = y2;
    };
    for (const p of e.via) {
      curve(p.x, p.y + p.h / 2);
      x = p.x + p.w;
      d += " L" + x + "," + y;
    }
    curve(b.x - 2, b.y + b.h / 2);
    return d;
  }

  function drawGraph() {
    const box = graph.box;
    box.textContent = "";
    graph.nodes = new Map();
    graph.edgeEls = [];
    const model = graph.model = buildModel();
    if (!model.nodes.size) {
      box.appendChild(h("div", { cls: "empty", text: graph.subset === "all" ? "No tasks in this run." : "Every task succeeded." }));
      graph.note.textContent = "";
      renderExpanded(model);
      return;
    }
    const size = layout(model);
    const svg = s("svg", { viewBox: "0 0 " + size.width + " " + size.height, role: "img",
      "aria-label": "task graph" });
    graph.svg = svg;
    graph.size = size;
    const defs = s("defs", {}, svg);
    const marker = s("marker", { id: "arrow", viewBox: "0 0 10 10", refX: "9", refY: "5",
      markerWidth: "7", markerHeight: "7", orient: "auto-start-reverse" }, defs);
    s("path", { d: "M0,0 L10,5 L0,10 z" }, marker);
    const edgeLayer = s("g", { class: "edges" }, svg);
    const nodeLayer = s("g", { class: "nodes" }, svg);
    for (const e of model.edges) {
      const a = model.nodes.get(e.from), b = model.nodes.get(e.to);
      const x1 = a.x + a.w, y1 = a.y + a.h / 2, y2 = b.y + b.h / 2;
      let d;
      if (b.c > a.c) {
        d = edgePath(e, a, b);
      } else {  // same column (groups of one band): loop round the right-hand side
        const bx = b.x + b.w;
        d = "M" + x1 + "," + y1 + " C" + (x1 + 40) + "," + y1 + " " + (bx + 40) + "," + y2 + " " + (bx + 2) + "," + y2;
      }
      const path = s("path", { d: d, class: "edge" + (e.blocked ? " blocked" : ""),
        "marker-end": "url(#arrow)", "stroke-width": String(1.3 + Math.min(4, Math.log2(e.count))) }, edgeLayer);
      path.dataset.from = e.from;
      path.dataset.to = e.to;
      graph.edgeEls.push(path);
    }
    for (const n of model.nodes.values()) {
      const g = s("g", { class: "node " + (n.task !== undefined ? "task" : "cluster"),
        transform: "translate(" + n.x + "," + n.y + ")", tabindex: "0" }, nodeLayer);
      g.dataset.id = n.id;
      if (n.task !== undefined) {
        const t = tasks[n.task];
        g.dataset.task = String(n.task);
        s("rect", { class: "box " + st(t.status), width: n.w, height: n.h, rx: 6 }, g);
        stext(g, 9, 18.5, truncate(t.name, t.attempts > 1 ? 21 : 24));
        if (t.attempts > 1) {
          s("circle", { cx: n.w - 13, cy: n.h / 2, r: 9, fill: "rgba(0,0,0,.28)" }, g);
          stext(g, n.w - 13, n.h / 2 + 4, String(t.attempts)).setAttribute("text-anchor", "middle");
        }
        s("title", {}, g).textContent = t.name + " — " + t.status + (t.attempts > 1 ? ", " + t.attempts + " attempts" : "");
      } else {
        const grp = n.group, counts = {};
        for (const i of grp.members) counts[tasks[i].status] = (counts[tasks[i].status] || 0) + 1;
        s("rect", { class: "box", width: n.w, height: n.h, rx: 8 }, g);
        stext(g, 10, 18, truncate(grp.label, 27));
        const expandable = grp.members.length <= LIMIT || !grp.parent;
        stext(g, 10, 34, fmtCount(grp.members.length) + " tasks" + (expandable ? " · click to expand" : " · click to list"), "count");
        let x = 10;
        const width = n.w - 20;
        const keys = Object.keys(counts).sort((a, b) => (SEVERITY[a] ?? 99) - (SEVERITY[b] ?? 99));
        for (const key of keys) {
          const w = Math.max(2, width * counts[key] / grp.members.length);
          s("rect", { class: st(key), x: x, y: 42, width: Math.min(w, n.w - 10 - x), height: 7, rx: 1 }, g);
          x += w;
        }
        g.dataset.group = grp.key;
        s("title", {}, g).textContent = grp.label + "\n" + keys.map((k) => fmtCount(counts[k]) + " " + k).join(", ");
      }
      graph.nodes.set(n.id, g);
    }
    box.appendChild(svg);
    if (!graph.userScaled) {  // fit the width when that keeps the labels readable
      graph.scale = Math.max(0.6, Math.min(1, (box.clientWidth - 4) / size.width));
    }
    applyScale();
    const m = model.grouping.mode;
    const shown = model.subset.length;
    graph.note.textContent = m === "tasks" ? fmtCount(shown) + " task" + (shown === 1 ? "" : "s") + ", " + fmtCount(model.edges.length) + " dependencies"
      : fmtCount(shown) + " tasks in " + fmtCount(model.nodes.size) + " boxes (grouped by " +
        (m === "layer-kind" ? "layer and kind" : m === "layer" ? "layer" : "bands of " + model.grouping.band + " layers") +
        "); click a group to expand it";
    renderExpanded(model);
    highlight();
  }

  function renderExpanded(model) {
    const list = graph.expandedList;
    list.textContent = "";
    for (const key of graph.expanded) {
      const g = model.groups.get(key);
      if (!g) continue;
      const chip = h("button", { cls: "chip", title: "collapse this group" }, [
        h("span", { text: truncate(g.label, 40) + " ✕" })]);
      chip.addEventListener("click", () => { graph.expanded.delete(key); drawGraph(); });
      list.appendChild(chip);
    }
  }

  function applyScale() {
    if (!graph.svg) return;
    graph.svg.setAttribute("width", String(Math.round(graph.size.width * graph.scale)));
    graph.svg.setAttribute("height", String(Math.round(graph.size.height * graph.scale)));
  }

  function onGraphClick(ev) {
    const node = ev.target.closest ? ev.target.closest(".node") : null;
    if (!node) return;
    if (node.dataset.task !== undefined) { select(Number(node.dataset.task)); return; }
    const g = graph.model.groups.get(node.dataset.group);
    if (g.members.length <= LIMIT || !g.parent) {
      graph.expanded.add(g.key);
      drawGraph();
    } else {
      listGroup(g);
    }
  }

  function listGroup(g) {
    state.only = new Set(g.members);
    state.onlyLabel = g.label;
    state.shown = 100;
    renderTable();
    document.getElementById("tasks").scrollIntoView({ behavior: "smooth", block: "start" });
  }

  // Expand whatever groups hide task i, then scroll its box into view.
  function revealInGraph(i) {
    if (graph.subset !== "all" && (tasks[i].status === "succeeded" || tasks[i].status === "restored")) {
      graph.subset = "all";
      graph.subsetSelect.value = "all";
    }
    const model = graph.model || buildModel();
    if (model.grouping.mode !== "tasks") {
      const key = baseKey(model.grouping, i);
      graph.expanded.add(key);
      const g = model.groups.get(key);
      if (g && g.members.length > LIMIT) {
        const sub = model.groups.get(key + "\u0001" + tasks[i].status);
        if (sub.members.length <= LIMIT) graph.expanded.add(sub.key);
      }
    }
    drawGraph();
    const el = graph.nodes.get(graph.model.nodeOf.get(i));
    if (el) el.scrollIntoView({ block: "center", inline: "center" });
  }

  function renderGraphSection() {
    const section = h("section", { cls: "card", id: "graph" });
    const select = h("select", { "aria-label": "which tasks the graph shows" }, [
      h("option", { value: "all", text: "all tasks" }),
      h("option", { value: "problems", text: "tasks that did not succeed" })]);
    select.addEventListener("change", () => { graph.subset = select.value; graph.expanded.clear(); drawGraph(); });
    graph.subsetSelect = select;
    const zoom = (f) => () => { graph.userScaled = true; graph.scale = Math.max(0.1, Math.min(3, graph.scale * f)); applyScale(); };
    const fit = () => {
      if (!graph.size) return;
      graph.userScaled = true;
      graph.scale = Math.min(1, (graph.box.clientWidth - 4) / graph.size.width,
        Math.max(0.2, (graph.box.clientHeight || 500) / graph.size.height));
      applyScale();
    };
    const note = h("span", { cls: "note" });
    graph.note = note;
    graph.expandedList = h("div", { cls: "expanded-list" });
    const legend = h("div", { cls: "legend" });
    const present = new Set(tasks.map((t) => t.status));
    for (const key of STATUSES) {
      if (present.has(key)) legend.appendChild(h("span", {}, [h("span", { cls: "dot " + st(key) }), h("span", { text: key.replace("_", " ") })]));
    }
    const collapse = h("button", { text: "collapse all", on: { click: () => { graph.expanded.clear(); drawGraph(); } } });
    section.appendChild(h("div", { cls: "bar" }, [h("h2", { text: "Graph" }), select, note,
      h("div", { cls: "tools" }, [collapse,
        h("button", { text: "−", title: "zoom out", "aria-label": "zoom out", on: { click: zoom(1 / 1.25) } }),
        h("button", { text: "+", title: "zoom in", "aria-label": "zoom in", on: { click: zoom(1.25) } }),
        h("button", { text: "fit", title: "fit to the window", on: { click: fit } })]),
      legend, graph.expandedList]));
    const box = h("div", { cls: "scroll" });
    graph.box = box;
    box.addEventListener("click", onGraphClick);
    box.addEventListener("keydown", (ev) => { if (ev.key === "Enter") onGraphClick(ev); });
    section.appendChild(box);
    main.appendChild(section);
    drawGraph();
  }

  // -- timeline -----------------------------------------------------------------------------
  // Up to DENSE attempts each is a <rect>; above, the bars of one status are one <path>, which
  // keeps the page quick at 10,000 tasks. Clicks and hovers find the attempt by position
  // either way, and the selected task's attempts are outlined on a layer of their own.
  const DENSE = 3000;
  const timeline = { zoom: 1 };
  const attempts = [];
  tasks.forEach((t, i) => t.log.forEach((a) => attempts.push({ task: i, n: a[0], s: a[1], e: a[2], status: a[3], error: a[4], lane: a[5] })));
  const byLane = [];
  attempts.forEach((a, k) => { (byLane[a.lane] || (byLane[a.lane] = [])).push(k); });
  for (const lane of byLane) if (lane) lane.sort((x, y) => attempts[x].s - attempts[y].s);
  const LABEL_W = 56;

  // Resources: the bars can be coloured by the first resource (by name) each task needs.
  const RESOURCES = Array.from(new Set(tasks.flatMap((t) => Object.keys(t.resources || {})))).sort();
  const RES_COLOURS = 8;
  function resClass(i) {
    const names = Object.keys(tasks[i].resources || {}).sort();
    return names.length ? "res-" + (RESOURCES.indexOf(names[0]) % RES_COLOURS) : "res-none";
  }
  timeline.colour = "status";
  function barClass(a) { return timeline.colour === "resource" ? resClass(a.task) : st(a.status); }

  // A bar carries its task's name when the name fits inside it, padding included.
  const LABEL_PAD = 4, MAX_LABELS = 2000, nameWidths = new Map();
  let measure = null;
  function nameWidth(i) {
    let w = nameWidths.get(i);
    if (w === undefined) {
      if (!measure) {
        measure = document.createElement("canvas").getContext("2d");
        measure.font = "11px " + getComputedStyle(document.body).fontFamily;
      }
      w = measure.measureText(tasks[i].name).width;
      nameWidths.set(i, w);
    }
    return w;
  }
  function fitsName(a, width, barH) {
    return barH >= 12 && width >= 2 * LABEL_PAD + 12 && width >= nameWidth(a.task) + 2 * LABEL_PAD;
  }

  function drawTimeline() {
    const box = timeline.box;
    const keepLeft = box.scrollLeft, keepTop = box.scrollTop;
    box.textContent = "";
    timeline.svg = null;
    if (!attempts.length) {
      box.appendChild(h("div", { cls: "empty", text: "No attempt ran: every task was skipped or restored." }));
      return;
    }
    const lanes = Math.max(1, data.lanes);
    const span = run.span > 0 ? run.span : 1;
    const laneH = Math.max(5, Math.min(24, Math.floor(520 / lanes)));
    const barH = laneH >= 12 ? laneH - 6 : laneH - 1;
    const plot = Math.max(200, (box.clientWidth || 1000) - LABEL_W - 24) * timeline.zoom;
    const pps = plot / span;
    const width = LABEL_W + plot + 24, height = lanes * laneH + 6;
    const step = niceStep(span / Math.max(2, plot / 110));
    const axis = s("svg", { width: width, height: 24, class: "axis-svg" });
    const axisBox = h("div", { cls: "axis" });
    axisBox.appendChild(axis);
    const svg = s("svg", { width: width, height: height, role: "img", "aria-label": "timeline of attempts" });
    if (lanes <= 300) {
      for (let l = 0; l < lanes; l += 2) s("rect", { class: "lane-bg", x: 0, y: l * laneH, width: width, height: laneH }, svg);
    }
    for (let t = 0; t <= span + 1e-9; t += step) {
      const x = LABEL_W + t * pps;
      s("line", { class: "grid", x1: x, x2: x, y1: 0, y2: height }, svg);
      s("line", { class: "grid", x1: x, x2: x, y1: 16, y2: 24 }, axis);
      stext(axis, x + 3, 13, fmtAxis(t, step), "tick");
    }
    if (laneH >= 11) {
      for (let l = 0; l < lanes; l++) stext(svg, 6, l * laneH + laneH / 2 + 4, "lane " + (l + 1), "lane-label");
    }
    const geometry = (a) => [LABEL_W + a.s * pps, a.lane * laneH + (laneH - barH) / 2, Math.max(1.5, (a.e - a.s) * pps)];
    const barLayer = s("g", { class: "bars" }, svg);
    if (attempts.length <= DENSE) {
      const frag = document.createDocumentFragment();
      for (let k = 0; k < attempts.length; k++) {
        const a = attempts[k], g = geometry(a);
        const rect = document.createElementNS(SVGNS, "rect");
        rect.setAttribute("class", "attempt " + barClass(a));
        rect.setAttribute("x", g[0].toFixed(1));
        rect.setAttribute("y", String(g[1]));
        rect.setAttribute("width", g[2].toFixed(1));
        rect.setAttribute("height", String(barH));
        if (barH >= 8) rect.setAttribute("rx", "2");
        rect.setAttribute("data-k", String(k));
        rect.setAttribute("data-task", String(a.task));
        if (!fitsName(a, g[2], barH)) {  // too narrow for its name: a tooltip instead
          const title = document.createElementNS(SVGNS, "title");
          title.textContent = tasks[a.task].name + " — attempt " + a.n + ", " + a.status;
          rect.appendChild(title);
        }
        frag.appendChild(rect);
      }
      barLayer.appendChild(frag);
    } else {
      const parts = new Map();
      for (const a of attempts) {
        const key = timeline.colour === "resource" ? resClass(a.task) : st(a.status), g = geometry(a);
        let list = parts.get(key);
        if (!list) parts.set(key, list = []);
        list.push("M" + g[0].toFixed(1) + " " + g[1] + "h" + g[2].toFixed(1) + "v" + barH + "h-" + g[2].toFixed(1) + "z");
      }
      const severity = (key) => SEVERITY[key.slice(3)] ?? 99;
      const drawn = Array.from(parts.keys()).sort((a, b) => severity(b) - severity(a));
      for (const key of drawn) {  // failures last, on top
        const list = parts.get(key);
        s("path", { class: "attempts " + key, d: list.join(""), "data-count": String(list.length) }, barLayer);
      }
    }
    const labelLayer = s("g", { class: "bar-labels" }, svg);
    let labelled = 0;
    for (let k = 0; k < attempts.length && labelled < MAX_LABELS; k++) {
      const a = attempts[k], g = geometry(a);
      if (!fitsName(a, g[2], barH)) continue;
      const label = stext(labelLayer, g[0] + LABEL_PAD, g[1] + barH / 2 + 4, tasks[a.task].name, "bar-label");
      label.setAttribute("data-task", String(a.task));
      labelled++;
    }
    timeline.overlay = s("g", { class: "overlay" }, svg);
    box.appendChild(axisBox);
    box.appendChild(svg);
    Object.assign(timeline, { svg: svg, pps: pps, laneH: laneH, barH: barH, geometry: geometry });
    box.scrollLeft = keepLeft;
    box.scrollTop = keepTop;
    highlight();
  }

  // The attempt under the pointer (within 3 px), or -1.
  function attemptAt(ev) {
    if (!timeline.svg) return -1;
    const target = ev.target;
    if (target.getAttribute && target.getAttribute("data-k") !== null) return Number(target.getAttribute("data-k"));
    const rect = timeline.svg.getBoundingClientRect();
    const x = ev.clientX - rect.left, y = ev.clientY - rect.top;
    const lane = byLane[Math.floor(y / timeline.laneH)];
    if (!lane) return -1;
    const t = (x - LABEL_W) / timeline.pps, slack = 3 / timeline.pps;
    let lo = 0, hi = lane.length - 1, found = -1;
    while (lo <= hi) {  // the last attempt starting before t + slack
      const mid = (lo + hi) >> 1;
      if (attempts[lane[mid]].s <= t + slack) { found = mid; lo = mid + 1; } else hi = mid - 1;
    }
    for (let j = found; j >= 0 && j >= found - 3; j--) {
      const a = attempts[lane[j]];
      if (a.e + slack >= t || (a.e - a.s) * timeline.pps < 1.5 && a.s + 1.5 / timeline.pps + slack >= t) return lane[j];
    }
    return -1;
  }

  function renderTimelineSection() {
    const section = h("section", { cls: "card", id: "timeline" });
    const lanes = data.lanes;
    const note = h("span", { cls: "note", text: fmtCount(attempts.length) + " attempt" + (attempts.length === 1 ? "" : "s") +
      " in " + fmtCount(lanes) + " lane" + (lanes === 1 ? "" : "s") + " (at most " + fmtCount(lanes) + " ran at once)" +
      " over " + fmtSec(run.span) + "; ctrl + wheel zooms" });
    const zoomTo = (z, anchor) => {
      const box = timeline.box;
      const x = anchor === undefined ? box.clientWidth / 2 : anchor;
      const t = (box.scrollLeft + x - LABEL_W) / (timeline.pps || 1);
      timeline.zoom = Math.max(1, Math.min(2000, z));
      drawTimeline();
      box.scrollLeft = Math.max(0, LABEL_W + t * timeline.pps - x);
    };
    const resourceLegend = h("div", { cls: "legend resources", hidden: "" },
      RESOURCES.map((name, n) => h("span", {}, [h("span", { cls: "dot res-" + (n % RES_COLOURS) }), h("span", { text: name })]))
        .concat([h("span", {}, [h("span", { cls: "dot res-none" }), h("span", { text: "no resource" })])]));
    const colourBy = RESOURCES.length ? h("select", { "aria-label": "colour the bars by", id: "colour-by", on: { change: (ev) => {
      timeline.colour = ev.target.value;
      if (timeline.colour === "resource") resourceLegend.removeAttribute("hidden"); else resourceLegend.setAttribute("hidden", "");
      drawTimeline();
    } } }, [h("option", { value: "status", text: "colour: status" }), h("option", { value: "resource", text: "colour: resource" })]) : null;
    section.appendChild(h("div", { cls: "bar" }, [h("h2", { text: "Timeline" }), note,
      h("div", { cls: "tools" }, [colourBy,
        h("button", { text: "−", title: "zoom out", "aria-label": "zoom out", on: { click: () => zoomTo(timeline.zoom / 2) } }),
        h("button", { text: "+", title: "zoom in", "aria-label": "zoom in", on: { click: () => zoomTo(timeline.zoom * 2) } }),
        h("button", { text: "fit", on: { click: () => zoomTo(1) } })])]));
    if (RESOURCES.length) section.appendChild(resourceLegend);
    const box = h("div", { cls: "scroll" });
    timeline.box = box;
    box.addEventListener("wheel", (ev) => {
      if (!ev.ctrlKey) return;
      ev.preventDefault();
      const rect = box.getBoundingClientRect();
      zoomTo(timeline.zoom * (ev.deltaY < 0 ? 1.5 : 1 / 1.5), ev.clientX - rect.left);
    }, { passive: false });
    box.addEventListener("click", (ev) => {
      const k = attemptAt(ev);
      if (k >= 0) select(attempts[k].task);
    });
    box.addEventListener("mousemove", (ev) => {
      const k = attemptAt(ev);
      box.style.cursor = k >= 0 ? "pointer" : "";
      if (k < 0) { tip.style.display = "none"; return; }
      const a = attempts[k], t = tasks[a.task];
      tip.textContent = t.name + "\nattempt " + a.n + " of " + t.attempts + " · " + a.status + " · " +
        fmtSec(a.e - a.s) + " from " + fmtSec(a.s) + (a.error ? "\n" + truncate(a.error, 300) : "");
      tip.style.display = "block";
      tip.style.left = Math.min(ev.clientX + 14, window.innerWidth - 430) + "px";
      tip.style.top = (ev.clientY + 16) + "px";
    });
    box.addEventListener("mouseleave", () => { tip.style.display = "none"; });
    section.appendChild(box);
    main.appendChild(section);
    drawTimeline();
  }

  // -- table --------------------------------------------------------------------------------
  // The short columns keep the width their longest value needs ("interrupted", "59 min 59 s",
  // a sort arrow); the task and its error share what is left.
  const COLUMNS = [
    { key: "name", label: "Task" },
    { key: "kind", label: "Kind", width: "12%" },
    { key: "status", label: "Status", width: "112px" },
    { key: "attempts", label: "Attempts", width: "96px", num: true },
    { key: "start", label: "Start", width: "100px", num: true },
    { key: "duration", label: "Duration", width: "100px", num: true },
    { key: "error", label: "Error" },
  ];
  const table = {};

  function matches(i) {
    const t = tasks[i];
    if (state.only && !state.only.has(i)) return false;
    if (state.statuses.size && !state.statuses.has(t.status)) return false;
    if (!state.filter) return true;
    const q = state.filter;
    return t.name.toLowerCase().includes(q) || t.kind.toLowerCase().includes(q) ||
      (t.error || "").toLowerCase().includes(q);
  }

  function sortValue(t, key) {
    if (key === "status") return SEVERITY[t.status] ?? 99;
    const v = t[key];
    return v === null || v === undefined ? (key === "error" || key === "name" || key === "kind" ? "" : -Infinity) : v;
  }

  function renderTable() {
    let rows = [];
    for (let i = 0; i < N; i++) if (matches(i)) rows.push(i);
    if (state.sortKey) {
      const key = state.sortKey, dir = state.sortDir;
      rows.sort((a, b) => {
        const x = sortValue(tasks[a], key), y = sortValue(tasks[b], key);
        return (x < y ? -1 : x > y ? 1 : 0) * dir || a - b;
      });
    }
    const body = table.body;
    body.textContent = "";
    const frag = document.createDocumentFragment();
    for (const i of rows.slice(0, state.shown)) {
      const t = tasks[i];
      const tr = h("tr", { "data-i": String(i), cls: i === state.selected ? "sel" : null }, [
        h("td", { text: t.name, title: t.name }),
        h("td", { text: t.kind, title: t.kind }),
        h("td", {}, [h("span", { cls: "dot " + st(t.status) }), document.createTextNode(" " + t.status.replace("_", " "))]),
        h("td", { cls: "num", text: String(t.attempts) }),
        h("td", { cls: "num", text: t.start === null ? "–" : fmtSec(t.start) }),
        h("td", { cls: "num", text: fmtSec(t.duration) }),
        h("td", { cls: "err", text: t.error || "", title: t.error || null }),
      ]);
      frag.appendChild(tr);
    }
    body.appendChild(frag);
    table.count.textContent = "showing " + fmtCount(Math.min(rows.length, state.shown)) + " of " + fmtCount(rows.length) +
      " matching task" + (rows.length === 1 ? "" : "s") + (rows.length !== N ? " (" + fmtCount(N) + " in the run)" : "");
    table.more.style.display = rows.length > state.shown ? "" : "none";
    table.onlyChip.style.display = state.only ? "" : "none";
    table.onlyChip.firstChild.textContent = "only " + truncate(state.onlyLabel, 40) + " ✕";
    for (const th of table.heads) {
      th.setAttribute("aria-sort", th.dataset.key === state.sortKey ? (state.sortDir > 0 ? "ascending" : "descending") : "none");
    }
  }

  function renderTableSection() {
    const section = h("section", { cls: "card", id: "tasks" });
    const input = h("input", { type: "search", placeholder: "filter by name, kind or error", "aria-label": "filter tasks", size: "32" });
    input.addEventListener("input", () => { state.filter = input.value.trim().toLowerCase(); state.shown = 100; renderTable(); });
    table.onlyChip = h("button", { cls: "chip active", title: "show every task" }, [h("span")]);
    table.onlyChip.addEventListener("click", () => { state.only = null; renderTable(); });
    section.appendChild(h("div", { cls: "bar" }, [h("h2", { text: "Tasks" }), input, table.onlyChip]));
    const colgroup = h("colgroup", {}, COLUMNS.map((c) => h("col", { width: c.width })));
    table.heads = COLUMNS.map((c) => {
      const th = h("th", { text: c.label, cls: c.num ? "num" : null, "data-key": c.key, scope: "col", tabindex: "0" });
      const sort = () => {
        if (state.sortKey === c.key) state.sortDir = -state.sortDir;
        else { state.sortKey = c.key; state.sortDir = c.num ? -1 : 1; }
        renderTable();
      };
      th.addEventListener("click", sort);
      th.addEventListener("keydown", (ev) => { if (ev.key === "Enter") sort(); });
      return th;
    });
    table.body = h("tbody");
    table.body.addEventListener("click", (ev) => {
      const tr = ev.target.closest("tr");
      if (tr) select(Number(tr.dataset.i));
    });
    section.appendChild(h("div", { cls: "scroll" }, [h("table", { cls: "tasks" }, [colgroup, h("thead", {}, [h("tr", {}, table.heads)]), table.body])]));
    table.count = h("span");
    table.more = h("button", { text: "show 500 more", on: { click: () => { state.shown += 500; renderTable(); } } });
    section.appendChild(h("div", { cls: "more" }, [table.count, table.more]));
    main.appendChild(section);
    renderTable();
  }

  // -- the task in detail -------------------------------------------------------------------
  const detail = h("aside", { id: "detail", "aria-label": "task detail", "aria-hidden": "true" });
  document.body.appendChild(detail);

  function taskLinks(indices, limit) {
    const box = h("div", { cls: "links" });
    for (const i of indices.slice(0, limit)) {
      box.appendChild(h("button", { cls: "", title: tasks[i].status, on: { click: () => select(i) } }, [
        h("span", { cls: "dot " + st(tasks[i].status) }), document.createTextNode(" " + truncate(tasks[i].name, 60))]));
    }
    if (indices.length > limit) box.appendChild(h("span", { text: "and " + fmtCount(indices.length - limit) + " more" }));
    return box;
  }

  function renderDetail(i) {
    const t = tasks[i];
    detail.textContent = "";
    const close = h("button", { text: "✕", title: "close (Esc)", "aria-label": "close" });
    close.addEventListener("click", () => select(-1));
    detail.appendChild(h("div", { cls: "head" }, [h("h2", { text: t.name }), close]));
    detail.appendChild(h("span", { cls: "badge " + st(t.status), text: t.status.replace("_", " ") }));
    const facts = h("dl", { cls: "facts" });
    const fact = (label, value) => { facts.appendChild(h("dt", { text: label })); facts.appendChild(h("dd", { text: value })); };
    fact("kind", t.kind || "–");
    fact("attempts", String(t.attempts));
    fact("started", t.start === null ? "–" : fmtSec(t.start) + " after the run started");
    fact("ended", t.end === null ? "–" : fmtSec(t.end) + " after the run started");
    fact("duration", fmtSec(t.duration));
    if (t.runner) fact("runner", t.runner);
    fact("layer", String(t.layer));
    detail.appendChild(h("h3", { text: "Task" }));
    detail.appendChild(facts);
    if (t.error) {
      detail.appendChild(h("h3", { text: "Error" }));
      detail.appendChild(h("pre", { cls: "error", text: t.error }));
    }
    if (t.traceback) {
      detail.appendChild(h("h3", { text: "Traceback" }));
      detail.appendChild(h("pre", { cls: "traceback", text: t.traceback }));
    }
    if (t.log.length) {
      detail.appendChild(h("h3", { text: "Attempts" }));
      const body = h("tbody");
      for (const a of t.log) {
        body.appendChild(h("tr", {}, [h("td", { text: String(a[0]) }), h("td", { text: fmtSec(a[1]) }),
          h("td", { text: fmtSec(a[2] - a[1]) }), h("td", {}, [h("span", { cls: "dot " + st(a[3]) }), document.createTextNode(" " + a[3])]),
          h("td", { text: "lane " + (a[5] + 1) }), h("td", { cls: "mono", text: a[4] || "" })]));
      }
      detail.appendChild(h("table", {}, [h("thead", {}, [h("tr", {}, ["#", "start", "took", "status", "lane", "error"].map((x) => h("th", { text: x })))]), body]));
    }
    if (t.output && t.output.length) {
      detail.appendChild(h("h3", { text: "Output" }));
      for (const [attempt, stream, text] of t.output) {
        detail.appendChild(h("div", { cls: "output-head", text: "attempt " + attempt + ": " + stream }));
        detail.appendChild(h("pre", { cls: "output " + stream, text: text }));
      }
    } else if (t.output_left_out) {
      detail.appendChild(h("h3", { text: "Output" }));
      detail.appendChild(h("div", { text: "left out of this page (it holds at most " + fmtCount(run.output_budget) + " characters of output): opus runs show " + (run.id || "RUN") + " " + t.name + " --output" }));
    }
    detail.appendChild(h("h3", { text: "Depends on (" + (t.deps.length + t.missing.length) + ")" }));
    detail.appendChild(t.deps.length ? taskLinks(t.deps, 200) : h("div", { text: t.missing.length ? "" : "nothing" }));
    if (t.missing.length) detail.appendChild(h("div", { text: "not in this run: " + t.missing.join(", ") }));
    detail.appendChild(h("h3", { text: "Needed by (" + dependents[i].length + ")" }));
    detail.appendChild(dependents[i].length ? taskLinks(dependents[i], 200) : h("div", { text: "nothing" }));
    detail.appendChild(h("h3", { text: "Show" }));
    detail.appendChild(h("div", { cls: "links" }, [
      h("button", { text: "in the graph", on: { click: () => revealInGraph(i) } }),
      h("button", { text: "in the timeline", on: { click: () => revealInTimeline(i) } })]));
  }

  function revealInTimeline(i) {
    const first = timeline.overlay && timeline.overlay.firstChild;
    if (first && state.selected === i) first.scrollIntoView({ block: "center", inline: "center" });
  }

  function highlight() {
    const i = state.selected;
    for (const el of document.querySelectorAll(".sel")) el.classList.remove("sel");
    for (const el of document.querySelectorAll(".edge.hot")) el.classList.remove("hot");
    if (timeline.overlay) {
      timeline.overlay.textContent = "";
      for (const a of i >= 0 ? tasks[i].log : []) {
        const g = timeline.geometry({ s: a[1], e: a[2], lane: a[5] });
        s("rect", { class: "attempt-sel", x: g[0] - 1.5, y: g[1] - 1.5, width: g[2] + 3,
          height: timeline.barH + 3, rx: 3 }, timeline.overlay);
      }
    }
    if (i < 0) return;
    if (graph.model) {
      const id = graph.model.nodeOf.get(i);
      const el = id && graph.nodes.get(id);
      if (el) el.classList.add("sel");
      if (id) for (const e of graph.edgeEls) if (e.dataset.from === id || e.dataset.to === id) e.classList.add("hot");
    }
    if (table.body) {
      const row = table.body.querySelector('tr[data-i="' + i + '"]');
      if (row) row.classList.add("sel");
    }
  }

  function select(i) {
    state.selected = i;
    if (i >= 0) {
      renderDetail(i);
      detail.classList.add("open");
      detail.setAttribute("aria-hidden", "false");
    } else {
      detail.classList.remove("open");
      detail.setAttribute("aria-hidden", "true");
    }
    highlight();
  }

  document.addEventListener("keydown", (ev) => { if (ev.key === "Escape" && state.selected >= 0) select(-1); });

  renderHeader();
  renderGraphSection();
  renderTimelineSection();
  renderTableSection();
  window.opusReport = { select: select, revealInGraph: revealInGraph, tasks: N, attempts: attempts.length,
    lanes: data.lanes, grouping: () => graph.model.grouping.mode };
  performance.mark("opus-report-ready");
  requestAnimationFrame(() => setTimeout(() => { performance.mark("opus-report-painted"); document.body.dataset.ready = "1"; }, 0));
})();
