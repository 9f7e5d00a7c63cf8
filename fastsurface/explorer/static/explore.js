// The explorer's page: reads the controls, asks the server for surfaces and paths, draws them
// with plotly.js. The latest input wins: a new input aborts the request in flight for the same
// kind of work (the server also drops queued ones). Each interaction is timed from its input
// event to the plot's redraw with performance marks ('surface', 'path' and 'basins' measures).
// "Many starts" replaces the view with the library's basin map (plot_basins) until another input.
'use strict';

(() => {
  const plot = document.getElementById('plot');
  const form = document.getElementById('settings');
  // Milliseconds between two points of a path's animation.
  const FRAME_MS = 60;
  const state = {
    config: null,
    client: randomId(),
    sequence: {}, // request numbers, per kind of work
    inFlight: {}, // AbortController of the request in flight, per kind of work
    pending: 0, // requests not yet answered and drawn
    surface: null, // the surface drawn (decoded answer)
    surfaceRequest: null, // the settings it was computed with
    paths: [], // {id, colour, start, lr, epochs, optimiser, answer}
    basins: null, // the basin map shown instead of the view: {figure, runs, diverged, attractors, ...}
    made: 0, // paths made so far (names their ids and colours)
    active: null, // the path the training controls act on
    animation: null, // {path, index}: the moving marker
    listening: false,
  };

  function randomId() {
    const bytes = crypto.getRandomValues(new Uint8Array(8));
    return Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('');
  }

  // ---- controls ----

  function number(name) {
    const text = form.elements[name].value.trim();
    return text === '' ? null : Number(text); // NaN is sent as null; the server names the field
  }

  function setValue(name, value) {
    form.elements[name].value = String(value);
  }

  function currentView() {
    return form.elements.view.value;
  }

  function evaluationBody() {
    const body = { reduction: form.elements.reduction.value, batch_size: number('batch_size') };
    if (state.config.seed_data) {
      Object.assign(body, { samples: number('samples'), seed: number('seed'), split_seed: number('split_seed') });
    }
    return body;
  }

  function surfaceBody() {
    return {
      w1: [number('w1_start'), number('w1_stop')],
      w2: [number('w2_start'), number('w2_stop')],
      step: number('step'),
      ...evaluationBody(),
      log_color: form.elements.log_color.checked,
      critical_points: form.elements.critical_points.checked,
    };
  }

  function trainingControls() {
    return {
      start: [number('start_w1'), number('start_w2')],
      lr: number('lr'),
      epochs: number('epochs'),
      optimiser: form.elements.optimiser.value,
    };
  }

  function pathBody(path) {
    const { start, lr, epochs, optimiser } = path;
    return { start, lr, epochs, optimiser, ...evaluationBody() };
  }

  function fill(defaults) {
    const { config } = state;
    for (const [select, options] of [['reduction', config.reductions], ['optimiser', config.optimisers]]) {
      form.elements[select].replaceChildren(...options.map((option) => new Option(option, option)));
    }
    setWindow(defaults.w1, defaults.w2, defaults.step);
    for (const name of ['samples', 'seed', 'split_seed', 'batch_size', 'lr', 'epochs', 'points']) {
      if (name in defaults) setValue(name, defaults[name]);
    }
    form.elements.reduction.value = defaults.reduction;
    form.elements.optimiser.value = defaults.optimiser;
    setStart(defaults.start);
    form.elements.view.value = defaults.view;
    form.elements.log_color.checked = defaults.log_color;
    form.elements.critical_points.checked = defaults.critical_points;
    syncSliders();
    for (const element of document.querySelectorAll('.seed-data')) element.hidden = !config.seed_data;
    for (const element of document.querySelectorAll('.first-label')) element.textContent = config.labels[0];
    for (const element of document.querySelectorAll('.second-label')) element.textContent = config.labels[1];
    const png = form.querySelector('[data-download="png"]');
    png.disabled = config.png !== null;
    png.title = config.png || 'the view as a PNG image (kaleido)';
  }

  function setWindow(w1, w2, step) {
    setValue('w1_start', w1[0]);
    setValue('w1_stop', w1[1]);
    setValue('w2_start', w2[0]);
    setValue('w2_stop', w2[1]);
    setValue('step', step);
  }

  function setStart(point) {
    setValue('start_w1', point[0]);
    setValue('start_w2', point[1]);
  }

  function syncSliders() {
    const lr = number('lr');
    if (lr > 0) setValue('lr_slider', Math.log10(lr));
    if (number('epochs') > 0) setValue('epochs_slider', number('epochs'));
  }

  // ---- requests ----

  class Refused extends Error {}

  // POST `body` as JSON for one kind of work; a request of the same kind still in flight is aborted.
  async function post(kind, url, body) {
    state.inFlight[kind]?.abort();
    const controller = new AbortController();
    state.inFlight[kind] = controller;
    state.sequence[kind] = (state.sequence[kind] || 0) + 1;
    const sent = { ...body, client: state.client, seq: state.sequence[kind] };
    const response = await fetch(url, {
      method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify(sent),
      signal: controller.signal,
    });
    if (!response.ok) {
      const answer = await response.json();
      throw new Refused(answer.error || `HTTP ${response.status}`);
    }
    return response;
  }

  // Runs `task` as one unit of work, counted in `pending`; an aborted task ends quietly, a refused
  // or failed one shows its message in the page.
  async function tracked(task) {
    state.pending += 1;
    try {
      await task();
    } catch (error) {
      if (error.name !== 'AbortError') showError(error.message);
    } finally {
      state.pending -= 1;
    }
  }

  function showError(message) {
    const box = document.getElementById('error');
    box.textContent = message;
    box.hidden = false;
    const field = /`(\w+)`/.exec(message)?.[1];
    for (const element of form.querySelectorAll('.invalid')) element.classList.remove('invalid');
    for (const element of form.querySelectorAll(`[data-field="${field}"]`)) element.classList.add('invalid');
  }

  function clearError() {
    document.getElementById('error').hidden = true;
    for (const element of form.querySelectorAll('.invalid')) element.classList.remove('invalid');
  }

  // ---- surface ----

  function surfaceInput() {
    performance.mark('surface-input');
    state.basins = null;
    return refreshSurface();
  }

  function refreshSurface() {
    return tracked(async () => {
      const body = surfaceBody();
      const answer = await (await post('surface', 'api/surface', body)).json();
      state.surface = decodeSurface(answer);
      state.surfaceRequest = body;
      clearError();
      await render();
      performance.measure('surface', 'surface-input');
    });
  }

  // Plotly reads z[row][col] at (y[row], x[col]): rows run along the second coordinate.
  function decodeSurface(answer) {
    const loss = transposed(decode(answer.loss));
    const colour = answer.colour ? transposed(decode(answer.colour)) : loss;
    return { ...answer, loss, colour };
  }

  // An array sent as base64 little-endian float64 bytes, as rows of Float64Array.
  function decode(array) {
    const text = atob(array.base64);
    const bytes = new Uint8Array(text.length);
    for (let i = 0; i < text.length; i += 1) bytes[i] = text.charCodeAt(i);
    const values = new Float64Array(bytes.buffer);
    const [rows, columns] = array.shape;
    return Array.from({ length: rows }, (_, i) => values.subarray(i * columns, (i + 1) * columns));
  }

  function transposed(rows) {
    const count = rows.length;
    return Array.from({ length: rows[0].length }, (_, j) => {
      const column = new Float64Array(count);
      for (let i = 0; i < count; i += 1) column[i] = rows[i][j];
      return column;
    });
  }

  // A zoom or pan on a 2-D view: the new window, at a step that puts at most zoom_points values
  // on each axis (rounded up to 3 significant digits; edges to 6). A double-click (autorange)
  // goes back to the first window.
  function zoomed(event) {
    if (currentView() === 'surface' || !state.surfaceRequest || state.basins) return;
    if (event['xaxis.autorange'] || event['yaxis.autorange']) {
      resetWindow();
      return;
    }
    const w1 = range(event, 'xaxis') || state.surfaceRequest.w1;
    const w2 = range(event, 'yaxis') || state.surfaceRequest.w2;
    if (w1 === state.surfaceRequest.w1 && w2 === state.surfaceRequest.w2) return;
    const widest = Math.max(w1[1] - w1[0], w2[1] - w2[0]) / state.config.zoom_points;
    const unit = 10 ** (Math.floor(Math.log10(widest)) - 2);
    const rounded = (edges) => edges.map((edge) => Number(edge.toPrecision(6)));
    setWindow(rounded(w1), rounded(w2), Number((Math.ceil(widest / unit) * unit).toPrecision(3)));
    surfaceInput();
  }

  function resetWindow() {
    const { defaults } = state.config;
    setWindow(defaults.w1, defaults.w2, defaults.step);
    surfaceInput();
  }

  function range(event, axis) {
    if (`${axis}.range[0]` in event) return [event[`${axis}.range[0]`], event[`${axis}.range[1]`]];
    if (`${axis}.range` in event) return event[`${axis}.range`].slice(0, 2);
    return null;
  }

  // ---- paths ----

  function addPath(start) {
    performance.mark('path-input');
    state.basins = null;
    const path = { id: `p${state.made + 1}`, colour: state.config.palette[state.made % state.config.palette.length] };
    state.made += 1;
    Object.assign(path, trainingControls(), { start, answer: null });
    state.paths.push(path);
    state.active = path.id;
    return runPath(path, true);
  }

  // The learning rate or the epochs changed: the latest path reruns with them (a first path
  // starts if none). The optimiser and the start apply to the next path added, so that paths
  // of several optimisers and starts can be compared.
  function trainingInput() {
    const path = state.paths.find((p) => p.id === state.active);
    if (!path) return addPath(trainingControls().start);
    performance.mark('path-input');
    state.basins = null;
    const { lr, epochs } = trainingControls();
    Object.assign(path, { lr, epochs });
    return runPath(path, true);
  }

  function runPath(path, measured) {
    return tracked(async () => {
      const body = { ...pathBody(path), path: path.id };
      const answer = await (await post(`path:${path.id}`, 'api/path', body)).json();
      if (!state.paths.includes(path)) return; // cleared meanwhile
      path.answer = answer;
      clearError();
      state.animation = { path, index: 0 };
      await render();
      if (measured) performance.measure('path', 'path-input');
      animate(state.animation);
    });
  }

  // ---- many starts ----

  // The basin map of the window: a run from every point of a `points` x `points` grid with the
  // training controls' optimiser, learning rate and epochs.
  function manyStarts() {
    performance.mark('basins-input');
    return tracked(async () => {
      const { lr, epochs, optimiser } = trainingControls();
      const body = { ...surfaceBody(), lr, epochs, optimiser, points: number('points') };
      document.getElementById('status').textContent = `many starts: training ${body.points}² runs of ${epochs} epochs…`;
      state.basins = await (await post('basins', 'api/basins', body)).json();
      clearError();
      await render();
      performance.measure('basins', 'basins-input');
    });
  }

  function clearPaths() {
    for (const path of state.paths) state.inFlight[`path:${path.id}`]?.abort();
    state.paths = [];
    state.active = null;
    state.animation = null;
    return tracked(render);
  }

  // Moves the marker along its path, one recorded point per frame. On a 2-D view the marker is a
  // layout shape, which plotly redraws alone (Plotly.animate would clear a contour's fill); the
  // 3-D view shows it at the path's end.
  async function animate(animation) {
    const { w1, w2 } = animation.path.answer;
    if (currentView() === 'surface') {
      animation.index = w1.length - 1;
      await render();
      return;
    }
    while (state.animation === animation && animation.index < w1.length - 1) {
      await new Promise((resolve) => setTimeout(resolve, FRAME_MS));
      if (state.animation !== animation || currentView() === 'surface') return;
      animation.index += 1;
      await Plotly.relayout(plot, { 'shapes[0].xanchor': w1[animation.index], 'shapes[0].yanchor': w2[animation.index] });
    }
  }

  // ---- drawing ----

  function surfaceTrace(view) {
    const { surface } = state;
    const [first, second] = state.config.labels;
    const where = `${first}=%{x:.4g}<br>${second}=%{y:.4g}`;
    const common = { x: surface.w1, y: surface.w2, colorbar: surface.colorbar, name: 'loss' };
    if (view === 'surface') {
      return {
        ...common,
        type: 'surface',
        z: surface.loss,
        surfacecolor: surface.colour,
        hovertemplate: `${where}<br>loss=%{z:.6g}<extra></extra>`,
      };
    }
    return {
      ...common,
      type: view,
      z: surface.colour,
      customdata: surface.loss,
      hovertemplate: `${where}<br>loss=%{customdata:.6g}<extra></extra>`,
    };
  }

  function pathTraces(three) {
    return state.paths.filter((path) => path.answer).map((path) => {
      const { name, w1, w2, loss, step } = path.answer;
      const trace = {
        type: three ? 'scatter3d' : 'scatter',
        x: w1,
        y: w2,
        name,
        mode: 'lines+markers',
        line: { color: path.colour, width: three ? 4 : 2 },
        marker: { color: path.colour, size: three ? 3 : 5 },
        customdata: step.map((s, i) => [s, loss[i]]),
        hovertemplate: `${name}<br>step %{customdata[0]}<br>%{x:.4g}, %{y:.4g}<br>loss=%{customdata[1]:.6g}<extra></extra>`,
      };
      return three ? { ...trace, z: loss } : trace;
    });
  }

  function criticalTraces(three) {
    const points = state.surface.critical_points;
    return Object.entries(state.config.kind_markers).flatMap(([kind, [symbol, colour]]) => {
      const chosen = points.filter((p) => p.kind === kind);
      if (chosen.length === 0) return [];
      const trace = {
        type: three ? 'scatter3d' : 'scatter',
        x: chosen.map((p) => p.w1),
        y: chosen.map((p) => p.w2),
        mode: 'markers',
        name: kind,
        marker: { symbol, color: colour, size: three ? 6 : 12, line: { width: 1, color: 'white' } },
        customdata: chosen.map((p) => [p.loss, ...p.eigenvalues]),
        hovertemplate: `${kind}<br>%{x:.6g}, %{y:.6g}<br>loss=%{customdata[0]:.6g}<br>`
          + 'eigenvalues %{customdata[1]:.3g}, %{customdata[2]:.3g}<extra></extra>',
      };
      return [three ? { ...trace, z: chosen.map((p) => p.loss) } : trace];
    });
  }

  // The moving marker: a trace in 3-D, a shape of 14 pixels centred on the point in 2-D.
  function marker(three) {
    const animation = state.animation;
    if (!animation || !state.paths.includes(animation.path) || !animation.path.answer) return null;
    const { w1, w2, loss } = animation.path.answer;
    const k = animation.index;
    const line = { width: 2, color: 'white' };
    if (!three) {
      const [x0, x1, y0, y1] = [-7, 7, -7, 7];
      const anchor = { xanchor: w1[k], yanchor: w2[k], xsizemode: 'pixel', ysizemode: 'pixel' };
      return { type: 'circle', xref: 'x', yref: 'y', ...anchor, x0, x1, y0, y1, fillcolor: animation.path.colour, line };
    }
    return {
      type: 'scatter3d',
      x: [w1[k]],
      y: [w2[k]],
      z: [loss[k]],
      mode: 'markers',
      name: 'training',
      showlegend: false,
      hoverinfo: 'skip',
      marker: { color: animation.path.colour, size: 6, line },
    };
  }

  function layout(three) {
    const [first, second] = state.config.labels;
    const { w1, w2 } = state.surface;
    const common = {
      template: state.config.template,
      autosize: true,
      margin: { l: 60, r: 20, t: 30, b: 50 },
      legend: { orientation: 'h', y: 1.02, yanchor: 'bottom' },
    };
    if (three) {
      const title = (text) => ({ title: { text } });
      const scene = { xaxis: title(first), yaxis: title(second), zaxis: title('loss'), aspectmode: 'manual' };
      return { ...common, scene: { ...scene, aspectratio: { x: 1, y: 1, z: 0.5 }, uirevision: 'camera' } };
    }
    const moving = marker(false);
    return {
      ...common,
      xaxis: { title: { text: first }, range: [w1[0], w1[w1.length - 1]] },
      yaxis: { title: { text: second }, range: [w2[0], w2[w2.length - 1]] },
      dragmode: 'zoom',
      hovermode: 'closest',
      shapes: moving ? [moving] : [],
    };
  }

  async function render() {
    if (state.basins) {
      const { data, layout } = state.basins.figure;
      await Plotly.react(plot, data, { ...layout, autosize: true }, { responsive: true, displaylogo: false });
      await painted();
      showStatus();
      return;
    }
    if (!state.surface) return;
    const three = currentView() === 'surface';
    const traces = [surfaceTrace(currentView()), ...criticalTraces(three), ...pathTraces(three)];
    const moving = three ? marker(true) : null;
    if (moving) traces.push(moving);
    await Plotly.react(plot, traces, layout(three), { responsive: true, displaylogo: false });
    if (!state.listening) {
      plot.on('plotly_relayout', zoomed);
      plot.on('plotly_click', clicked);
      state.listening = true;
    }
    await painted();
    showStatus();
  }

  function painted() {
    return new Promise((resolve) => requestAnimationFrame(() => requestAnimationFrame(resolve)));
  }

  function clicked(event) {
    const point = event.points?.[0];
    if (!point || typeof point.x !== 'number' || typeof point.y !== 'number') return;
    setStart([point.x, point.y]);
    addPath([point.x, point.y]);
  }

  function showStatus() {
    const { surface, basins } = state;
    if (basins) {
      const attractors = basins.attractors.length;
      document.getElementById('status').textContent = `basin map: ${basins.runs.toLocaleString()} runs, `
        + `${attractors} attractor${attractors === 1 ? '' : 's'}, ${basins.diverged} diverged; `
        + `${basins.method}: ${basins.seconds.toFixed(2)} s`;
      return;
    }
    const paths = state.paths.filter((path) => path.answer).length;
    document.getElementById('status').textContent = `${surface.w1.length} x ${surface.w2.length} grid, `
      + `${surface.samples.toLocaleString()} test samples, ${surface.method} on ${surface.device}: `
      + `${(surface.seconds * 1000).toFixed(1)} ms; ${paths} path${paths === 1 ? '' : 's'}`;
  }

  // ---- downloads ----

  function download(format) {
    return tracked(async () => {
      const paths = state.paths.filter((path) => path.answer).map(pathBody);
      const body = { surface: state.surfaceRequest, paths, view: currentView(), format };
      const response = await post('download', 'api/download', body);
      const name = /filename="([^"]+)"/.exec(response.headers.get('Content-Disposition'))?.[1] || `loss_surface.${format}`;
      const link = document.createElement('a');
      link.href = URL.createObjectURL(await response.blob());
      link.download = name;
      link.click();
      setTimeout(() => URL.revokeObjectURL(link.href), 60000);
    });
  }

  // ---- wiring ----

  function listen() {
    const on = (names, type, handler) => {
      for (const name of names) form.elements[name].addEventListener(type, handler);
    };
    on(['w1_start', 'w1_stop', 'w2_start', 'w2_stop', 'step', 'log_color', 'critical_points'], 'change', surfaceInput);
    // The data and the reduction change the surface and every path.
    on(['samples', 'seed', 'split_seed', 'reduction', 'batch_size'], 'change', () => {
      surfaceInput();
      for (const path of state.paths) runPath(path, false);
    });
    on(['lr', 'epochs'], 'change', () => {
      syncSliders();
      trainingInput();
    });
    form.elements.lr_slider.addEventListener('input', () => {
      setValue('lr', Number((10 ** Number(form.elements.lr_slider.value)).toPrecision(3)));
      trainingInput();
    });
    form.elements.epochs_slider.addEventListener('input', () => {
      setValue('epochs', form.elements.epochs_slider.value);
      trainingInput();
    });
    for (const radio of form.elements.view) {
      radio.addEventListener('change', () => {
        state.basins = null;
        return tracked(render);
      });
    }
    document.getElementById('reset-window').addEventListener('click', resetWindow);
    document.getElementById('add-path').addEventListener('click', () => addPath(trainingControls().start));
    document.getElementById('clear-paths').addEventListener('click', clearPaths);
    document.getElementById('many-starts').addEventListener('click', manyStarts);
    for (const button of form.querySelectorAll('[data-download]')) {
      button.addEventListener('click', () => download(button.dataset.download));
    }
    form.addEventListener('submit', (event) => event.preventDefault());
  }

  async function start() {
    state.config = await (await fetch('api/config')).json();
    document.getElementById('problem').textContent = state.config.seed_data
      ? 'The seed problem: Linear(1,1) → Tanh → Linear(1,1) on piecewise data.'
      : `A model from Python, on the plane of ${state.config.labels.join(' and ')}.`;
    fill(state.config.defaults);
    listen();
    await surfaceInput();
  }

  // For tests and benchmarks: the page's state, and a promise that resolves once every request
  // made so far is answered and drawn.
  window.explorer = {
    state,
    ready: start(),
    idle: () => new Promise((resolve) => {
      const check = () => (state.pending === 0 ? resolve() : setTimeout(check, 10));
      check();
    }),
  };
})();
