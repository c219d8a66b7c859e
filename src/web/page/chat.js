// pollchat's chat page script. The page has no protocol of its own: each
// line typed is sent as one WebSocket text frame, exactly as nc would send
// it (commands included), and each text frame from the server is one line.
'use strict';

const log = document.getElementById('log');
const jump = document.getElementById('jump');
const state = document.getElementById('state');
const form = document.getElementById('form');
const input = document.getElementById('input');

// ./ws next to the page, so a proxy that serves us under /chat/ also
// carries /chat/ws. Under https the browser only allows wss.
const url = (location.protocol === 'https:' ? 'wss:' : 'ws:') + '//' +
  location.host + location.pathname.replace(/[^/]*$/, '') + 'ws';

// Reconnect backoff: 0.5 s, doubling to 10 s; reset once connected.
const MIN_DELAY = 500;
const MAX_DELAY = 10000;
// The DOM keeps this many lines; older ones are dropped from the top.
const MAX_LINES = 1000;
// How many sent lines Up/Down can recall.
const MAX_HISTORY = 50;

let ws = null;
let delay = MIN_DELAY;
let retryAt = 0;      // when the next attempt is due (ms since epoch)
let retryTimer = 0;
let tick = 0;         // the "reconnecting in Ns" countdown
let quitting = false; // the user typed /quit: stay disconnected

// ----- the message list ----------------------------------------------------

// Near the bottom (a few px of rounding) counts as at the bottom.
function atBottom() {
  return log.scrollHeight - log.scrollTop - log.clientHeight < 8;
}

// Append one line. textContent, never innerHTML: whatever a line contains
// (`<img onerror=...>` included) shows as text and runs nothing.
function show(text, kind) {
  const stick = atBottom();
  const div = document.createElement('div');
  div.className = 'line ' + kind;
  // A chat line's `<name>` gets a span of its own, to style the name.
  const name = kind === 'chat' && /^<[^>]*>/.exec(text);
  if (name) {
    const span = document.createElement('span');
    span.className = 'name';
    span.textContent = name[0];
    div.append(span, text.slice(name[0].length)); // a string becomes a Text node
  } else {
    div.textContent = text;
  }
  log.appendChild(div);
  while (log.childElementCount > MAX_LINES) log.firstElementChild.remove();
  // Follow new lines only if the reader was already at the bottom; someone
  // scrolled up to read keeps their place and gets a button instead.
  if (stick) log.scrollTop = log.scrollHeight;
  else jump.hidden = false;
}

// The style comes from the line's first characters, as the server writes
// them: `* ` notices, `! ` errors, `<name> ` chat.
function kindOf(line) {
  if (line.startsWith('* ')) return 'notice';
  if (line.startsWith('! ')) return 'error';
  if (line.startsWith('<')) return 'chat';
  return 'other';
}

log.addEventListener('scroll', () => { if (atBottom()) jump.hidden = true; });
jump.addEventListener('click', () => {
  log.scrollTop = log.scrollHeight;
  jump.hidden = true;
});

// ----- the connection ------------------------------------------------------

function setState(name, text) {
  state.className = 'state ' + name;
  state.textContent = text || name;
}

function connect() {
  clearTimeout(retryTimer);
  clearInterval(tick);
  quitting = false;
  setState('connecting', 'connecting…');
  const sock = new WebSocket(url);
  ws = sock;
  sock.onopen = () => {
    delay = MIN_DELAY;
    setState('connected');
  };
  sock.onmessage = (e) => {
    if (typeof e.data === 'string') show(e.data, kindOf(e.data));
  };
  // A failed attempt fires error then close; close alone does the work.
  sock.onclose = (e) => {
    if (ws !== sock) return; // an old socket, already replaced
    ws = null;
    // A normal close (1000, e.g. after /quit) is news; any other is an error.
    if (e.reason && e.code === 1000) show('* closed: ' + e.reason, 'notice');
    else if (e.reason) show('! closed: ' + e.reason, 'error');
    if (quitting) setState('disconnected', 'disconnected (tap to rejoin)');
    else retry();
  };
}

// Wait a random time between half and all of `delay` ("jitter", so a
// restarted server is not hit by every page in the same millisecond),
// then double `delay` for next time.
function retry() {
  const wait = delay / 2 + Math.random() * delay / 2;
  delay = Math.min(delay * 2, MAX_DELAY);
  retryAt = Date.now() + wait;
  retryTimer = setTimeout(connect, wait);
  countdown();
  tick = setInterval(countdown, 250);
}

function countdown() {
  const secs = Math.max(0, Math.ceil((retryAt - Date.now()) / 1000));
  setState('reconnecting', 'reconnecting in ' + secs + 's');
}

// Tapping the state while not connected tries again at once.
state.addEventListener('click', () => {
  if (!ws) {
    delay = MIN_DELAY;
    connect();
  }
});

// A phone back on the network need not wait out the backoff.
window.addEventListener('online', () => {
  if (!ws && !quitting) {
    delay = MIN_DELAY;
    connect();
  }
});

// ----- the input -----------------------------------------------------------

const sent = [];
let recall = 0; // index into `sent` while Up/Down browse it

form.addEventListener('submit', (e) => {
  e.preventDefault();
  const line = input.value;
  if (line === '') return;
  if (!ws || ws.readyState !== WebSocket.OPEN) {
    show('! not connected; your line is still in the box', 'error');
    return;
  }
  ws.send(line);
  if (/^\/quit(\s|$)/i.test(line)) quitting = true;
  // The server does not echo our own lines, so show them here as sent.
  show(line, 'own');
  if (sent[sent.length - 1] !== line) sent.push(line);
  if (sent.length > MAX_HISTORY) sent.shift();
  recall = sent.length;
  input.value = '';
  log.scrollTop = log.scrollHeight; // sending always returns to the bottom
  jump.hidden = true;
});

input.addEventListener('keydown', (e) => {
  if (e.key === 'ArrowUp' && recall > 0) {
    recall -= 1;
  } else if (e.key === 'ArrowDown' && recall < sent.length) {
    recall += 1;
  } else {
    return;
  }
  e.preventDefault();
  input.value = sent[recall] || '';
});

connect();
