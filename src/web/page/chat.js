// pollchat's chat page script (placeholder until the real page lands).
const log = document.getElementById('log');
const ws = new WebSocket((location.protocol === 'https:' ? 'wss:' : 'ws:') + '//' + location.host + '/ws');
ws.onmessage = (e) => { const d = document.createElement('div'); d.textContent = e.data; log.appendChild(d); };
ws.onopen = () => { document.getElementById('state').textContent = 'connected'; };
document.getElementById('form').onsubmit = (e) => { e.preventDefault(); const i = document.getElementById('input'); ws.send(i.value); i.value = ''; };
