// One conversation: microphone, API session, LiveKit room, agent state,
// transcript, reconnection. It knows nothing of the DOM beyond audio elements;
// it reports to the UI through `emit(type, detail)`.
import {
  DisconnectReason,
  ParticipantKind,
  Room,
  RoomEvent,
  Track,
  createLocalAudioTrack,
} from 'livekit-client';

import { WidgetError } from './api.js';

// Names from livekit-agents (livekit/agents/types.py); the agent publishes them.
export const ATTRIBUTE_AGENT_STATE = 'lk.agent.state';
// Set by the agent during a handoff to a person: waiting, connected, missed.
export const ATTRIBUTE_HANDOFF = 'agentconnect.handoff';
export const TOPIC_TRANSCRIPTION = 'lk.transcription';
export const ATTRIBUTE_SEGMENT_ID = 'lk.segment_id';
export const ATTRIBUTE_FINAL = 'lk.transcription_final';
export const ATTRIBUTE_TRACK_ID = 'lk.transcribed_track_id';

// After the SDK's own attempts to resume the connection give up (about 45 s
// of retries), the widget asks the API for a fresh token (widget-voice-token:
// the first may have expired) and joins again, after each of these pauses.
const REJOIN_DELAYS_MS = [500, 1000, 2000, 4000, 8000];
// Session statuses (agent-status) after which no agent comes back to the room.
const AGENT_GONE_STATUSES = new Set(['stopping', 'stopped', 'failed']);
const CONNECT_TIMEOUT_MS = 20000;

// Disconnects that mean "this conversation is over", not "the network broke".
const ENDED_BY_SERVER = new Map([
  [DisconnectReason.ROOM_DELETED, 'The conversation has ended.'],
  [DisconnectReason.ROOM_CLOSED, 'The conversation has ended.'],
  [DisconnectReason.PARTICIPANT_REMOVED, 'You were removed from the conversation.'],
  [DisconnectReason.DUPLICATE_IDENTITY, 'This conversation was opened in another window.'],
]);

function newSessionId() {
  const c = globalThis.crypto;
  if (c && typeof c.randomUUID === 'function') return `w-${c.randomUUID()}`;
  const bytes = new Uint8Array(16);
  c.getRandomValues(bytes);
  return `w-${Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('')}`;
}

function micError(err) {
  const name = err && err.name;
  if (name === 'NotAllowedError' || name === 'PermissionDeniedError' || name === 'SecurityError') {
    return new WidgetError(
      'mic-denied',
      'Microphone access was denied. Allow the microphone for this site in your browser, then try again.',
    );
  }
  if (name === 'NotFoundError' || name === 'DevicesNotFoundError' || name === 'OverconstrainedError') {
    return new WidgetError('mic-unavailable', 'No microphone was found. Connect one, then try again.');
  }
  if (name === 'NotReadableError' || name === 'TrackStartError' || name === 'AbortError') {
    return new WidgetError('mic-unavailable', 'The microphone is in use by another program. Close it, then try again.');
  }
  if (!navigator.mediaDevices) {
    return new WidgetError('mic-unavailable', 'This page cannot use a microphone (it must be served over HTTPS).');
  }
  return new WidgetError('mic-unavailable', `The microphone could not be started (${name || err}).`);
}

function withTimeout(promise, ms, makeError) {
  let timer;
  return Promise.race([
    promise,
    new Promise((_, reject) => {
      timer = setTimeout(() => reject(makeError()), ms);
    }),
  ]).finally(() => clearTimeout(timer));
}

export class VoiceSession {
  /**
   * @param {object} cfg  normalised configuration (config.js)
   * @param {import('./api.js').ApiClient} api
   * @param {(type: string, detail?: object) => void} emit
   * @param {HTMLElement} audioHost  where the agent's <audio> elements live
   */
  constructor(cfg, api, emit, audioHost) {
    this.cfg = cfg;
    this.api = api;
    this.emit = emit;
    this.audioHost = audioHost;
    this.phase = 'idle';
    this.room = null;
    this.micTrack = null;
    this.sessionId = cfg.join ? cfg.sessionId : '';
    this.sessionCreated = false;
    this.agentIdentity = '';
    this.agentState = 'initializing';
    this.agentTimer = null;
    this.muted = false;
    this.segments = new Map();
    this.done = false;
  }

  get active() {
    return !this.done;
  }

  setPhase(phase, detail = {}) {
    this.phase = phase;
    this.emit('phase', { phase, ...detail });
  }

  // ---------------------------------------------------------------- start

  async start() {
    try {
      await this.run();
    } catch (err) {
      const error = err instanceof WidgetError
        ? err
        : new WidgetError('network', `Something went wrong: ${err && err.message ? err.message : err}`);
      await this.fail(error);
    }
  }

  async run() {
    // The microphone first: a visitor who refuses it never creates a session.
    this.setPhase('requesting-mic');
    await this.openMicrophone();
    if (this.done) return;

    this.setPhase('starting');
    const name = this.cfg.participantName;
    let grant;
    if (this.cfg.join) {
      grant = await this.api.widgetToken({
        session_id: this.sessionId,
        ...(name ? { participant_name: name } : {}),
      });
    } else {
      this.sessionId = newSessionId();
      try {
        grant = await this.api.startSession({
          session_id: this.sessionId,
          agent_id: this.cfg.agentId,
          company_id: this.cfg.companyId,
          ...(name ? { participant_name: name } : {}),
        });
      } catch (err) {
        // The request may have reached the server before the network failed:
        // a stop for an id that was never created is a harmless 404.
        if (err.kind === 'network') this.sessionCreated = true;
        throw err;
      }
    }
    this.sessionCreated = true;
    this.sessionId = grant.session_id;
    if (this.done) {
      await this.cleanup({ stop: true });
      return;
    }
    this.emit('session', { sessionId: grant.session_id, roomName: grant.room_name, join: this.cfg.join });
    this.setPhase('connecting');
    await this.connect(grant.livekit_url, grant.user_token);
  }

  async openMicrophone() {
    if (this.micTrack && !this.micTrack.mediaStreamTrack.ended) return;
    if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) throw micError(null);
    try {
      this.micTrack = await createLocalAudioTrack({
        echoCancellation: true,
        noiseSuppression: true,
        autoGainControl: true,
      });
    } catch (err) {
      throw micError(err);
    }
    if (this.muted) await this.micTrack.mute();
  }

  // ---------------------------------------------------------------- room

  async connect(url, token) {
    const room = new Room({ adaptiveStream: false, dynacast: false, disconnectOnPageLeave: true });
    this.room = room;
    this.wire(room);
    try {
      await withTimeout(
        room.connect(url, token, { autoSubscribe: true }),
        CONNECT_TIMEOUT_MS,
        () => new WidgetError('network', 'Could not connect to the voice room in time.'),
      );
      if (this.room !== room || this.done) return;
      await this.openMicrophone();
      await room.localParticipant.publishTrack(this.micTrack, {
        source: Track.Source.Microphone,
        name: 'microphone',
      });
    } catch (err) {
      if (this.room === room) this.room = null;
      room.removeAllListeners();
      await room.disconnect().catch(() => {});
      if (err instanceof WidgetError) throw err;
      throw new WidgetError('network', `Could not connect to the voice room (${err && err.message ? err.message : err}).`);
    }
    // Started from the visitor's click, so the browser lets us play sound.
    room.startAudio().catch(() => {});
    this.emit('audio-blocked', { blocked: !room.canPlaybackAudio });

    const agent = Array.from(room.remoteParticipants.values()).find((p) => p.kind === ParticipantKind.AGENT);
    if (agent) {
      this.agentJoined(agent);
    } else {
      this.setPhase('waiting-agent');
      this.agentTimer = setTimeout(() => this.agentTimedOut(), this.cfg.agentTimeoutMs);
    }
  }

  wire(room) {
    const mine = (handler) => (...args) => {
      if (this.room === room && !this.done) handler(...args);
    };
    room.registerTextStreamHandler(TOPIC_TRANSCRIPTION, (reader, info) => {
      if (this.room === room) this.readTranscription(reader, info.identity);
    });
    room
      .on(RoomEvent.ParticipantConnected, mine((p) => {
        if (p.kind === ParticipantKind.AGENT && !this.agentIdentity) this.agentJoined(p);
      }))
      .on(RoomEvent.ParticipantDisconnected, mine((p) => {
        if (p.identity === this.agentIdentity) this.agentLeft();
      }))
      .on(RoomEvent.ParticipantAttributesChanged, mine((changed, p) => {
        if (ATTRIBUTE_HANDOFF in changed && p.kind === ParticipantKind.AGENT) {
          this.emit('handoff', { state: changed[ATTRIBUTE_HANDOFF] });
        }
        if (ATTRIBUTE_AGENT_STATE in changed && p.kind === ParticipantKind.AGENT) {
          if (!this.agentIdentity) {
            this.agentJoined(p);
          } else {
            this.agentState = changed[ATTRIBUTE_AGENT_STATE];
            if (this.phase === 'live') this.emit('agent-state', { state: this.agentState });
          }
        }
      }))
      .on(RoomEvent.TrackSubscribed, mine((track) => {
        if (track.kind !== Track.Kind.Audio) return;
        const el = track.attach();
        el.setAttribute('data-agentconnect-audio', '');
        this.audioHost.appendChild(el);
      }))
      .on(RoomEvent.TrackUnsubscribed, (track) => {
        track.detach().forEach((el) => el.remove());
      })
      .on(RoomEvent.AudioPlaybackStatusChanged, mine(() => {
        this.emit('audio-blocked', { blocked: !room.canPlaybackAudio });
      }))
      // The SDK resumes by itself first: say so, and carry on when it is back.
      .on(RoomEvent.SignalReconnecting, mine(() => this.setPhase('reconnecting')))
      .on(RoomEvent.Reconnecting, mine(() => this.setPhase('reconnecting')))
      .on(RoomEvent.Reconnected, mine(() => this.resumed()))
      .on(RoomEvent.Disconnected, (reason) => {
        if (this.room === room && !this.done) this.disconnected(reason);
      });
  }

  agentJoined(participant) {
    clearTimeout(this.agentTimer);
    this.agentTimer = null;
    this.agentIdentity = participant.identity;
    this.agentState = participant.attributes[ATTRIBUTE_AGENT_STATE] || 'initializing';
    this.setPhase('live');
    this.emit('agent-state', { state: this.agentState });
  }

  resumed() {
    const agent = this.agentIdentity && this.room ? this.room.remoteParticipants.get(this.agentIdentity) : null;
    if (agent) {
      this.agentState = agent.attributes[ATTRIBUTE_AGENT_STATE] || this.agentState;
      this.setPhase('live');
      this.emit('agent-state', { state: this.agentState });
    } else {
      this.setPhase('waiting-agent');
    }
    this.emit('reconnected', {});
  }

  async agentTimedOut() {
    if (this.done || this.agentIdentity) return;
    const seconds = Math.round(this.cfg.agentTimeoutMs / 1000);
    await this.fail(new WidgetError(
      'agent-timeout',
      `The assistant did not join within ${seconds} seconds. Please try again in a moment.`,
    ));
  }

  async agentLeft() {
    const left = this.agentIdentity;
    this.agentIdentity = null;
    // A replacement may already be in the room (the newest agent wins).
    const other = this.room
      ? Array.from(this.room.remoteParticipants.values()).find((p) => p.kind === ParticipantKind.AGENT && p.identity !== left)
      : null;
    if (other) {
      this.agentJoined(other);
      return;
    }
    // An agent that leaves a live session was lost (a crash, a deploy): the backend
    // brings a new one into this room with the conversation so far. Wait for it.
    let status = '';
    try {
      status = (await this.api.agentStatus(this.sessionId)).status;
    } catch (_) {
      status = '';
    }
    if (this.done || this.agentIdentity) return;
    if (status && !AGENT_GONE_STATUSES.has(status)) {
      this.setPhase('agent-reconnecting');
      this.agentTimer = setTimeout(() => this.agentTimedOut(), this.cfg.agentTimeoutMs);
      return;
    }
    await this.finish('The assistant has left the conversation.');
  }

  async disconnected(reason) {
    const ended = ENDED_BY_SERVER.get(reason);
    if (ended) {
      await this.finish(ended);
      return;
    }
    await this.reconnect();
  }

  async reconnect() {
    const old = this.room;
    this.room = null;
    if (old) old.removeAllListeners();
    clearTimeout(this.agentTimer);
    this.agentIdentity = '';
    this.setPhase('rejoining');
    const name = this.cfg.participantName;
    for (const delay of REJOIN_DELAYS_MS) {
      await new Promise((resolve) => setTimeout(resolve, delay));
      if (this.done) return;
      let grant;
      try {
        grant = await this.api.widgetToken({
          session_id: this.sessionId,
          ...(name ? { participant_name: name } : {}),
        });
      } catch (err) {
        if (err.kind === 'server' && (err.status === 404 || err.status === 409)) {
          await this.finish('The conversation has ended.', { stop: false });
          return;
        }
        continue;
      }
      try {
        await this.connect(grant.livekit_url, grant.user_token);
        this.emit('reconnected', {});
        return;
      } catch (_) {
        if (this.done) return;
      }
    }
    await this.fail(new WidgetError(
      'connection-lost',
      'The connection was lost and could not be restored. Please try again.',
    ));
  }

  // ---------------------------------------------------------------- transcript

  speakerOf(identity, attributes) {
    const room = this.room;
    if (room && identity === room.localParticipant.identity) return { speaker: 'user', name: 'You' };
    let participant = room ? room.remoteParticipants.get(identity) : undefined;
    const trackId = attributes[ATTRIBUTE_TRACK_ID];
    if (!participant && room && trackId) {
      if (room.localParticipant.trackPublications.has(trackId)) return { speaker: 'user', name: 'You' };
      participant = Array.from(room.remoteParticipants.values()).find((p) => p.trackPublications.has(trackId));
    }
    if ((participant && participant.kind === ParticipantKind.AGENT) || identity === this.agentIdentity) {
      return { speaker: 'agent', name: this.cfg.agentName };
    }
    return { speaker: 'other', name: (participant && (participant.name || participant.identity)) || identity };
  }

  /**
   * Agents send one stream per segment: the agent's words as deltas in one
   * stream, a visitor's words as a new stream per interim result, each with
   * the whole text so far. Either way, a stream's accumulated text is that
   * segment's latest text; a final segment is never overwritten again.
   */
  async readTranscription(reader, identity) {
    const attrs = reader.info.attributes || {};
    const segmentId = attrs[ATTRIBUTE_SEGMENT_ID] || reader.info.id;
    const who = this.speakerOf(identity, attrs);
    let text = '';
    try {
      for await (const chunk of reader) {
        text += chunk;
        this.updateSegment(segmentId, who, text, false);
      }
    } catch (_) {
      // a stream cut off by a disconnect keeps what arrived
    }
    const final = (reader.info.attributes || {})[ATTRIBUTE_FINAL] === 'true';
    this.updateSegment(segmentId, who, text, final);
  }

  updateSegment(segmentId, who, text, final) {
    const known = this.segments.get(segmentId);
    if (known && known.final) return;
    const clean = text.trim();
    if (!clean && !known) return;
    const segment = { id: segmentId, ...who, text: clean, final };
    this.segments.set(segmentId, segment);
    this.emit('transcript', segment);
  }

  // ---------------------------------------------------------------- controls

  async setMuted(muted) {
    this.muted = muted;
    if (this.micTrack) {
      if (muted) await this.micTrack.mute();
      else await this.micTrack.unmute();
    }
    this.emit('muted', { muted });
  }

  async startAudio() {
    if (!this.room) return;
    await this.room.startAudio();
    this.emit('audio-blocked', { blocked: !this.room.canPlaybackAudio });
  }

  /** The visitor pressed End. */
  end() {
    return this.finish('Conversation ended.');
  }

  /** The page is going away: stop the session with a request that outlives it. */
  unload() {
    if (this.done) return;
    this.done = true;
    clearTimeout(this.agentTimer);
    if (this.sessionCreated && !this.cfg.join && this.sessionId) {
      this.api.stopSession(this.sessionId, { keepalive: true }).catch(() => {});
    }
    if (this.room) this.room.disconnect().catch(() => {});
  }

  async finish(message, { stop = true } = {}) {
    if (this.done) return;
    this.done = true;
    this.setPhase('ending');
    await this.cleanup({ stop });
    this.setPhase('ended', { message });
  }

  async fail(error) {
    if (this.done) return;
    this.done = true;
    await this.cleanup({ stop: true });
    this.setPhase('error', { error });
  }

  async cleanup({ stop }) {
    clearTimeout(this.agentTimer);
    this.agentTimer = null;
    const room = this.room;
    this.room = null;
    const stopping = stop && this.sessionCreated && !this.cfg.join && this.sessionId
      ? this.api.stopSession(this.sessionId).catch(() => null)
      : Promise.resolve(null);
    if (room) {
      await room.disconnect().catch(() => {});
      room.removeAllListeners();
    }
    if (this.micTrack) {
      this.micTrack.stop();
      this.micTrack = null;
    }
    this.audioHost.querySelectorAll('audio[data-agentconnect-audio]').forEach((el) => el.remove());
    await stopping;
  }
}
