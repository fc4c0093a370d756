// The staff console's scripts (dashboard charts, live view), built into
// static/agentconnect/console.js with Chart.js bundled in: no CDN, works offline.
import { drawDashboard } from './dashboard.js';
import { startLiveView, liveColumns } from './live.js';

window.AgentConnectConsole = { drawDashboard, startLiveView, liveColumns };

document.addEventListener('DOMContentLoaded', () => {
  const data = document.getElementById('console-dashboard-data');
  if (data) drawDashboard(JSON.parse(data.textContent));
  const live = document.getElementById('console-live');
  if (live) startLiveView(live);
});
