// The live view of active agents: fetches its rows as JSON and redraws the table
// without a page reload. Columns are a list: add one (e.g. handoff requests) with
// AgentConnectConsole.liveColumns.push({ key, title, render(row) }).

function text(value) {
  return value === null || value === undefined || value === '' ? '—' : String(value);
}

function duration(totalSeconds) {
  const s = Math.max(0, Math.floor(totalSeconds));
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const rest = String(s % 60).padStart(2, '0');
  return h ? `${h}:${String(m).padStart(2, '0')}:${rest}` : `${m}:${rest}`;
}

function link(href, label) {
  const a = document.createElement('a');
  a.href = href;
  a.textContent = label;
  return a;
}

export const liveColumns = [
  { key: 'session', title: 'session', render: (row) => link(row.url, row.session_id) },
  { key: 'company', title: 'company', render: (row) => text(row.company) },
  { key: 'agent', title: 'agent', render: (row) => text(row.agent) },
  {
    key: 'status',
    title: 'status (for)',
    render: (row) => `${row.status} (${duration(row.status_seconds)})${row.stuck ? ' — stuck' : ''}`,
  },
  { key: 'worker', title: 'worker', render: (row) => text(row.worker) },
  { key: 'turns', title: 'turns', render: (row) => text(row.turns) },
  {
    key: 'last_latency',
    title: 'last turn v2v (s)',
    render: (row) => (row.last_latency === null ? '—' : row.last_latency.toFixed(3)),
  },
  { key: 'handoff', title: 'person', render: (row) => handoff(row.handoff) },
  { key: 'actions', title: 'actions', render: (row, view) => view.actions(row) },
];

// A handoff to a person: a waiting visitor's wait, and Join (the staff call page).
function handoff(cell) {
  if (!cell) return '—';
  if (!cell.waiting) return `${cell.status} (waited ${duration(cell.wait_seconds || 0)})`;
  const span = document.createElement('span');
  span.className = 'handoff-waiting';
  span.title = cell.reason || '';
  span.textContent = `waiting ${duration(cell.wait_seconds || 0)} `;
  const join = document.createElement('a');
  join.className = 'button handoff-join';
  join.href = cell.join_url;
  join.textContent = 'Join';
  span.append(join);
  return span;
}

class LiveView {
  constructor(root) {
    this.root = root;
    this.url = root.dataset.url;
    this.refreshMs = Number(root.dataset.refreshSeconds || 3) * 1000;
    this.csrf = root.dataset.csrf;
    this.table = root.querySelector('table');
    this.status = root.querySelector('.console-live-status');
    this.timer = null;
  }

  start() {
    const head = this.table.querySelector('thead tr');
    head.replaceChildren(...liveColumns.map((c) => {
      const th = document.createElement('th');
      th.textContent = c.title;
      return th;
    }));
    this.refresh();
  }

  async refresh() {
    clearTimeout(this.timer);
    try {
      const response = await fetch(this.url, { headers: { Accept: 'application/json' }, credentials: 'same-origin' });
      if (!response.ok) throw new Error(`HTTP ${response.status}`);
      const data = await response.json();
      this.render(data.rows);
      this.status.textContent = `${data.rows.length} live · updated ${new Date().toLocaleTimeString()}`;
      this.root.dataset.refreshes = String(Number(this.root.dataset.refreshes || 0) + 1);
    } catch (error) {
      this.status.textContent = `Could not refresh: ${error.message}`;
    }
    this.timer = setTimeout(() => this.refresh(), this.refreshMs);
  }

  render(rows) {
    const body = this.table.querySelector('tbody');
    body.replaceChildren(...rows.map((row) => {
      const tr = document.createElement('tr');
      tr.dataset.session = row.session_id;
      tr.dataset.status = row.status;
      if (row.stuck) tr.classList.add('stuck');
      if (row.handoff && row.handoff.waiting) tr.classList.add('handoff-waiting');
      for (const column of liveColumns) {
        const td = document.createElement('td');
        td.className = `col-${column.key}`;
        const content = column.render(row, this);
        if (content instanceof Node) td.append(content);
        else td.textContent = content;
        tr.append(td);
      }
      return tr;
    }));
    if (!rows.length) {
      const tr = document.createElement('tr');
      const td = document.createElement('td');
      td.colSpan = liveColumns.length;
      td.textContent = 'No live sessions.';
      tr.append(td);
      body.append(tr);
    }
  }

  actions(row) {
    const span = document.createElement('span');
    for (const action of row.actions) {
      const button = document.createElement('button');
      button.type = 'button';
      button.className = 'button';
      button.textContent = action.label;
      button.dataset.action = action.name;
      button.addEventListener('click', () => this.act(action));
      span.append(button, ' ');
    }
    return span;
  }

  async act(action) {
    if (action.confirm && !window.confirm(action.confirm)) return;
    const response = await fetch(action.url, {
      method: 'POST', credentials: 'same-origin', headers: { 'X-CSRFToken': this.csrf, Accept: 'application/json' },
    });
    const data = await response.json().catch(() => ({}));
    this.status.textContent = data.message || `HTTP ${response.status}`;
    this.refresh();
  }
}

export function startLiveView(root) {
  const view = new LiveView(root);
  view.start();
  return view;
}
