/* Progressive enhancement only: every page works without this file, except the live chart and
   the upload progress bar. */
(function () {
  "use strict";

  function lossChart(el) {
    var url = el.dataset.metricsUrl;
    var plot = null;
    var timer = null;
    function draw(data) {
      var series = [data.steps, data.loss];
      var opts = {
        width: Math.max(el.clientWidth, 320), height: 300,
        scales: { x: { time: false } },
        series: [{ label: "step" }, { label: "training loss", stroke: "#0b4fa8" }],
        axes: [{ label: "step" }, { label: "loss" }],
      };
      if (data.valid_loss.some(function (v) { return v !== null; })) {
        series.push(data.valid_loss);
        opts.series.push({ label: "validation loss", stroke: "#a40e0e" });
      }
      if (plot) { plot.destroy(); }
      plot = new window.uPlot(opts, series, el);
      el.dataset.points = String(data.steps.length);
    }
    function poll() {
      fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } })
        .then(function (r) { return r.json(); })
        .then(function (data) {
          if (window.uPlot && data.steps.length) { draw(data); }
          if (data.terminal) {
            clearInterval(timer);
            el.dataset.done = "true";
          }
        })
        .catch(function () { /* a transient failure: the next poll retries */ });
    }
    poll();
    timer = setInterval(poll, 2000);
  }

  function usageChart(el) {
    var source = document.getElementById("usage-data");
    if (!source || !window.uPlot) { return; }
    var data = JSON.parse(source.textContent);
    var xs = data.days.map(function (d) { return Date.parse(d + "T00:00:00Z") / 1000; });
    new window.uPlot({
      width: Math.max(el.clientWidth, 320), height: 260,
      series: [{}, { label: "tokens", stroke: "#0b4fa8", fill: "rgba(11,79,168,0.1)" }],
    }, [xs, data.tokens], el);
  }

  function uploadProgress(form) {
    var bar = document.getElementById("upload-progress");
    if (!bar || !window.XMLHttpRequest) { return; }
    form.addEventListener("submit", function (event) {
      event.preventDefault();
      var xhr = new XMLHttpRequest();
      bar.hidden = false;
      xhr.upload.addEventListener("progress", function (e) {
        if (e.lengthComputable) { bar.value = Math.round((e.loaded / e.total) * 100); }
      });
      xhr.addEventListener("load", function () {
        // The server answers with a redirect to the file's page (followed by XHR) or the form
        // with its errors: show whichever page it is.
        if (xhr.responseURL && xhr.responseURL !== window.location.href && xhr.status < 400) {
          window.location.assign(xhr.responseURL);
        } else {
          document.open(); document.write(xhr.responseText); document.close();
        }
      });
      xhr.open("POST", form.action || window.location.href);
      xhr.send(new FormData(form));
    });
  }

  document.addEventListener("DOMContentLoaded", function () {
    var loss = document.getElementById("loss-chart");
    if (loss) { lossChart(loss); }
    var usage = document.getElementById("usage-chart");
    if (usage) { usageChart(usage); }
    var upload = document.getElementById("upload-form");
    if (upload) { uploadProgress(upload); }
  });
})();
