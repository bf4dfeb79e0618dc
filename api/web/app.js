// The approver page's one script. It shows each <time> in the browser's
// time zone (the server wrote UTC), keeps "2 min ago" current (by the
// server's clock), submits the session filter on change, and reloads the
// approvals page when a request arrives or changes, unless the approver is
// typing a reason or submitting a decision (whose own page load shows the
// result).
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

  if (document.body.getAttribute('data-live') !== 'approvals') { return; }
  var es = new EventSource('/ui/stream');
  document.addEventListener('submit', function () { es.close(); });
  es.addEventListener('approval', function () {
    var a = document.activeElement;
    if (a && a.name === 'reason' && a.value) { return; }
    location.reload();
  });
})();
