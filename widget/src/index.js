// Entry point. One script tag makes one widget:
//
//   <script src="https://voice.example.com/static/agentconnect/widget.js"
//           data-widget-key="wk_..." data-company-id="1" data-agent-id="1"
//           data-button-label="Talk to us" data-color="#1d4ed8"></script>
//
// data-api-base defaults to the origin that served this script. Pages can also
// call window.AgentConnectVoice.mount({...}) with the same options in camelCase.
import { configFromScript, normalise } from './config.js';
import { Widget } from './widget.js';

/* global __WIDGET_VERSION__ */
const script = document.currentScript;
const widgets = [];

function mount(options = {}, target = null) {
  const cfg = options.__normalised ? options : normalise(options, script ? script.src : '');
  let host = target;
  if (!host && cfg.mount) host = document.querySelector(cfg.mount);
  const widget = new Widget(cfg, { host });
  widgets.push(widget);
  return widget;
}

function autoMount() {
  if (!script || script.dataset.widgetKey === undefined) return;
  mount({ ...configFromScript(script), __normalised: true });
}

const api = window.AgentConnectVoice || {};
api.version = __WIDGET_VERSION__;
api.widgets = widgets;
api.mount = mount;
window.AgentConnectVoice = api;

if (document.readyState === 'loading') {
  document.addEventListener('DOMContentLoaded', autoMount, { once: true });
} else {
  autoMount();
}
