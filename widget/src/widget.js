// The widget's UI: a launcher button and a panel (status, errors, transcript,
// controls) in a shadow root. Each conversation is a VoiceSession; the UI
// renders what the session reports.
import { ApiClient } from './api.js';
import { configProblems } from './config.js';
import { VoiceSession } from './session.js';
import { STYLES } from './styles.js';

const MIC_ICON = '<svg viewBox="0 0 24 24" aria-hidden="true" focusable="false" fill="none" stroke="currentColor" '
  + 'stroke-width="2" stroke-linecap="round" stroke-linejoin="round"><rect x="9" y="2" width="6" height="12" rx="3"/>'
  + '<path d="M5 10a7 7 0 0 0 14 0"/><line x1="12" y1="17" x2="12" y2="22"/></svg>';

// What the status line says: [data-state, text]. The agent's own states come
// from its lk.agent.state attribute.
const PHASES = {
  idle: ['idle', 'Ready to talk'],
  'requesting-mic': ['connecting', 'Waiting for microphone permission…'],
  starting: ['connecting', 'Connecting…'],
  connecting: ['connecting', 'Connecting…'],
  'waiting-agent': ['connecting', 'Connecting… waiting for the assistant to join'],
  reconnecting: ['reconnecting', 'Connection lost, reconnecting…'],
  'agent-reconnecting': ['reconnecting', 'Reconnecting the assistant…'],
  rejoining: ['reconnecting', 'Connection lost, rejoining the conversation…'],
  ending: ['ending', 'Ending the conversation…'],
  ended: ['ended', 'Conversation ended'],
  error: ['error', 'Could not continue'],
};
// A handoff to a person, from the agent's agentconnect.handoff attribute.
const HANDOFF_STATES = {
  waiting: 'Waiting for a person from the team…',
  connected: 'You are connected to a person.',
  missed: 'Nobody from the team could join; the assistant is back with you.',
};

const AGENT_STATES = {
  initializing: ['connecting', 'Connecting… the assistant is getting ready'],
  idle: ['idle', 'Ready'],
  listening: ['listening', 'Listening'],
  thinking: ['thinking', 'Thinking…'],
  speaking: ['speaking', 'Speaking'],
};
const MAX_LINES = 200;

let instances = 0;

export class Widget {
  constructor(cfg, { host = null } = {}) {
    this.cfg = cfg;
    this.id = `agentconnect-${++instances}`;
    this.api = new ApiClient(cfg.apiBase, cfg.widgetKey);
    this.session = null;
    this.lines = new Map();
    this.inline = Boolean(host);
    this.host = document.createElement('div');
    this.host.setAttribute('data-agentconnect-widget', this.id);
    (host || document.body).appendChild(this.host);
    this.render();
    window.addEventListener('pagehide', () => {
      if (this.session) this.session.unload();
    });
  }

  // ---------------------------------------------------------------- DOM

  render() {
    const root = this.host.attachShadow({ mode: 'open' });
    this.root = root;
    const style = document.createElement('style');
    style.textContent = STYLES;
    root.appendChild(style);

    const wrap = el('div', { class: 'ac-root', 'data-mode': this.inline ? 'inline' : 'floating' });
    wrap.style.setProperty('--ac-accent', this.cfg.color);
    wrap.style.setProperty('--ac-on-accent', this.cfg.textColor);
    root.appendChild(wrap);
    this.wrap = wrap;

    const panelId = `${this.id}-panel`;
    const titleId = `${this.id}-title`;

    this.launcher = el('button', {
      type: 'button',
      class: 'ac-launcher',
      'aria-controls': panelId,
      'aria-expanded': 'false',
    });
    this.launcher.innerHTML = MIC_ICON;
    this.launcher.appendChild(el('span', { class: 'ac-launcher-label' }, this.cfg.buttonLabel));
    this.launcher.addEventListener('click', () => this.start());

    const panel = el('section', { class: 'ac-panel', id: panelId, 'aria-labelledby': titleId });
    panel.hidden = true;
    this.panel = panel;

    const header = el('div', { class: 'ac-header' });
    this.title = el('h2', { class: 'ac-title', id: titleId, tabindex: '-1' }, this.cfg.title);
    this.closeButton = el('button', { type: 'button', class: 'ac-close', 'aria-label': 'Close the voice assistant' }, 'Close');
    this.closeButton.addEventListener('click', () => this.close());
    header.append(this.title, this.closeButton);

    this.status = el('div', { class: 'ac-status', role: 'status', 'aria-live': 'polite', 'data-state': 'idle' });
    this.statusText = el('span', { class: 'ac-status-text' }, PHASES.idle[1]);
    this.status.append(el('span', { class: 'ac-dot', 'aria-hidden': 'true' }), this.statusText);

    this.alert = el('div', { class: 'ac-alert', role: 'alert' });
    this.alertText = el('p', { class: 'ac-alert-text' });
    this.alert.appendChild(this.alertText);
    this.alert.hidden = true;

    this.notice = el('p', { class: 'ac-notice' });
    this.notice.hidden = true;

    this.transcript = el('ol', {
      class: 'ac-transcript',
      role: 'log',
      'aria-label': 'Conversation transcript',
      'aria-live': 'polite',
    });
    this.empty = el('li', { class: 'ac-empty' }, 'What you and the assistant say will appear here.');
    this.transcript.appendChild(this.empty);

    const controls = el('div', { class: 'ac-controls' });
    this.audioButton = el('button', { type: 'button', class: 'ac-primary ac-audio' }, 'Turn on sound');
    this.audioButton.hidden = true;
    this.audioButton.addEventListener('click', () => this.session && this.session.startAudio().catch(() => {}));
    this.muteButton = el('button', {
      type: 'button',
      class: 'ac-secondary ac-mute',
      'aria-pressed': 'false',
      'aria-label': 'Mute microphone',
    }, 'Mute');
    this.muteButton.addEventListener('click', () => this.toggleMute());
    this.endButton = el('button', { type: 'button', class: 'ac-danger ac-end', 'aria-label': 'End conversation' }, 'End');
    this.endButton.addEventListener('click', () => this.end());
    this.restartButton = el('button', { type: 'button', class: 'ac-primary ac-restart' }, 'Try again');
    this.restartButton.hidden = true;
    this.restartButton.addEventListener('click', () => this.start());
    controls.append(this.audioButton, this.muteButton, this.endButton, this.restartButton);

    panel.append(header, this.status, this.alert, this.notice, this.transcript, controls);
    panel.addEventListener('keydown', (ev) => {
      if (ev.key === 'Escape' && !this.inline && !(this.session && this.session.active)) this.close();
    });

    this.audioHost = el('div', { class: 'ac-audio-host' });
    this.audioHost.hidden = true;

    wrap.append(panel, this.launcher, this.audioHost);

    const problems = configProblems(this.cfg);
    if (problems.length) {
      this.launcher.disabled = true;
      wrap.appendChild(el(
        'p',
        { class: 'ac-config-error', role: 'alert' },
        `Voice widget is not configured: missing ${problems.join(', ')}.`,
      ));
    }
  }

  // ---------------------------------------------------------------- actions

  start() {
    if (this.session && this.session.active) return;
    this.clearTranscript();
    this.showError(null);
    this.notice.hidden = true;
    this.panel.hidden = false;
    // The panel's own buttons take over (End, then Try again / Start a new conversation).
    this.launcher.hidden = true;
    this.launcher.setAttribute('aria-expanded', 'true');
    this.closeButton.hidden = true;
    this.restartButton.hidden = true;
    this.endButton.hidden = false;
    this.muteButton.hidden = false;
    this.setMuteUi(false);
    this.title.focus();
    const session = new VoiceSession(this.cfg, this.api, (type, detail) => this.onSession(session, type, detail), this.audioHost);
    this.session = session;
    return session.start();
  }

  end() {
    if (this.session) return this.session.end();
    return undefined;
  }

  close() {
    if (this.session && this.session.active) return;
    this.panel.hidden = true;
    this.launcher.hidden = false;
    this.launcher.setAttribute('aria-expanded', 'false');
    this.launcher.focus();
  }

  toggleMute() {
    if (!this.session) return;
    const muted = this.muteButton.getAttribute('aria-pressed') !== 'true';
    this.session.setMuted(muted).catch(() => {});
  }

  setMuteUi(muted) {
    this.muteButton.setAttribute('aria-pressed', String(muted));
    this.muteButton.textContent = muted ? 'Unmute' : 'Mute';
    this.muteButton.setAttribute('aria-label', muted ? 'Unmute microphone' : 'Mute microphone');
  }

  // ---------------------------------------------------------------- session reports

  onSession(session, type, detail) {
    if (session !== this.session) return;
    switch (type) {
      case 'phase':
        this.onPhase(detail);
        break;
      case 'agent-state':
        this.setStatus(...(AGENT_STATES[detail.state] || ['connecting', detail.state]), detail.state);
        break;
      case 'transcript':
        this.renderSegment(detail);
        break;
      case 'handoff':
        this.showHandoff(detail.state);
        break;
      case 'muted':
        this.setMuteUi(detail.muted);
        break;
      case 'audio-blocked':
        this.audioButton.hidden = !detail.blocked;
        break;
      case 'session':
        this.dispatch('agentconnect:session', detail);
        break;
      case 'reconnected':
        this.notice.hidden = true;
        break;
      default:
        break;
    }
  }

  onPhase({ phase, message, error }) {
    if (phase === 'reconnecting' || phase === 'rejoining') {
      this.notice.textContent = 'The connection dropped. Reconnecting you to the same conversation…';
      this.notice.hidden = false;
    } else if (phase === 'live' || phase === 'waiting-agent') {
      this.notice.hidden = true;
    }
    if (phase === 'live') return; // the agent's state follows
    const [state, text] = PHASES[phase] || ['idle', phase];
    if (phase === 'ended' || phase === 'error') {
      this.notice.hidden = true;
      this.endButton.hidden = true;
      this.muteButton.hidden = true;
      this.audioButton.hidden = true;
      this.closeButton.hidden = this.inline;
      this.restartButton.textContent = phase === 'error' ? 'Try again' : 'Start a new conversation';
      this.restartButton.hidden = false;
      if (phase === 'error') {
        this.showError(error);
        this.setStatus(state, text);
      } else {
        this.setStatus(state, message || text);
      }
      this.dispatch('agentconnect:ended', {
        sessionId: this.session ? this.session.sessionId : '',
        error: error ? { kind: error.kind, code: error.code, message: error.message } : null,
      });
      // Focus moves to the one next step, unless the visitor is busy elsewhere on the page.
      const active = document.activeElement;
      if (!active || active === document.body || active === this.host) this.restartButton.focus();
      return;
    }
    this.setStatus(state, text);
  }

  showHandoff(state) {
    const text = HANDOFF_STATES[state];
    if (!text) return;
    this.status.setAttribute('data-handoff', state);
    this.notice.textContent = text;
    this.notice.hidden = false;
    this.dispatch('agentconnect:handoff', { state, text });
  }

  setStatus(state, text, agentState = '') {
    this.status.setAttribute('data-state', state);
    if (agentState) this.status.setAttribute('data-agent-state', agentState);
    else this.status.removeAttribute('data-agent-state');
    this.statusText.textContent = text;
    this.dispatch('agentconnect:state', { state, text });
  }

  showError(error) {
    if (!error) {
      this.alert.hidden = true;
      this.alert.removeAttribute('data-error');
      this.alertText.textContent = '';
      return;
    }
    this.alert.setAttribute('data-error', error.kind);
    if (error.code) this.alert.setAttribute('data-code', error.code);
    else this.alert.removeAttribute('data-code');
    this.alertText.textContent = error.message;
    this.alert.hidden = false;
  }

  clearTranscript() {
    this.lines.clear();
    this.transcript.replaceChildren(this.empty);
  }

  renderSegment(segment) {
    let line = this.lines.get(segment.id);
    if (!line) {
      line = el('li', { class: 'ac-line', 'data-speaker': segment.speaker });
      line.append(el('span', { class: 'ac-who' }, `${segment.name}:`), el('span', { class: 'ac-text' }));
      this.empty.remove();
      this.transcript.appendChild(line);
      this.lines.set(segment.id, line);
      while (this.lines.size > MAX_LINES) {
        const [oldest] = this.lines.keys();
        this.lines.get(oldest).remove();
        this.lines.delete(oldest);
      }
    }
    line.setAttribute('data-final', String(segment.final));
    line.lastChild.textContent = ` ${segment.text}`;
    this.transcript.scrollTop = this.transcript.scrollHeight;
  }

  dispatch(name, detail) {
    this.host.dispatchEvent(new CustomEvent(name, { detail: { widget: this.id, ...detail }, bubbles: true, composed: true }));
  }
}

function el(tag, attrs = {}, text = '') {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) node.setAttribute(name, value);
  if (text) node.textContent = text;
  return node;
}
