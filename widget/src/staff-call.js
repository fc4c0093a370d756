// The staff call page (sessions/templates/sessions/staff_call.html): join a visitor's
// room with a staff token, speak and hear, follow the transcript, end the call.
import { Room, RoomEvent, Track } from 'livekit-client';

const urls = JSON.parse(document.getElementById('staff-call-urls').textContent);
const state = document.getElementById('call-state');
const joinButton = document.getElementById('join');
const endButton = document.getElementById('end');
const transcript = document.getElementById('transcript');
let room = null;

function csrfToken() {
  const match = document.cookie.match(/(?:^|;\s*)csrftoken=([^;]+)/);
  return match ? decodeURIComponent(match[1]) : '';
}

function setState(name, label) {
  state.dataset.state = name;
  state.textContent = label;
}

async function post(url) {
  const res = await fetch(url, {
    method: 'POST',
    credentials: 'same-origin',
    headers: { 'X-CSRFToken': csrfToken(), Accept: 'application/json' },
  });
  const body = await res.json().catch(() => ({}));
  if (!res.ok) throw new Error(body?.error?.message || `HTTP ${res.status}`);
  return body;
}

async function join() {
  joinButton.disabled = true;
  setState('connecting', 'connecting…');
  try {
    const grant = await post(urls.join);
    room = new Room();
    room.on(RoomEvent.TrackSubscribed, (track) => {
      if (track.kind === Track.Kind.Audio) document.body.appendChild(track.attach());
    });
    room.on(RoomEvent.Disconnected, () => setState('ended', 'call ended'));
    await room.connect(grant.livekit_url, grant.token);
    await room.localParticipant.setMicrophoneEnabled(true);
    window.agentconnectStaffCall = { room, identity: grant.identity };
    endButton.disabled = false;
    setState('connected', 'connected to the visitor');
  } catch (err) {
    joinButton.disabled = false;
    setState('error', `could not join: ${err.message}`);
  }
}

async function end() {
  endButton.disabled = true;
  try {
    await post(urls.end);
  } finally {
    if (room) await room.disconnect();
    setState('ended', 'call ended');
  }
}

async function refresh() {
  try {
    const res = await fetch(urls.detail, { credentials: 'same-origin' });
    if (!res.ok) return;
    const session = await res.json();
    transcript.replaceChildren(...session.turns.map((t) => {
      const li = document.createElement('li');
      li.dataset.role = t.role;
      li.dataset.speaker = t.speaker_identity;
      const who = document.createElement('strong');
      who.textContent = `${t.speaker_name || t.role}: `;
      li.append(who, t.text);
      return li;
    }));
    document.getElementById('reason').textContent = session.reason || '—';
  } catch (e) {
    // the next refresh tries again
  }
}

joinButton.addEventListener('click', join);
endButton.addEventListener('click', end);
setInterval(refresh, 1500);
