// The bffgate demo app. It knows only what GET /auth/session tells it; tabs stay in step
// through a BroadcastChannel; a 401 anywhere shows the sign-in form and keeps what was typed.

import { call, SignedOut, Unavailable, Failed } from './api.js';

const $ = (id) => document.getElementById(id);
const channel = 'BroadcastChannel' in window ? new BroadcastChannel('bffgate-session') : null;

let session = null; // { user, session } from /auth/session
let clock = null; // EventSource of the live clock

function show(view) {
  for (const id of ['loading-view', 'login-view', 'app-view']) $(id).hidden = id !== view;
  $('whoami').hidden = view !== 'app-view';
}

function banner(text) {
  $('banner').textContent = text || '';
  $('banner').hidden = !text;
}

function stopClock() {
  if (clock) clock.close();
  clock = null;
  $('clock-toggle').textContent = 'Start live clock';
  $('clock-output').textContent = '';
}

/** The session is over: show the sign-in form; the rest of the page keeps its state. */
function signedOut(message) {
  session = null;
  stopClock();
  show('login-view');
  const error = $('login-error');
  error.textContent = message || '';
  error.hidden = !message;
  (($('email').value && $('password')) || $('email')).focus();
}

/** Runs an action; maps the gateway's answers to what the user sees. */
async function guarded(action) {
  try {
    const result = await action();
    banner('');
    return result;
  } catch (e) {
    if (e instanceof SignedOut) {
      signedOut('Your session has ended. Sign in again to continue.');
    } else if (e instanceof Unavailable) {
      banner(e.message + (e.retryAfter ? ` Retrying is safe in ${e.retryAfter} s.` : ''));
    } else {
      banner(e.message);
    }
    return undefined;
  }
}

function until(iso, past = 'now') {
  const ms = Date.parse(iso) - Date.now();
  if (!(ms > 0)) return past;
  const s = Math.floor(ms / 1000);
  const d = Math.floor(s / 86400);
  const h = Math.floor((s % 86400) / 3600);
  const m = Math.floor((s % 3600) / 60);
  const sec = s % 60;
  if (d > 0) return `in ${d} d ${h} h`;
  if (h > 0) return `in ${h} h ${m} min`;
  if (m > 0) return `in ${m} min ${sec} s`;
  return `in ${sec} s`;
}

function tick() {
  if (!session) return;
  const s = session.session;
  $('access-countdown').textContent = until(s.access_expires_at, 'with the next request');
  $('idle-countdown').textContent = until(s.idle_expires_at);
  $('max-countdown').textContent = until(s.max_expires_at);
}

function render() {
  const { user } = session;
  $('whoami-email').textContent = user.email;
  $('user-email').textContent = user.email;
  $('user-roles').textContent = user.roles.length ? user.roles.join(', ') : '—';
  tick();
  show('app-view');
}

/** After activity: the gateway may have renewed the tokens, so ask for the new expiry times. */
async function refreshFacts() {
  const data = await guarded(() => call('/auth/session'));
  if (!data) return;
  session = data;
  tick();
}

/** Asks the gateway who is signed in (it refreshes the tokens when due). */
async function loadSession() {
  const data = await guarded(() => call('/auth/session'));
  if (!data) return false;
  session = data;
  render();
  await Promise.all([loadSessions(), loadNotes()]);
  return true;
}

function device(ua) {
  if (!ua) return 'Unknown device';
  const browser = /Edg\//.test(ua) ? 'Edge'
    : /Chrome\//.test(ua) ? 'Chrome'
    : /Firefox\//.test(ua) ? 'Firefox'
    : /Safari\//.test(ua) ? 'Safari'
    : /curl\//.test(ua) ? 'curl' : 'Browser';
  const os = /Windows/.test(ua) ? 'Windows'
    : /Android/.test(ua) ? 'Android'
    : /iPhone|iPad/.test(ua) ? 'iOS'
    : /Mac OS X/.test(ua) ? 'macOS'
    : /Linux/.test(ua) ? 'Linux' : '';
  return os ? `${browser} on ${os}` : browser;
}

function when(iso) {
  return new Date(iso).toLocaleString();
}

async function loadSessions() {
  const list = await guarded(() => call('/auth/sessions'));
  if (!list) return;
  const body = $('sessions-body');
  body.replaceChildren();
  for (const s of list) {
    const row = document.createElement('tr');
    row.dataset.session = s.id;
    const name = document.createElement('td');
    name.textContent = device(s.user_agent);
    if (s.current) {
      const badge = document.createElement('span');
      badge.className = 'badge';
      badge.textContent = 'This device';
      name.append(badge);
    }
    const cells = [s.ip, when(s.last_used_at), when(s.created_at)].map((text) => {
      const td = document.createElement('td');
      td.textContent = text;
      return td;
    });
    const action = document.createElement('td');
    const revoke = document.createElement('button');
    revoke.type = 'button';
    revoke.className = 'small danger revoke';
    revoke.textContent = 'Revoke';
    revoke.addEventListener('click', () => revokeSession(s.id, s.current));
    action.append(revoke);
    row.append(name, ...cells, action);
    body.append(row);
  }
}

async function revokeSession(id, current) {
  const done = await guarded(() => call(`/auth/sessions/${encodeURIComponent(id)}`, { method: 'DELETE' }).then(() => true));
  if (!done) return;
  if (current) {
    channel?.postMessage({ type: 'logout' });
    signedOut('This session was revoked.');
  } else {
    await loadSessions();
  }
}

async function loadNotes() {
  const notes = await guarded(() => call('/api/notes'));
  if (!notes) return;
  const list = $('notes');
  list.replaceChildren(...notes.map((n) => {
    const li = document.createElement('li');
    li.textContent = n.text;
    return li;
  }));
}

async function signIn(event) {
  event.preventDefault();
  const email = $('email').value.trim();
  const password = $('password').value;
  const error = $('login-error');
  error.hidden = true;
  if (!email || !password) {
    error.textContent = 'Enter your email and password.';
    error.hidden = false;
    return;
  }
  $('login-submit').disabled = true;
  try {
    await call('/auth/login', { method: 'POST', body: { email, password }, allow401: true });
    $('password').value = '';
    channel?.postMessage({ type: 'login' });
    await loadSession();
  } catch (e) {
    error.textContent = e instanceof Failed && e.status === 429
      ? `Too many attempts. Try again in ${e.retryAfter ?? 'a few'} seconds.`
      : e instanceof Unavailable ? e.message
      : e instanceof Failed && e.status === 401 ? 'Wrong email or password.'
      : e instanceof Failed ? e.message
      : 'Sign-in failed.';
    error.hidden = false;
  } finally {
    $('login-submit').disabled = false;
  }
}

async function signOut(path) {
  const done = await guarded(() => call(path, { method: 'POST' }).then(() => true));
  if (!done) return;
  channel?.postMessage({ type: 'logout' });
  signedOut();
}

function toggleClock() {
  if (clock) {
    stopClock();
    return;
  }
  clock = new EventSource('/api/clock');
  $('clock-toggle').textContent = 'Stop live clock';
  clock.onmessage = (event) => {
    const data = JSON.parse(event.data);
    $('clock-output').textContent = `Server time ${new Date(data.now).toLocaleTimeString()} for ${data.user}`;
  };
  clock.onerror = () => {
    stopClock();
    loadSession();
  };
}

function wire() {
  $('login-form').addEventListener('submit', signIn);
  $('logout').addEventListener('click', () => signOut('/auth/logout'));
  $('logout-all').addEventListener('click', () => signOut('/auth/logout-all'));
  $('call-me').addEventListener('click', async () => {
    const me = await guarded(() => call('/api/me'));
    if (!me) return;
    $('api-output').textContent = JSON.stringify(me, null, 2);
    await refreshFacts();
  });
  $('clock-toggle').addEventListener('click', toggleClock);
  $('note-form').addEventListener('submit', async (event) => {
    event.preventDefault();
    const text = $('note-text').value.trim();
    if (!text) return;
    const note = await guarded(() => call('/api/notes', { method: 'POST', body: { text } }));
    if (note) {
      $('note-text').value = '';
      await Promise.all([loadNotes(), refreshFacts()]);
    }
  });
  channel?.addEventListener('message', (event) => {
    if (event.data?.type === 'logout') signedOut();
    if (event.data?.type === 'login') loadSession();
  });
  setInterval(tick, 1000);
}

/** What a failed sign-in through an identity provider (`?login_error=<code>`) tells the user. */
const providerErrors = {
  access_denied: 'Sign-in was cancelled at the identity provider.',
  provider_unavailable: 'The identity provider cannot be reached right now. Try again later.',
  account_refused: 'This account may not sign in here. Ask your administrator.',
  unavailable: 'The service is temporarily unavailable. Try again in a moment.',
  throttled: 'Too many sign-in attempts from this address. Wait a moment and try again.',
};

/** The sign-in error the gateway sent this page to show, removed from the address bar. */
function takeLoginError() {
  const params = new URLSearchParams(window.location.search);
  const code = params.get('login_error');
  if (!code) return '';
  params.delete('login_error');
  const query = params.toString();
  window.history.replaceState(null, '', window.location.pathname + (query ? `?${query}` : '') + window.location.hash);
  return providerErrors[code] || 'Sign-in through the identity provider did not complete. Please try again.';
}

/** One "Sign in with …" link per identity provider the gateway offers. */
async function loadProviders() {
  let providers;
  try {
    providers = await call('/auth/providers');
  } catch {
    return;
  }
  const box = $('providers');
  box.querySelectorAll('a.provider').forEach((a) => a.remove());
  const returnTo = window.location.pathname + window.location.search;
  for (const p of providers) {
    const link = document.createElement('a');
    link.className = 'provider';
    link.dataset.provider = p.id;
    link.href = `/auth/oidc/${encodeURIComponent(p.id)}/start?return_to=${encodeURIComponent(returnTo)}`;
    link.textContent = `Sign in with ${p.name}`;
    box.append(link);
  }
  box.hidden = providers.length === 0;
}

/** First load: signed in already, or the sign-in form (with a provider's error, if any). */
async function start() {
  wire();
  const loginError = takeLoginError();
  loadProviders();
  try {
    session = await call('/auth/session');
    render();
    await Promise.all([loadSessions(), loadNotes()]);
  } catch (e) {
    signedOut(loginError || (e instanceof SignedOut ? '' : e.message));
  }
}

start();
