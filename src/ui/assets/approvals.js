// The rampart approvals page. Every piece of data reaches the page through
// textContent or an attribute, never as markup: justifications and comments
// are written by agents and must stay text.
'use strict';

(function () {
  const API = '/ui/api';
  const TOKEN_KEY = 'rampart.token';

  const $ = (id) => document.getElementById(id);
  const state = {
    me: null,
    pending: new Map(), // id -> { data, li, receivedAt }
    grants: new Map(), // id -> { data, li, receivedAt }
    stream: null, // AbortController of the event stream
    retry: 1000,
  };

  // ---- talking to the API -------------------------------------------------

  function token() {
    return sessionStorage.getItem(TOKEN_KEY) || '';
  }

  class ApiError extends Error {
    constructor(status, code, message) {
      super(message);
      this.status = status;
      this.code = code;
    }
  }

  function headers(json) {
    const h = { 'X-Rampart-UI': '1', 'Accept': 'application/json' };
    const t = token();
    if (t) h['Authorization'] = 'Bearer ' + t;
    if (json) h['Content-Type'] = 'application/json';
    return h;
  }

  async function call(path, body) {
    const init = { headers: headers(body !== undefined), cache: 'no-store', credentials: 'same-origin' };
    if (body !== undefined) {
      init.method = 'POST';
      init.body = JSON.stringify(body);
    }
    let response;
    try {
      response = await fetch(API + path, init);
    } catch (e) {
      throw new ApiError(0, 'UNAVAILABLE', 'cannot reach rampart: ' + e.message);
    }
    let payload = null;
    try {
      payload = await response.json();
    } catch (e) {
      payload = null;
    }
    if (!response.ok) {
      const code = payload && payload.code ? payload.code : 'HTTP_' + response.status;
      const message = payload && payload.message ? payload.message : response.statusText;
      throw new ApiError(response.status, code, message);
    }
    return payload;
  }

  // ---- small helpers --------------------------------------------------------

  function fill(root, field, text) {
    const el = root.querySelector('[data-field="' + field + '"]');
    if (el) el.textContent = text;
    return el;
  }

  function duration(seconds) {
    seconds = Math.max(0, Math.floor(seconds));
    const d = Math.floor(seconds / 86400);
    const h = Math.floor((seconds % 86400) / 3600);
    const m = Math.floor((seconds % 3600) / 60);
    const s = seconds % 60;
    const parts = [];
    if (d) parts.push(d + 'd');
    if (h) parts.push(h + 'h');
    if (m) parts.push(m + 'm');
    if (s || parts.length === 0) parts.push(s + 's');
    return parts.slice(0, 2).join(' ');
  }

  function elapsed(entry) {
    return (Date.now() - entry.receivedAt) / 1000;
  }

  function announce(text) {
    $('announce').textContent = text;
  }

  function showError(text) {
    $('error').textContent = text || '';
  }

  function who(e) {
    return 'agent ' + e.agentId + ': ' + e.action + ' at ' + e.scope;
  }

  // ---- pending elevations -------------------------------------------------

  function badge(list, text, kind) {
    const li = document.createElement('li');
    li.className = 'badge ' + kind;
    li.textContent = text;
    list.appendChild(li);
  }

  /// The ticket, the approvals so far of the ones required, and what
  /// shadow auto-approve rules would have done: shown only when there.
  function renderPolicy(li, e) {
    const show = (name, text) => {
      const row = li.querySelector('[data-show="' + name + '"]');
      if (!row) return;
      row.hidden = !text;
      fill(li, name, text || '');
    };
    show('ticket', e.ticket);
    const required = e.requiredApprovals || 1;
    const approvals = e.approvals || [];
    show('approvals', required > 1 || approvals.length > 1
      ? approvals.length + ' of ' + required + ' distinct approvers' +
        (approvals.length ? ': ' + approvals.map((a) => a.by).join(', ') : '')
      : '');
    const r = e.request;
    show('exact', r ? r.method + ' ' + r.path + ' (SHA-256 ' + r.digest + ')' : '');
    show('body', r && r.bodyPreview ? r.bodyPreview : '');
    show('shadow', (e.shadow || []).map((v) =>
      'rule ' + v.rule + ' ' + v.outcome + ' (on behalf of ' + v.onBehalfOf + ')').join('; '));
  }

  function renderPending(e) {
    const existing = state.pending.get(e.id);
    if (existing) {
      // Keep what the approver is typing; only the numbers and the
      // approvals so far move.
      existing.data = e;
      existing.receivedAt = Date.now();
      renderPolicy(existing.li, e);
      tickPending(existing);
      return;
    }
    const li = $('elevation-card').content.firstElementChild.cloneNode(true);
    li.dataset.id = e.id;
    fill(li, 'agentId', e.agentId);
    fill(li, 'action', e.action);
    fill(li, 'principalId', e.principalId);
    fill(li, 'scope', e.scope);
    fill(li, 'plane', e.dataAction ? 'data plane' : 'control plane');
    fill(li, 'requested', duration(e.requestedDurationSeconds));
    fill(li, 'justification', e.justification);
    renderPolicy(li, e);
    const p = e.preview || {};
    fill(li, 'lends', p.lends || (e.action + ' at ' + e.scope));
    const n = p.resourcesUnderScope || 0;
    fill(li, 'resources', n === 1
      ? '1 resource of the snapshot lies under this scope.'
      : n + ' resources of the snapshot lie under this scope.');
    const badges = li.querySelector('[data-field="badges"]');
    if (p.assignsRoles) badge(badges, 'Assigns roles', 'danger');
    if (p.deletes) badge(badges, 'Deletes', 'danger');
    else if (p.effect === 'WRITE') badge(badges, 'Writes', 'warn');
    else if (p.effect === 'ACTION') badge(badges, 'Acts (…/action)', 'warn');
    if (p.effect === 'READ') badge(badges, 'Reads only', 'ok');
    if (e.dataAction) badge(badges, 'Data plane', 'info');

    const viewer = e.viewer || {};
    const rights = fill(li, 'rights', viewer.mayApprove
      ? 'You (' + state.me.principal + ') hold this operation here and may approve.'
      : 'You may not approve: ' + (viewer.approveRefusal || 'refused'));
    rights.classList.add(viewer.mayApprove ? 'may' : 'may-not');

    const label = who(e);
    const approve = li.querySelector('form.approve');
    if (viewer.mayApprove) {
      approve.hidden = false;
      const d = approve.elements.duration;
      d.placeholder = duration(e.requestedDurationSeconds);
      d.setAttribute('aria-label', 'Duration, at most ' + duration(e.requestedDurationSeconds) + ' (e.g. 10m); empty keeps the request');
      approve.elements.maxUses.setAttribute('aria-label', 'Max uses, 0 for unlimited');
      approve.elements.comment.setAttribute('aria-label', 'Approval comment');
      const bind = approve.querySelector('[data-show="bind"]');
      if (e.request) {
        bind.hidden = false;
        approve.elements.bindToRequest.checked = !e.readOnly;
      }
      approve.querySelector('button').setAttribute('aria-label', 'Approve ' + label);
      approve.addEventListener('submit', (ev) => {
        ev.preventDefault();
        decide(e.id, 'approve', approve, {
          duration: approve.elements.duration.value.trim() || null,
          maxUses: parseInt(approve.elements.maxUses.value || '0', 10) || 0,
          comment: approve.elements.comment.value,
          bindToRequest: e.request ? approve.elements.bindToRequest.checked : null,
        });
      });
    } else {
      approve.remove();
    }
    const deny = li.querySelector('form.deny');
    if (viewer.mayDeny) {
      deny.hidden = false;
      deny.elements.comment.setAttribute('aria-label', 'Denial comment');
      deny.querySelector('button').setAttribute('aria-label', 'Deny ' + label);
      deny.addEventListener('submit', (ev) => {
        ev.preventDefault();
        decide(e.id, 'deny', deny, { comment: deny.elements.comment.value });
      });
    } else {
      deny.remove();
    }
    const error = document.createElement('p');
    error.className = 'error';
    error.setAttribute('role', 'alert');
    error.dataset.field = 'error';
    li.querySelector('article').appendChild(error);

    const entry = { data: e, li: li, receivedAt: Date.now() };
    state.pending.set(e.id, entry);
    tickPending(entry);
    $('pending').appendChild(li);
    updateCounts();
  }

  function tickPending(entry) {
    const e = entry.data;
    const t = elapsed(entry);
    fill(entry.li, 'waiting', duration((e.waitingSeconds || 0) + t));
    fill(entry.li, 'waitLeft', duration((e.waitLeftSeconds || 0) - t));
  }

  /// Removes a card, moving focus on if it was inside.
  function removeCard(map, id, heading) {
    const entry = map.get(id);
    if (!entry) return;
    map.delete(id);
    const li = entry.li;
    const hadFocus = li.contains(document.activeElement);
    const next = li.nextElementSibling || li.previousElementSibling;
    li.remove();
    if (hadFocus) {
      const target = next ? next.querySelector('.card-title') : $(heading);
      target.focus();
    }
    updateCounts();
  }

  /// Marks a form busy without disabling its button: a disabled button
  /// loses keyboard focus, and the approver's place on the page with it.
  function busy(form, on) {
    form.dataset.busy = on ? '1' : '';
    form.querySelectorAll('button').forEach((b) => {
      if (on) b.setAttribute('aria-disabled', 'true');
      else b.removeAttribute('aria-disabled');
    });
  }

  async function decide(id, verb, form, body) {
    if (form.dataset.busy === '1') return;
    busy(form, true);
    const entry = state.pending.get(id);
    if (entry) fill(entry.li, 'error', '');
    try {
      const e = await call('/elevations/' + encodeURIComponent(id) + '/' + verb, body);
      if (e.state === 'PENDING') {
        // One approval of several: the card stays, without this
        // approver's form (an approver counts once).
        renderPending(e);
        if (entry) {
          const approve = entry.li.querySelector('form.approve');
          if (approve) approve.remove();
          fill(entry.li, 'rights', 'You approved; waiting for ' +
            ((e.requiredApprovals || 1) - (e.approvals || []).length) + ' more approver(s).');
          entry.li.querySelector('.card-title').focus();
        }
        announce('Approval recorded for ' + who(e) + ': ' + (e.approvals || []).length +
          ' of ' + (e.requiredApprovals || 1));
        return;
      }
      resolved(e);
    } catch (err) {
      busy(form, false);
      if (entry) fill(entry.li, 'error', err.code + ': ' + err.message);
      if (err.status === 401) signOut('The token was refused: ' + err.message);
    }
  }

  function resolved(e) {
    if (!state.pending.has(e.id) && $('history-rows').querySelector('[data-id="' + CSS.escape(e.id) + '"]')) {
      return; // already shown (the response and the event both tell us)
    }
    removeCard(state.pending, e.id, 'pending-title');
    addHistory(e, true);
    announce('Elevation for ' + who(e) + ' is ' + e.state + (e.resolvedBy ? ' by ' + e.resolvedBy : ''));
    if (e.state === 'APPROVED') loadGrants();
  }

  // ---- history --------------------------------------------------------------

  const COLUMNS = ['State', 'Agent', 'Operation', 'Scope', 'By', 'When', 'Comment'];

  function cell(row, text, className) {
    const td = document.createElement('td');
    td.textContent = text;
    td.dataset.label = COLUMNS[row.children.length] || '';
    if (className) td.className = className;
    row.appendChild(td);
    return td;
  }

  function addHistory(e, first) {
    const rows = $('history-rows');
    if (rows.querySelector('[data-id="' + CSS.escape(e.id) + '"]')) return;
    const tr = document.createElement('tr');
    tr.dataset.id = e.id;
    const st = cell(tr, e.state, 'state');
    st.classList.add('state-' + String(e.state).toLowerCase());
    cell(tr, e.agentId);
    const op = cell(tr, '');
    const code = document.createElement('code');
    code.textContent = e.action;
    op.appendChild(code);
    cell(tr, e.scope, 'scope');
    cell(tr, e.resolvedBy || '');
    const when = cell(tr, '');
    if (e.resolvedAt) {
      const time = document.createElement('time');
      time.dateTime = e.resolvedAt;
      time.textContent = new Date(e.resolvedAt).toLocaleString();
      time.title = e.resolvedAt;
      when.appendChild(time);
    }
    cell(tr, e.comment || '');
    if (first) rows.prepend(tr);
    else rows.appendChild(tr);
    $('history-empty').hidden = rows.children.length > 0;
    $('history').hidden = rows.children.length === 0;
  }

  async function loadHistory() {
    const list = await call('/elevations?state=resolved&limit=50');
    $('history-rows').replaceChildren();
    list.elevations.forEach((e) => addHistory(e, false));
    $('history-empty').hidden = list.elevations.length > 0;
    $('history').hidden = list.elevations.length === 0;
  }

  // ---- grants ---------------------------------------------------------------

  function renderGrant(g) {
    const li = $('grant-card').content.firstElementChild.cloneNode(true);
    li.dataset.id = g.id;
    fill(li, 'agentId', g.agentId);
    fill(li, 'action', g.action);
    fill(li, 'scope', g.scope);
    fill(li, 'onBehalfOf', [g.onBehalfOf].concat(g.coLenders || []).join(' and '));
    fill(li, 'uses', g.maxUses ? g.uses + ' of ' + g.maxUses : g.uses + ' (unlimited)');
    const form = li.querySelector('form.revoke');
    form.elements.comment.setAttribute('aria-label', 'Revocation comment');
    form.querySelector('button').setAttribute('aria-label', 'Revoke the grant of ' + who(g));
    const error = document.createElement('p');
    error.className = 'error';
    error.setAttribute('role', 'alert');
    error.dataset.field = 'error';
    li.querySelector('article').appendChild(error);
    form.addEventListener('submit', async (ev) => {
      ev.preventDefault();
      if (form.dataset.busy === '1') return;
      busy(form, true);
      fill(li, 'error', '');
      try {
        await call('/grants/' + encodeURIComponent(g.id) + '/revoke', { comment: form.elements.comment.value });
        removeCard(state.grants, g.id, 'grants-title');
        announce('Grant of ' + who(g) + ' revoked');
      } catch (err) {
        busy(form, false);
        fill(li, 'error', err.code + ': ' + err.message);
        if (err.status === 401) signOut('The token was refused: ' + err.message);
      }
    });
    const entry = { data: g, li: li, receivedAt: Date.now() };
    state.grants.set(g.id, entry);
    tickGrant(entry);
    $('grants').appendChild(li);
  }

  function tickGrant(entry) {
    const left = (entry.data.expiresInSeconds || 0) - elapsed(entry);
    fill(entry.li, 'expires', left > 0 ? duration(left) : 'ended');
  }

  async function loadGrants() {
    try {
      const list = await call('/grants');
      const focused = document.activeElement;
      const keep = new Set(list.grants.map((g) => g.id));
      for (const id of Array.from(state.grants.keys())) {
        if (!keep.has(id)) removeCard(state.grants, id, 'grants-title');
      }
      for (const g of list.grants) {
        if (!state.grants.has(g.id)) renderGrant(g);
      }
      if (focused && document.contains(focused)) focused.focus();
      updateCounts();
    } catch (err) {
      showError(err.code + ': ' + err.message);
    }
  }

  function updateCounts() {
    $('pending-count').textContent = String(state.pending.size);
    $('pending-empty').hidden = state.pending.size > 0;
    $('grants-count').textContent = String(state.grants.size);
    $('grants-empty').hidden = state.grants.size > 0;
  }

  // ---- the live stream ------------------------------------------------------

  function setConnection(text, ok) {
    const el = $('connection');
    el.textContent = text;
    el.classList.toggle('live', !!ok);
  }

  function handleFrame(frame) {
    let name = 'message';
    const data = [];
    for (const line of frame.split('\n')) {
      if (line.startsWith(':')) continue;
      const colon = line.indexOf(':');
      const field = colon < 0 ? line : line.slice(0, colon);
      const value = colon < 0 ? '' : line.slice(colon + 1).replace(/^ /, '');
      if (field === 'event') name = value;
      else if (field === 'data') data.push(value);
    }
    if (data.length === 0) return;
    const payload = JSON.parse(data.join('\n'));
    if (name === 'elevation') {
      if (payload.state === 'PENDING') renderPending(payload);
      else resolved(payload);
    } else if (name === 'ready') {
      setConnection('live', true);
      state.retry = 1000;
    } else if (name === 'resync') {
      throw new Error(payload.message || 'resync');
    }
  }

  async function connect() {
    if (state.stream) state.stream.abort();
    const controller = new AbortController();
    state.stream = controller;
    setConnection('connecting…', false);
    try {
      const response = await fetch(API + '/events', {
        headers: headers(false),
        cache: 'no-store',
        credentials: 'same-origin',
        signal: controller.signal,
      });
      if (response.status === 401) {
        let message = 'the token was refused';
        try { message = (await response.json()).message || message; } catch (e) { /* keep */ }
        signOut('Signed out: ' + message);
        return;
      }
      if (!response.ok || !response.body) throw new Error('HTTP ' + response.status);
      // Start from what the server lists now.
      for (const id of Array.from(state.pending.keys())) removeCard(state.pending, id, 'pending-title');
      const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
      let buffer = '';
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += value.replace(/\r\n?/g, '\n');
        let end;
        while ((end = buffer.indexOf('\n\n')) >= 0) {
          const frame = buffer.slice(0, end);
          buffer = buffer.slice(end + 2);
          handleFrame(frame);
        }
      }
      throw new Error('the stream ended');
    } catch (err) {
      if (controller.signal.aborted) return;
      setConnection('reconnecting…', false);
      const wait = state.retry;
      state.retry = Math.min(state.retry * 2, 30000);
      setTimeout(() => {
        if (state.stream === controller) {
          connect();
          loadHistory().catch(() => {});
          loadGrants();
        }
      }, wait);
    }
  }

  // ---- the freeze switch -----------------------------------------------------

  function showFreeze(f) {
    state.frozen = !!f.frozen;
    const since = f.sinceMs ? new Date(f.sinceMs).toISOString() : '';
    $('freeze-state').textContent = f.frozen
      ? 'FROZEN: every agent is denied (by ' + f.by + ' since ' + since + ': ' + f.reason + ')'
      : 'Agents are not frozen.';
    $('freeze').classList.toggle('frozen', !!f.frozen);
    $('freeze-button').textContent = f.frozen ? 'Unfreeze agents' : 'Freeze all agents';
    $('freeze-form').hidden = !(state.me && state.me.admin);
  }

  async function loadFreeze() {
    try {
      showFreeze(await call('/freeze'));
    } catch (err) {
      showError(err.code + ': ' + err.message);
    }
  }

  async function submitFreeze(ev) {
    ev.preventDefault();
    const reason = $('freeze-reason').value.trim();
    if (!reason) return;
    try {
      showFreeze(await call('/freeze', { frozen: !state.frozen, reason: reason }));
      $('freeze-reason').value = '';
      announce(state.frozen ? 'All agents are frozen.' : 'Agents are unfrozen.');
      loadGrants();
    } catch (err) {
      showError(err.code + ': ' + err.message);
    }
  }

  // ---- signing in and out ---------------------------------------------------

  function signOut(message) {
    sessionStorage.removeItem(TOKEN_KEY);
    if (state.stream) state.stream.abort();
    state.stream = null;
    state.me = null;
    state.pending.clear();
    state.grants.clear();
    $('pending').replaceChildren();
    $('grants').replaceChildren();
    $('history-rows').replaceChildren();
    $('freeze-form').hidden = true;
    $('freeze-state').textContent = '';
    $('app').hidden = true;
    $('sign-out').hidden = true;
    $('who').textContent = '';
    setConnection('', false);
    $('sign-in').hidden = false;
    $('sign-in-error').textContent = message || '';
    $('token').value = '';
    $('token').focus();
  }

  async function start() {
    let me;
    try {
      me = await call('/me');
    } catch (err) {
      if (err.status === 401 || err.status === 403) {
        signOut(token() ? 'The token was refused: ' + err.message : '');
      } else {
        $('sign-in').hidden = false;
        $('sign-in-error').textContent = err.code + ': ' + err.message;
      }
      return;
    }
    state.me = me;
    $('who').textContent = 'Signed in as ' + me.principal + (me.admin ? ' (admin)' : '');
    $('sign-in').hidden = true;
    $('sign-in-error').textContent = '';
    $('app').hidden = false;
    $('sign-out').hidden = !token();
    updateCounts();
    connect();
    loadFreeze();
    loadGrants();
    loadHistory().catch((err) => showError(err.code + ': ' + err.message));
    $('pending-title').focus();
  }

  function init() {
    $('token-form').addEventListener('submit', (ev) => {
      ev.preventDefault();
      const value = $('token').value.trim();
      if (!value) return;
      sessionStorage.setItem(TOKEN_KEY, value);
      $('token').value = '';
      start();
    });
    $('sign-out').addEventListener('click', () => signOut('Signed out.'));
    $('freeze-form').addEventListener('submit', submitFreeze);
    // The clocks on the page tick locally; the server is not asked.
    setInterval(() => {
      state.pending.forEach(tickPending);
      let ended = false;
      state.grants.forEach((g) => {
        tickGrant(g);
        if ((g.data.expiresInSeconds || 0) - elapsed(g) < -1) ended = true;
      });
      if (ended) loadGrants();
    }, 1000);
    start();
  }

  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', init);
  else init();
})();
