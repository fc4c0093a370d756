import {
  BarController, BarElement, CategoryScale, Chart, Legend, LinearScale,
  LineController, LineElement, PointElement, Title, Tooltip,
} from 'chart.js';

Chart.register(
  BarController, BarElement, CategoryScale, Legend, LinearScale,
  LineController, LineElement, PointElement, Title, Tooltip,
);

const COLORS = {
  stopped: '#417690', failed: '#ba2121', live: '#d9822b', recovered: '#2f9e44',
  p50: '#417690', p95: '#d9822b', peak: '#417690', company: '#ba2121', deployment: '#7a5a00',
};

function chart(id, config) {
  const canvas = document.getElementById(id);
  if (!canvas) return null;
  // No animation: the chart is drawn once, at once (and a screenshot shows it whole).
  config.options = { animation: false, responsive: true, maintainAspectRatio: false, ...config.options };
  const made = new Chart(canvas, config);
  canvas.dataset.drawn = 'true';
  return made;
}

const seconds = { y: { beginAtZero: true, title: { display: true, text: 'seconds' } } };

export function drawDashboard(data) {
  const charts = [];
  charts.push(chart('chart-outcomes', {
    type: 'bar',
    data: {
      labels: data.days,
      datasets: Object.entries(data.outcomes).map(([outcome, counts]) => ({
        label: outcome, data: counts, backgroundColor: COLORS[outcome] ?? '#888', stack: 'outcome',
      })),
    },
    options: { scales: { x: { stacked: true }, y: { stacked: true, beginAtZero: true } } },
  }));
  charts.push(chart('chart-dispatch', {
    type: 'line',
    data: {
      labels: data.days,
      datasets: ['p50', 'p95'].map((p) => ({
        label: p, data: data.dispatch[p], borderColor: COLORS[p], backgroundColor: COLORS[p], spanGaps: true,
      })),
    },
    options: { scales: seconds },
  }));
  const total = data.total_metric;
  charts.push(chart('chart-latency-agent', {
    type: 'bar',
    data: {
      labels: data.latency_by_agent.map((row) => row.agent_name),
      datasets: ['p50', 'p95'].map((p) => ({
        label: `${data.metric_labels[total]} ${p}`,
        data: data.latency_by_agent.map((row) => row[`${total}_${p}`]),
        backgroundColor: COLORS[p],
      })),
    },
    options: { scales: seconds },
  }));
  const parts = data.latency_by_provider.filter((row) => row.metric !== total);
  charts.push(chart('chart-latency-provider', {
    type: 'bar',
    data: {
      labels: parts.map((row) => `${row.provider} · ${row.label}`),
      datasets: ['p50', 'p95'].map((p) => ({
        label: p, data: parts.map((row) => row[p]), backgroundColor: COLORS[p],
      })),
    },
    options: { indexAxis: 'y', scales: { x: seconds.y } },
  }));
  const limits = [];
  if (data.concurrency.company_limit) {
    limits.push({ label: 'company limit', value: data.concurrency.company_limit, color: COLORS.company });
  }
  if (data.concurrency.deployment_limit) {
    limits.push({ label: 'deployment limit', value: data.concurrency.deployment_limit, color: COLORS.deployment });
  }
  charts.push(chart('chart-concurrency', {
    type: 'bar',
    data: {
      labels: data.days,
      datasets: [
        { type: 'bar', label: 'peak concurrent', data: data.concurrency.peak, backgroundColor: COLORS.peak },
        ...limits.map((l) => ({
          type: 'line', label: l.label, data: data.days.map(() => l.value),
          borderColor: l.color, backgroundColor: l.color, borderDash: [6, 4], pointRadius: 0,
        })),
      ],
    },
    options: { scales: { y: { beginAtZero: true } } },
  }));
  const providers = Object.keys(data.cost.by_provider);
  charts.push(chart('chart-cost', {
    type: 'bar',
    data: {
      labels: providers,
      datasets: [{ label: 'estimated cost (USD)', data: providers.map((p) => data.cost.by_provider[p]), backgroundColor: COLORS.p50 }],
    },
    options: { scales: { y: { beginAtZero: true } } },
  }));
  document.body.dataset.chartsDrawn = String(charts.filter(Boolean).length);
  return charts;
}
