// Live updates: reload when a request arrives or changes, unless the
// approver is typing a reason.
(function () {
  var es = new EventSource('/ui/stream');
  es.addEventListener('approval', function () {
    var a = document.activeElement;
    if (a && a.name === 'reason' && a.value) { return; }
    location.reload();
  });
})();
