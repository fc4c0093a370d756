// The voice-session API (/api/v1/livekit-agents/...). Every failure becomes a
// WidgetError whose message can be shown to the visitor as it is.

const PREFIX = '/api/v1/livekit-agents';
const REQUEST_TIMEOUT_MS = 15000;

export class WidgetError extends Error {
  /**
   * @param {string} kind  what went wrong, for the UI and tests: server, blocked,
   *   network, mic-denied, mic-unavailable, agent-timeout, connection-lost, session-ended
   * @param {string} message  a sentence for the visitor
   * @param {{code?: string, status?: number}} extra  the API's error code and HTTP status
   */
  constructor(kind, message, extra = {}) {
    super(message);
    this.name = 'WidgetError';
    this.kind = kind;
    this.code = extra.code || '';
    this.status = extra.status || 0;
  }
}

export class ApiClient {
  constructor(base, widgetKey) {
    this.base = base;
    this.widgetKey = widgetKey;
  }

  url(path) {
    return `${this.base}${PREFIX}/${path}`;
  }

  async post(path, body, { keepalive = false } = {}) {
    const controller = new AbortController();
    const timer = setTimeout(() => controller.abort(), REQUEST_TIMEOUT_MS);
    let response;
    try {
      response = await fetch(this.url(path), {
        method: 'POST',
        headers: { 'Content-Type': 'application/json', 'X-Widget-Key': this.widgetKey },
        body: JSON.stringify(body),
        credentials: 'omit',
        mode: 'cors',
        keepalive,
        signal: controller.signal,
      });
    } catch (err) {
      if (controller.signal.aborted) {
        throw new WidgetError('network', 'The voice service did not answer in time. Please try again.');
      }
      throw await this.explainFetchFailure();
    } finally {
      clearTimeout(timer);
    }
    let data = null;
    try {
      data = await response.json();
    } catch (_) {
      data = null;
    }
    if (response.ok && data && data.success !== false) return data;
    const error = data && data.error ? data.error : null;
    const message = error && error.message
      ? error.message
      : `The voice service answered with an error (HTTP ${response.status}).`;
    throw new WidgetError('server', message, { code: error ? error.code : '', status: response.status });
  }

  /**
   * A cross-origin request fails the same way whether the server is down or
   * refused this website (no CORS headers for an origin it does not know).
   * An opaque no-cors request tells the two apart: it succeeds when the server
   * is reachable, so the refusal was the origin's.
   */
  async explainFetchFailure() {
    const sameOrigin = new URL(this.base, window.location.href).origin === window.location.origin;
    if (!sameOrigin) {
      try {
        await fetch(this.url('widget-voice-token'), { method: 'GET', mode: 'no-cors', credentials: 'omit', cache: 'no-store' });
        return new WidgetError(
          'blocked',
          `This website (${window.location.origin}) is not allowed to use this voice widget. `
            + "The site owner can add it to the company's allowed origins.",
          { code: 'origin_not_allowed' },
        );
      } catch (_) {
        // the server is unreachable after all
      }
    }
    return new WidgetError('network', 'Could not reach the voice service. Check your connection and try again.');
  }

  startSession(body) {
    return this.post('start-voice-session', body);
  }

  async agentStatus(sessionId) {
    const controller = new AbortController();
    const timer = setTimeout(() => controller.abort(), REQUEST_TIMEOUT_MS);
    try {
      const response = await fetch(this.url(`agent-status/${encodeURIComponent(sessionId)}`), {
        headers: { 'X-Widget-Key': this.widgetKey },
        credentials: 'omit',
        mode: 'cors',
        signal: controller.signal,
      });
      const data = await response.json();
      if (!response.ok || !data || data.success === false) {
        throw new WidgetError('server', `The voice service answered with an error (HTTP ${response.status}).`);
      }
      return data;
    } finally {
      clearTimeout(timer);
    }
  }

  widgetToken(body) {
    return this.post('widget-voice-token', body);
  }

  /**
   * keepalive lets the request outlive the page (unload). sendBeacon would too,
   * but it cannot send the X-Widget-Key header.
   */
  stopSession(sessionId, { keepalive = false } = {}) {
    return this.post('stop-voice-session', { session_id: sessionId }, { keepalive });
  }
}
