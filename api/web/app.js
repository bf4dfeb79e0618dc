// The approver page's one script. It shows each <time> in the browser's
// time zone (the server wrote UTC), keeps "2 min ago" current (by the
// server's clock), submits the session filter on change, plays terminal
// recordings in the session view, and reloads the approvals page when a
// request arrives or changes, unless the approver is typing a reason or
// submitting a decision (whose own page load shows the result).
(function () {
  'use strict';
  function pad(n) { return (n < 10 ? '0' : '') + n; }
  // local matches the server's UTC layout (webview.go utcLayout).
  function local(d) {
    return d.getFullYear() + '-' + pad(d.getMonth() + 1) + '-' + pad(d.getDate()) + ' ' +
      pad(d.getHours()) + ':' + pad(d.getMinutes()) + ':' + pad(d.getSeconds());
  }
  // rel is webview.go's relative: ms is the time minus now.
  function rel(ms) {
    var d = Math.abs(ms), s;
    if (d < 60e3) { s = Math.floor(d / 1e3) + ' s'; }
    else if (d < 3600e3) { s = Math.floor(d / 60e3) + ' min'; }
    else if (d < 86400e3) { s = Math.floor(d / 3600e3) + ' h'; }
    else { s = Math.floor(d / 86400e3) + ' d'; }
    return ms > 0 ? 'in ' + s : s + ' ago';
  }
  function zone() {
    var off = -new Date().getTimezoneOffset(), sign = off < 0 ? '-' : '+', name = '';
    off = Math.abs(off);
    try { name = Intl.DateTimeFormat().resolvedOptions().timeZone || ''; } catch (e) { name = ''; }
    return (name ? name + ', ' : '') + 'UTC' + sign + pad(Math.floor(off / 60)) + ':' + pad(off % 60);
  }
  // skew is how far the browser's clock is ahead of the server's (as the
  // page was rendered), so "ago" is right on a machine whose clock is off.
  var skew = Date.now() - Date.parse(document.body.getAttribute('data-now') || '');
  if (isNaN(skew)) { skew = 0; }
  function agos() {
    var now = Date.now() - skew;
    document.querySelectorAll('.ago[data-t]').forEach(function (el) {
      var t = Date.parse(el.getAttribute('data-t'));
      if (!isNaN(t)) { el.textContent = rel(t - now); }
    });
  }
  document.querySelectorAll('time[datetime]').forEach(function (el) {
    var d = new Date(el.getAttribute('datetime'));
    if (!isNaN(d.getTime())) { el.textContent = local(d); }
  });
  var tz = document.getElementById('tz');
  if (tz) { tz.textContent = 'Times are local (' + zone() + ').'; }
  agos();
  setInterval(agos, 5000);

  var filter = document.getElementById('filter');
  if (filter) {
    filter.addEventListener('change', function () { filter.submit(); });
  }

  // The terminal player. A "play" button by a .cast link fetches the
  // asciicast v2 recording and plays it in a <pre> on a row under it, with
  // its timing (idle gaps capped), pause and speed.

  // term is a screen that understands the VT100/xterm subset shell output
  // uses: CR, LF, BS, TAB, cursor moves (CSI A B C D E F G H d f), erase
  // (J K X), insert and delete (@ P L M), scroll regions, the alternate
  // screen, cursor visibility and SGR colours as classes. Other sequences
  // (OSC titles, charsets, other modes) are dropped.
  function term(cols, rows) {
    var t = {cols: cols, rows: rows, x: 0, y: 0, top: 0, bot: rows - 1, cls: '', shown: true,
      lines: screen(cols, rows), state: '', args: '', saved: [0, 0], main: null};
    var fg = -1, bg = -1, bold = false, inv = false;
    function blank(n) { var l = []; while (l.length < n) { l.push([' ', '']); } return l; }
    function screen(c, r) { var s = []; while (s.length < r) { s.push(blank(c)); } return s; }
    // scroll moves the scroll region's lines up by n (down when n < 0).
    function scroll(n) {
      for (; n > 0; n--) { t.lines.splice(t.top, 1); t.lines.splice(t.bot, 0, blank(t.cols)); }
      for (; n < 0; n++) { t.lines.splice(t.bot, 1); t.lines.splice(t.top, 0, blank(t.cols)); }
    }
    function lf() { if (t.y === t.bot) { scroll(1); } else if (t.y < t.rows - 1) { t.y++; } }
    function erase(y, from, to) { for (var x = Math.max(0, from); x < to && x < t.cols; x++) { t.lines[y][x] = [' ', '']; } }
    function put(ch) {
      if (t.x >= t.cols) { t.x = 0; lf(); } // the wrap xterm defers to the next character
      t.lines[t.y][t.x++] = [ch, t.cls];
    }
    function sgr(ps) {
      for (var k = 0; k < ps.length; k++) {
        var p = ps[k];
        if (p === 0) { fg = bg = -1; bold = inv = false; }
        else if (p === 1 || p === 22) { bold = p === 1; }
        else if (p === 7 || p === 27) { inv = p === 7; }
        else if (p >= 30 && p <= 37) { fg = p - 30; }
        else if (p >= 90 && p <= 97) { fg = p - 90; }
        else if (p === 39) { fg = -1; }
        else if (p >= 40 && p <= 47) { bg = p - 40; }
        else if (p >= 100 && p <= 107) { bg = p - 100; }
        else if (p === 49) { bg = -1; }
        else if (p === 38 || p === 48) { // 5;n (the first 16 kept) or 2;r;g;b (dropped)
          var c = ps[k + 1] === 5 && ps[k + 2] < 16 ? ps[k + 2] % 8 : -1;
          k += ps[k + 1] === 5 ? 2 : 4;
          if (p === 38) { fg = c; } else { bg = c; }
        }
      }
      t.cls = [fg >= 0 ? 'f' + fg : '', bg >= 0 ? 'b' + bg : '', bold ? 'bold' : '', inv ? 'inv' : '']
        .filter(Boolean).join(' ');
    }
    function mode(p, on) {
      if (p === 25) { t.shown = on; }
      if (p !== 47 && p !== 1047 && p !== 1049) { return; }
      if (on && !t.main) { t.main = {lines: t.lines, x: t.x, y: t.y}; t.lines = screen(t.cols, t.rows); }
      if (!on && t.main) { t.lines = t.main.lines; t.x = Math.min(t.main.x, t.cols - 1); t.y = t.main.y; t.main = null; }
    }
    function csi(f) {
      var priv = /^[?>=<]/.test(t.args) ? t.args.charAt(0) : '', y;
      var ps = t.args.slice(priv ? 1 : 0).split(';').map(function (a) { return parseInt(a, 10) || 0; });
      // A count past the screen does no more than the screen's size.
      var n = Math.min(Math.max(1, ps[0]), Math.max(t.cols, t.rows)), line = t.lines[t.y];
      if (priv) {
        if (priv === '?' && (f === 'h' || f === 'l')) { ps.forEach(function (p) { mode(p, f === 'h'); }); }
        return;
      }
      if (f === 'm') { sgr(ps); return; }
      if ('ABCDEFG`dHfJKX@PLMSTrsu'.indexOf(f) < 0) { return; }
      t.x = Math.min(t.x, t.cols - 1); // ends a deferred wrap
      switch (f) {
        case 'A': t.y -= n; break;
        case 'B': t.y += n; break;
        case 'C': t.x += n; break;
        case 'D': t.x -= n; break;
        case 'E': t.x = 0; t.y += n; break;
        case 'F': t.x = 0; t.y -= n; break;
        case 'G': case '`': t.x = n - 1; break;
        case 'd': t.y = n - 1; break;
        case 'H': case 'f': t.y = n - 1; t.x = Math.max(1, ps[1] || 0) - 1; break;
        case 'J':
          if (ps[0] === 0) { erase(t.y, t.x, t.cols); for (y = t.y + 1; y < t.rows; y++) { erase(y, 0, t.cols); } }
          else if (ps[0] === 1) { erase(t.y, 0, t.x + 1); for (y = 0; y < t.y; y++) { erase(y, 0, t.cols); } }
          else { for (y = 0; y < t.rows; y++) { erase(y, 0, t.cols); } }
          break;
        case 'K': erase(t.y, ps[0] === 0 ? t.x : 0, ps[0] === 1 ? t.x + 1 : t.cols); break;
        case 'X': erase(t.y, t.x, t.x + n); break;
        case '@': line.splice.apply(line, [t.x, 0].concat(blank(n))); line.length = t.cols; break;
        case 'P': line.splice(t.x, n); line.push.apply(line, blank(t.cols - line.length)); break;
        case 'L': case 'M':
          if (t.y < t.top || t.y > t.bot) { break; }
          for (y = Math.min(n, t.bot - t.y + 1); y > 0; y--) {
            if (f === 'L') { t.lines.splice(t.bot, 1); t.lines.splice(t.y, 0, blank(t.cols)); }
            else { t.lines.splice(t.y, 1); t.lines.splice(t.bot, 0, blank(t.cols)); }
          }
          break;
        case 'S': scroll(n); break;
        case 'T': scroll(-n); break;
        case 'r':
          t.top = Math.max(1, ps[0]) - 1; t.bot = (ps[1] || t.rows) - 1;
          if (t.bot >= t.rows || t.top >= t.bot) { t.top = 0; t.bot = t.rows - 1; }
          t.x = t.y = 0;
          break;
        case 's': t.saved = [t.x, t.y]; break;
        case 'u': t.x = t.saved[0]; t.y = t.saved[1]; break;
      }
      t.x = Math.max(0, Math.min(t.x, t.cols - 1));
      t.y = Math.max(0, Math.min(t.y, t.rows - 1));
    }
    function esc(c) {
      t.state = '';
      if (c === '[') { t.state = 'csi'; t.args = ''; }
      else if (']P_^X'.indexOf(c) >= 0) { t.state = 'str'; } // OSC, DCS...: up to BEL or ST
      else if ('()*+#%'.indexOf(c) >= 0) { t.state = 'skip'; } // charsets: one more byte
      else if (c === '7') { t.saved = [t.x, t.y]; }
      else if (c === '8') { t.x = Math.min(t.saved[0], t.cols - 1); t.y = Math.min(t.saved[1], t.rows - 1); }
      else if (c === 'D') { lf(); }
      else if (c === 'E') { t.x = 0; lf(); }
      else if (c === 'M') { if (t.y === t.top) { scroll(-1); } else if (t.y > 0) { t.y--; } }
      else if (c === 'c') { t.lines = screen(t.cols, t.rows); t.x = t.y = t.top = 0; t.bot = t.rows - 1; t.main = null; sgr([0]); }
    }
    // write interprets terminal output.
    t.write = function (s) {
      for (var k = 0; k < s.length; k++) {
        var c = s.charAt(k), code = s.charCodeAt(k);
        if (code >= 0xd800 && code < 0xdc00) { c = s.slice(k, k + 2); k++; } // one cell for a surrogate pair
        if (t.state === 'esc') { esc(c); continue; }
        if (t.state === 'csi') {
          if (code >= 0x40 && code <= 0x7e) { t.state = ''; csi(c); }
          else if (code < 0x20 || t.args.length > 64) { t.state = ''; }
          else { t.args += c; }
          continue;
        }
        if (t.state === 'str') { t.state = c === '\x07' ? '' : c === '\x1b' ? 'st' : 'str'; continue; }
        if (t.state === 'st' || t.state === 'skip') { t.state = ''; continue; }
        if (c === '\x1b') { t.state = 'esc'; }
        else if (c === '\r') { t.x = 0; }
        else if (c === '\n' || c === '\v' || c === '\f') { lf(); }
        else if (c === '\b') { t.x = Math.max(0, Math.min(t.x, t.cols - 1) - 1); }
        else if (c === '\t') { t.x = Math.min(t.cols - 1, (Math.floor(t.x / 8) + 1) * 8); }
        else if (code >= 0x20 && code !== 0x7f && (code < 0x80 || code >= 0xa0)) { put(c); }
      }
    };
    // resize keeps the lines around the cursor (the bottom ones when the
    // screen gets shorter) and pads or cuts them to the new width.
    t.resize = function (c, r) {
      function fit(s, y) {
        var drop = Math.max(0, y - (r - 1));
        s.splice(0, drop);
        s.length = Math.min(s.length, r);
        s.forEach(function (l) { l.length = Math.min(l.length, c); l.push.apply(l, blank(c - l.length)); });
        while (s.length < r) { s.push(blank(c)); }
        return y - drop;
      }
      t.y = fit(t.lines, t.y);
      if (t.main) { t.main.y = fit(t.main.lines, t.main.y); }
      t.cols = c; t.rows = r; t.top = 0; t.bot = r - 1;
      t.x = Math.min(t.x, c - 1);
    };
    // render draws the screen into pre: runs of one class are a span.
    t.render = function (pre) {
      var f = document.createDocumentFragment();
      t.lines.forEach(function (line, y) {
        var run = '', cls = '';
        function flush() {
          if (!run) { return; }
          var n = cls ? document.createElement('span') : document.createTextNode(run);
          if (cls) { n.className = cls; n.textContent = run; }
          f.appendChild(n);
          run = '';
        }
        line.forEach(function (cell, x) {
          var c = t.shown && y === t.y && x === Math.min(t.x, t.cols - 1) ? (cell[1] + ' cur').trim() : cell[1];
          if (c !== cls) { flush(); cls = c; }
          run += cell[0];
        });
        flush();
        if (y < t.lines.length - 1) { f.appendChild(document.createTextNode('\n')); }
      });
      pre.replaceChildren(f);
      pre.setAttribute('data-cols', t.cols);
      pre.setAttribute('data-rows', t.rows);
    };
    return t;
  }

  // idleCap is the longest pause played, in seconds, unless the recording
  // sets its own (idle_time_limit).
  var idleCap = 2;
  function size(v, d, max) { v = Math.floor(Number(v)); return v > 0 ? Math.min(v, max) : d; }
  function mmss(s) { return Math.floor(s / 60) + ':' + pad(Math.floor(s % 60)); }

  // play fetches the recording of button b and plays it on a row under
  // b's (a second click starts over). The row's data-state says
  // loading, playing, paused, ended or error.
  function play(b) {
    var tr = b.closest('tr'), next = tr.nextElementSibling;
    if (next && next.classList.contains('player')) { next.remove(); }
    var row = document.createElement('tr'), td = document.createElement('td');
    var bar = document.createElement('div'), pre = document.createElement('pre');
    var pause = document.createElement('button'), skip = document.createElement('button');
    var speed = document.createElement('select'), status = document.createElement('span');
    row.className = 'player'; td.colSpan = tr.cells.length; bar.className = 'controls'; pre.className = 'term';
    pause.type = skip.type = 'button'; pause.className = 'pause'; skip.className = 'skip';
    pause.textContent = 'pause'; skip.textContent = 'to the end';
    speed.className = 'speed'; speed.setAttribute('aria-label', 'speed');
    [1, 2, 4, 8].forEach(function (v) { speed.add(new Option(v + '×', v)); });
    status.className = 'status';
    bar.append(pause, ' ', speed, ' ', skip, ' ', status);
    td.append(bar, pre);
    row.appendChild(td);
    tr.after(row);

    var evs = [], i = 0, total = 0, clock = 0, last = 0, rate = 1, paused = false, timer = null, scr = null;
    function state(s, text) { row.setAttribute('data-state', s); status.textContent = text || s; }
    // tick moves the recording's clock on by the time played since last.
    function tick() { var now = performance.now(); if (!paused) { clock += (now - last) / 1000 * rate; } last = now; }
    function apply(e) {
      var m = /^(\d+)x(\d+)$/.exec(e.data);
      if (e.code === 'o') { scr.write(e.data); }
      if (e.code === 'r' && m) { scr.resize(size(m[1], scr.cols, 500), size(m[2], scr.rows, 200)); }
    }
    // step plays the events due and waits for the next one.
    function step() {
      clearTimeout(timer);
      if (!row.isConnected || !scr) { return; }
      tick();
      while (i < evs.length && evs[i].at <= clock) { apply(evs[i++]); }
      scr.render(pre);
      if (i === evs.length) { state('ended'); pause.disabled = skip.disabled = true; return; }
      if (paused) { state('paused', 'paused at ' + mmss(clock) + ' of ' + mmss(total)); return; }
      state('playing', 'playing ' + mmss(clock) + ' of ' + mmss(total));
      // At most about 60 draws a second: output that streams fast is
      // drawn in batches.
      timer = setTimeout(step, Math.max(16, (evs[i].at - clock) * 1000 / rate));
    }
    pause.addEventListener('click', function () {
      tick();
      paused = !paused;
      pause.textContent = paused ? 'resume' : 'pause';
      step();
    });
    speed.addEventListener('change', function () { tick(); rate = Number(speed.value); step(); });
    skip.addEventListener('click', function () { clock = total; paused = false; step(); });

    state('loading');
    fetch(b.getAttribute('data-src'), {credentials: 'same-origin'}).then(function (r) {
      if (!r.ok) { throw new Error(r.status + ' ' + r.statusText); }
      return r.text();
    }).then(function (text) {
      var lines = text.split('\n'), h = JSON.parse(lines[0]), prev = 0;
      var cap = h.idle_time_limit > 0 ? h.idle_time_limit : idleCap;
      lines.slice(1).forEach(function (l) {
        var e;
        try { e = JSON.parse(l); } catch (err) { return; }
        if (!Array.isArray(e) || typeof e[0] !== 'number' || typeof e[2] !== 'string') { return; }
        total += Math.min(Math.max(0, e[0] - prev), cap);
        prev = Math.max(prev, e[0]);
        evs.push({at: total, code: e[1], data: e[2]});
      });
      scr = term(size(h.width, 80, 500), size(h.height, 24, 200));
      last = performance.now();
      step();
    }).catch(function (err) { state('error', 'cannot play: ' + err.message); });
  }

  document.querySelectorAll('button.play[data-src]').forEach(function (b) {
    b.hidden = false;
    b.addEventListener('click', function () { play(b); });
  });

  if (document.body.getAttribute('data-live') !== 'approvals') { return; }
  var es = new EventSource('/ui/stream');
  document.addEventListener('submit', function () { es.close(); });
  es.addEventListener('approval', function () {
    var a = document.activeElement;
    if (a && a.name === 'reason' && a.value) { return; }
    location.reload();
  });
})();
