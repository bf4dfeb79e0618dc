// Live updates: reload when a request arrives or changes, unless the
// approver is typing a reason or submitting a decision (whose own page
// load shows the result).
(function () {
  var es = new EventSource('/ui/stream');
  document.addEventListener('submit', function () { es.close(); });
  es.addEventListener('approval', function () {
    var a = document.activeElement;
    if (a && a.name === 'reason' && a.value) { return; }
    location.reload();
  });
})();
