// Foreman's status page follows the state: it fetches itself every
// data-refresh seconds and swaps in the new <main>, keeping the scroll
// position. Pausable (remembered in this browser); a hidden tab does not
// poll. The page works without this file: a <noscript> refresh reloads it.
(function () {
  'use strict';
  var main = document.getElementById('status');
  var button = document.getElementById('pause');
  var polling = document.getElementById('polling');
  if (!main || !button || !polling) return;
  var every = Math.max(2, Number(main.getAttribute('data-refresh')) || 15) * 1000;
  var paused = false;
  try { paused = window.localStorage.getItem('foreman.paused') === '1'; } catch (e) { /* storage off */ }
  var polls = 0;
  var busy = false;

  function show(note) {
    button.hidden = false;
    button.textContent = paused ? 'Resume' : 'Pause';
    button.setAttribute('aria-pressed', paused ? 'true' : 'false');
    polling.textContent = note || (paused ? 'Paused' : 'Refreshing every ' + every / 1000 + ' s');
    polling.id = 'polling';
  }

  function failed(why) {
    document.body.classList.add('offline');
    show('');
    polling.textContent = 'Could not refresh (' + why + '); showing ' + main.getAttribute('data-generated');
    polling.setAttribute('class', 'bad');
  }

  function poll() {
    if (paused || busy || document.hidden) return;
    busy = true;
    // From the origin, never the page's own URL: a URL that carries
    // credentials (user:token@host) cannot be fetched, while the
    // browser's sign-in for the origin goes with the request anyway.
    fetch(window.location.origin + window.location.pathname + window.location.search, { headers: { Accept: 'text/html' }, cache: 'no-store', credentials: 'same-origin' })
      .then(function (r) {
        if (!r.ok) throw new Error('HTTP ' + r.status);
        return r.text();
      })
      .then(function (html) {
        var doc = new DOMParser().parseFromString(html, 'text/html');
        var fresh = doc.getElementById('status');
        if (!fresh) throw new Error('no status in the response');
        if (paused) return;
        // The <details> a reader opened stays open.
        var open = {};
        main.querySelectorAll('details[id]').forEach(function (d) { open[d.id] = d.open; });
        fresh = document.importNode(fresh, true);
        fresh.querySelectorAll('details[id]').forEach(function (d) {
          if (Object.prototype.hasOwnProperty.call(open, d.id)) d.open = open[d.id];
        });
        main.replaceWith(fresh);
        main = fresh;
        document.title = doc.title;
        polls += 1;
        document.body.setAttribute('data-polls', String(polls));
        document.body.classList.remove('offline');
        polling.removeAttribute('class');
        show();
      })
      .catch(function (e) { failed(e.message); })
      .finally(function () { busy = false; });
  }

  button.addEventListener('click', function () {
    paused = !paused;
    try { window.localStorage.setItem('foreman.paused', paused ? '1' : '0'); } catch (e) { /* storage off */ }
    show();
    if (!paused) poll();
  });
  document.addEventListener('visibilitychange', function () { if (!document.hidden) poll(); });
  show();
  window.setInterval(poll, every);
}());
