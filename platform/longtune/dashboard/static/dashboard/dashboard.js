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

  function csrfToken() {
    var headers = document.body.getAttribute("hx-headers");
    try { return JSON.parse(headers)["X-CSRFToken"]; } catch (e) { return ""; }
  }

  function playground(form) {
    var log = document.getElementById("chat-log");
    var errorBox = document.getElementById("chat-error");
    var history = [];
    function bubble(role, text) {
      var p = document.createElement("p");
      p.className = "turn " + role;
      var who = document.createElement("strong");
      who.textContent = role + ": ";
      var body = document.createElement("span");
      body.textContent = text;
      p.appendChild(who); p.appendChild(body); log.appendChild(p);
      return body;
    }
    form.addEventListener("submit", function (event) {
      event.preventDefault();
      errorBox.textContent = "";
      var message = form.elements.message.value;
      if (!message) { return; }
      var messages = [];
      if (form.elements.system.value) { messages.push({ role: "system", content: form.elements.system.value }); }
      history.push({ role: "user", content: message });
      bubble("user", message);
      var answer = bubble("assistant", "");
      answer.dataset.chunks = "0";
      var button = form.querySelector("button[type=submit]");
      button.disabled = true;
      var text = "";
      fetch(form.dataset.url, {
        method: "POST",
        credentials: "same-origin",
        headers: {
          "Content-Type": "application/json",
          "X-CSRFToken": csrfToken(),
          "LongTune-Organization": form.dataset.org,
        },
        body: JSON.stringify({
          model: form.dataset.model,
          messages: messages.concat(history),
          stream: true,
          max_tokens: parseInt(form.elements.max_tokens.value, 10) || 64,
        }),
      }).then(function (response) {
        if (!response.ok) {
          return response.json().then(function (body) { throw new Error(body.error ? body.error.message : response.statusText); });
        }
        var reader = response.body.getReader();
        var decoder = new TextDecoder();
        var buffer = "";
        function pump() {
          return reader.read().then(function (part) {
            if (part.done) { return; }
            buffer += decoder.decode(part.value, { stream: true });
            var events = buffer.split("\n\n");
            buffer = events.pop();
            events.forEach(function (raw) {
              var line = raw.trim();
              if (line.indexOf("data:") !== 0) { return; }
              var data = line.slice(5).trim();
              if (data === "[DONE]") { answer.dataset.done = "true"; return; }
              var chunk = JSON.parse(data);
              if (chunk.error) { throw new Error(chunk.error.message); }
              var delta = chunk.choices && chunk.choices[0] && chunk.choices[0].delta;
              if (delta && delta.content) {
                text += delta.content;
                answer.textContent = text;
                answer.dataset.chunks = String(parseInt(answer.dataset.chunks, 10) + 1);
              }
            });
            return pump();
          });
        }
        return pump();
      }).then(function () {
        history.push({ role: "assistant", content: text });
        answer.dataset.done = "true";
      }).catch(function (err) {
        errorBox.textContent = err.message;
      }).then(function () { button.disabled = false; form.elements.message.value = ""; });
    });
  }

  document.addEventListener("DOMContentLoaded", function () {
    var chat = document.getElementById("chat-form");
    if (chat) { playground(chat); }
    var loss = document.getElementById("loss-chart");
    if (loss) { lossChart(loss); }
    var usage = document.getElementById("usage-chart");
    if (usage) { usageChart(usage); }
    var upload = document.getElementById("upload-form");
    if (upload) { uploadProgress(upload); }
  });
})();
