// Widget configuration: from the script tag's data- attributes, or from
// AgentConnectVoice.mount({...}) with the same names in camelCase.

const DEFAULTS = {
  apiBase: '',
  widgetKey: '',
  companyId: null,
  agentId: null,
  buttonLabel: 'Talk to us',
  title: 'Voice assistant',
  color: '#1d4ed8',
  textColor: '#ffffff',
  participantName: '',
  agentName: 'Assistant',
  agentTimeout: 15,
  mount: '',
  sessionId: '',
  join: false,
};

function toInt(value) {
  if (value === null || value === undefined || value === '') return null;
  const n = Number(value);
  return Number.isInteger(n) && n > 0 ? n : null;
}

function toBool(value) {
  if (typeof value === 'boolean') return value;
  return ['true', '1', 'yes', ''].includes(String(value).toLowerCase());
}

// A colour goes into a style sheet; only accept what the browser parses as one.
function safeColor(value, fallback) {
  if (!value) return fallback;
  const v = String(value).trim();
  if (typeof CSS !== 'undefined' && CSS.supports && CSS.supports('color', v)) return v;
  return fallback;
}

/**
 * The API lives on the server that serves widget.js, unless data-api-base says
 * otherwise: a company pastes one tag and it works from any website.
 */
function resolveApiBase(apiBase, scriptSrc) {
  const base = (apiBase || '').trim();
  if (base) return base.replace(/\/+$/, '');
  if (scriptSrc) {
    try {
      return new URL(scriptSrc, window.location.href).origin;
    } catch (_) {
      // fall through to the page's own origin
    }
  }
  return window.location.origin;
}

export function configFromScript(script) {
  const d = script ? script.dataset : {};
  const raw = {};
  for (const key of Object.keys(DEFAULTS)) {
    if (d[key] !== undefined) raw[key] = d[key];
  }
  return normalise(raw, script ? script.src : '');
}

export function normalise(raw, scriptSrc = '') {
  const cfg = { ...DEFAULTS, ...raw };
  const timeout = Number(cfg.agentTimeout);
  return {
    apiBase: resolveApiBase(cfg.apiBase, scriptSrc),
    widgetKey: String(cfg.widgetKey || '').trim(),
    companyId: toInt(cfg.companyId),
    agentId: toInt(cfg.agentId),
    buttonLabel: String(cfg.buttonLabel || DEFAULTS.buttonLabel),
    title: String(cfg.title || DEFAULTS.title),
    color: safeColor(cfg.color, DEFAULTS.color),
    textColor: safeColor(cfg.textColor, DEFAULTS.textColor),
    participantName: String(cfg.participantName || '').slice(0, 64),
    agentName: String(cfg.agentName || DEFAULTS.agentName),
    agentTimeoutMs: (Number.isFinite(timeout) && timeout > 0 ? timeout : DEFAULTS.agentTimeout) * 1000,
    mount: String(cfg.mount || ''),
    sessionId: String(cfg.sessionId || ''),
    join: cfg.join === false ? false : toBool(cfg.join),
  };
}

/** What is missing for the widget to work at all; shown instead of a broken button. */
export function configProblems(cfg) {
  const problems = [];
  if (!cfg.widgetKey) problems.push('data-widget-key');
  if (cfg.join) {
    if (!cfg.sessionId) problems.push('data-session-id');
  } else {
    if (!cfg.companyId) problems.push('data-company-id');
    if (!cfg.agentId) problems.push('data-agent-id');
  }
  return problems;
}
