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
    function finish() {
      clearInterval(timer);
      el.dataset.done = "true";
    }
    function poll() {
      fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } })
        .then(function (r) { return r.json(); })
        .then(function (data) {
          if (window.uPlot && data.steps.length) { draw(data); }
          if (data.terminal) { finish(); }
        })
        .catch(function () { /* a transient failure: the next poll retries */ });
    }
    function startPolling() {
      el.dataset.transport = "poll";
      poll();
      timer = setInterval(poll, 2000);
    }
    // Server-Sent Events when the browser has them: new points arrive as they are recorded.
    // Any stream error falls back to polling (which re-reads every point, so nothing is lost).
    if (window.EventSource && el.dataset.streamUrl) {
      el.dataset.transport = "sse";
      var data = { steps: [], loss: [], valid_loss: [] };
      var source = new EventSource(el.dataset.streamUrl);
      source.addEventListener("metrics", function (event) {
        var batch = JSON.parse(event.data);
        batch.points.forEach(function (p) {
          data.steps.push(p.step); data.loss.push(p.loss); data.valid_loss.push(p.valid_loss);
        });
        if (window.uPlot && data.steps.length) { draw(data); }
      });
      source.addEventListener("end", function () { source.close(); finish(); });
      source.addEventListener("error", function () {
        if (el.dataset.done === "true") { return; }
        source.close();
        startPolling();
      });
    } else {
      startPolling();
    }
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

  /* Evaluation charts: x = context length (log2 axis), one line per series; the data comes
     from the page (json_script), the same numbers as the table below the chart. */
  var PALETTE = ["#0b4fa8", "#a40e0e", "#1b7f3b", "#8a5a00", "#6b2fa0", "#00707a", "#555555"];
  function evalChart(el) {
    var source = document.getElementById(el.dataset.chartSource);
    if (!source || !window.uPlot) { return; }
    var data = JSON.parse(source.textContent);
    var series = [{ label: "tokens" }];
    var columns = [data.lengths];
    data.series.forEach(function (s, i) {
      series.push({ label: s.label, stroke: PALETTE[i % PALETTE.length], width: i === 0 ? 2.5 : 1.5,
                    points: { show: true }, spanGaps: true });
      columns.push(s.values);
    });
    new window.uPlot({
      width: Math.max(el.clientWidth, 320), height: 300,
      scales: { x: { time: false, distr: 3, log: 2 }, y: data.log_y ? { distr: 3 } : { range: [0, 1] } },
      series: series,
      axes: [{ label: "context length (tokens)" }, { label: data.y_label }],
    }, columns, el);
    el.dataset.series = String(data.series.length);
  }

  /* The billing page: cumulative usage cost per UTC day, with the budget as a flat line. */
  function billingChart(el) {
    var source = document.getElementById("billing-data");
    if (!source || !window.uPlot) { return; }
    var data = JSON.parse(source.textContent);
    var xs = data.days.map(function (d) { return Date.parse(d + "T00:00:00Z") / 1000; });
    var series = [{}, { label: "usage cost ($)", stroke: "#0b4fa8", fill: "rgba(11,79,168,0.1)" }];
    var columns = [xs, data.cost];
    if (data.budget !== null) {
      series.push({ label: "budget ($)", stroke: "#a40e0e", dash: [6, 4] });
      columns.push(xs.map(function () { return data.budget; }));
    }
    var period = [Date.parse(data.start) / 1000, Date.parse(data.end) / 1000];
    new window.uPlot({
      width: Math.max(el.clientWidth, 320), height: 260, series: series,
      scales: {
        x: { time: true, range: function () { return period; } },  // the whole month
        y: { range: function (u, min, max) { return [0, Math.max(max * 1.1, 1)]; } },
      },
    }, columns, el);
    el.dataset.points = String(xs.length);
  }

  function csrfToken() {
    var headers = document.body.getAttribute("hx-headers");
    try { return JSON.parse(headers)["X-CSRFToken"]; } catch (e) { return ""; }
  }

  /* Resumable chunked upload through the Uploads API (POST /v1/uploads, .../parts,
     .../complete) with the session: a 1 GB file never sits in one request, a failed part is
     retried on its own, and the bar shows the bytes sent. Without JS the form posts the whole
     file to this page instead (multipart), which works for small files. */
  function chunkedUpload(form) {
    var bar = document.getElementById("upload-progress");
    var note = document.getElementById("upload-note");
    if (!bar || !window.fetch || !window.FormData || !window.Blob) { return; }
    var partBytes = parseInt(form.dataset.partBytes, 10) || 8 * 1024 * 1024;
    var headers = { "X-CSRFToken": csrfToken(), "LongTune-Organization": form.dataset.org };

    function api(path, body) {
      return fetch(path, {
        method: "POST", credentials: "same-origin",
        headers: Object.assign({ "Content-Type": "application/json" }, headers),
        body: JSON.stringify(body || {}),
      }).then(function (r) {
        return r.json().then(function (data) {
          if (!r.ok) { throw new Error(data.error ? data.error.message : r.statusText); }
          return data;
        });
      });
    }

    function sendPart(uploadId, blob, onProgress, attempt) {
      return new Promise(function (resolve, reject) {
        var xhr = new XMLHttpRequest();
        xhr.open("POST", "/v1/uploads/" + uploadId + "/parts");
        Object.keys(headers).forEach(function (k) { xhr.setRequestHeader(k, headers[k]); });
        xhr.upload.addEventListener("progress", function (e) { onProgress(e.loaded); });
        xhr.addEventListener("load", function () {
          var data = {};
          try { data = JSON.parse(xhr.responseText); } catch (e) { /* not JSON */ }
          if (xhr.status === 200) { resolve(data.id); return; }
          reject({ retry: xhr.status >= 500, message: data.error ? data.error.message : "part failed" });
        });
        xhr.addEventListener("error", function () { reject({ retry: true, message: "network error" }); });
        var body = new FormData();
        body.append("data", blob, "part");
        xhr.send(body);
      }).catch(function (problem) {
        if (problem.retry && attempt < 3) {
          return new Promise(function (r) { setTimeout(r, 1000 * attempt); })
            .then(function () { return sendPart(uploadId, blob, onProgress, attempt + 1); });
        }
        throw new Error(problem.message);
      });
    }

    form.addEventListener("submit", function (event) {
      var file = form.elements.file.files[0];
      if (!file) { return; }  // let the server say the file is required
      event.preventDefault();
      var button = form.querySelector("button[type=submit]");
      button.disabled = true;
      bar.hidden = false; bar.value = 0;
      note.textContent = "Uploading " + file.name + "…";
      var done = 0;
      var partIds = [];
      api("/v1/uploads", {
        filename: file.name, purpose: form.elements.purpose.value,
        bytes: file.size, mime_type: "application/jsonl",
      }).then(function (upload) {
        var offsets = [];
        for (var at = 0; at < file.size; at += partBytes) { offsets.push(at); }
        return offsets.reduce(function (chain, start) {
          return chain.then(function () {
            var blob = file.slice(start, Math.min(start + partBytes, file.size));
            return sendPart(upload.id, blob, function (loaded) {
              bar.value = Math.round(((done + loaded) / file.size) * 100);
            }, 1).then(function (partId) {
              partIds.push(partId);
              done += blob.size;
              bar.value = Math.round((done / file.size) * 100);
              bar.dataset.parts = String(partIds.length);
            });
          });
        }, Promise.resolve()).then(function () {
          return api("/v1/uploads/" + upload.id + "/complete", { part_ids: partIds });
        });
      }).then(function (completed) {
        note.textContent = "Uploaded; checking the file…";
        window.location.assign(form.dataset.filesUrl + completed.file.id);
      }).catch(function (err) {
        note.textContent = "Upload failed: " + err.message;
        button.disabled = false;
      });
    });
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

  /* The job form: say which RoPE method and factor a context length implies (the server plans
     the same: target / original length, the chosen or default method). */
  function contextHint(hint) {
    var model = document.getElementById("model");
    var length = document.getElementById("context_length");
    var method = document.getElementById("rope_method");
    var factor = document.getElementById("rope_factor");
    function update() {
      var option = model.options[model.selectedIndex];
      if (!option) { hint.textContent = ""; return; }
      var original = parseInt(option.dataset.original, 10);
      var maximum = parseInt(option.dataset.max, 10);
      /* A fine-tuned starting model: its trained context is the default and the floor, its
         RoPE method (when it was scaled) is kept; factors stay relative to the base's original. */
      var trained = parseInt(option.dataset.trained, 10) || original;
      var target = parseInt(length.value, 10) || trained;
      var rope = option.dataset.rope || method.value || hint.dataset.defaultRope;
      if (target > maximum) {
        hint.textContent = "Longer than this model's maximum (" + maximum + " tokens).";
      } else if (target < trained) {
        hint.textContent = "Shorter than the " + trained + " tokens this model was trained at.";
      } else if (target <= original) {
        hint.textContent = "Within the model's trained context (" + original + "): no RoPE scaling.";
      } else {
        var implied = factor.value || (target / original).toFixed(2).replace(/\.?0+$/, "");
        hint.textContent = "RoPE " + rope + " ×" + implied + " (" + original + " → " + target + " tokens).";
      }
    }
    [model, length, method, factor].forEach(function (el) {
      el.addEventListener("input", update); el.addEventListener("change", update);
    });
    update();
  }

  document.addEventListener("DOMContentLoaded", function () {
    var hint = document.getElementById("context-hint");
    if (hint) { contextHint(hint); }
    var chat = document.getElementById("chat-form");
    if (chat) { playground(chat); }
    var loss = document.getElementById("loss-chart");
    if (loss) { lossChart(loss); }
    var usage = document.getElementById("usage-chart");
    if (usage) { usageChart(usage); }
    document.querySelectorAll(".eval-chart").forEach(evalChart);
    var billing = document.getElementById("billing-chart");
    if (billing) { billingChart(billing); }
    var upload = document.getElementById("upload-form");
    if (upload) { chunkedUpload(upload); }
  });
})();
