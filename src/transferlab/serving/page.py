"""``GET /``: a page where a person drops images and sees the top classes beside each one.

Self-contained (inline CSS in the report's style, inline script, no network but the service
itself). Images go to ``POST /predict`` as multipart uploads, at most the per-request limit at
a time; every text from a file name or the server is inserted with ``textContent``.
"""

from __future__ import annotations

import html
import json

from transferlab.evaluation.html import CSS as REPORT_CSS
from transferlab.serving.inputs import Limits

_PAGE_CSS = """
#drop{border:2px dashed #9fb3c8;border-radius:8px;padding:36px;text-align:center;color:#486581;background:#fff;cursor:pointer}
#drop.over{background:#e6f6ff;border-color:#2680c2}
#results{display:grid;grid-template-columns:repeat(auto-fill,minmax(340px,1fr));gap:12px;margin-top:16px}
.result{display:flex;gap:10px;border:1px solid #e4e7eb;border-radius:6px;padding:8px;background:#fff;font-size:13px}
.result img{width:128px;height:128px;object-fit:contain;background:#e4e7eb;border-radius:4px;flex:0 0 128px}
.result .name{color:#627d98;font-size:11px;word-break:break-all}.result .error{color:#b42318}
.bar{height:6px;background:#2680c2;border-radius:3px;margin:1px 0 6px}
"""

_SCRIPT = """
const cfg = JSON.parse(document.getElementById('config').textContent);
const drop = document.getElementById('drop'), input = document.getElementById('pick');
const results = document.getElementById('results');
function el(tag, cls, text) { const e = document.createElement(tag); if (cls) e.className = cls;
  if (text !== undefined) e.textContent = text; return e; }
function card(file) { const c = el('div', 'result'); const img = el('img'); img.alt = file.name;
  img.src = URL.createObjectURL(file); const info = el('div', 'info'); info.append(el('div', 'name', file.name));
  c.append(img, info); results.prepend(c); return info; }
function show(info, answer) {
  for (const t of answer.top_k) { const row = el('div', 'class');
    row.append(el('b', null, t.label), document.createTextNode(' ' + (100 * t.probability).toFixed(1) + '%'));
    const bar = el('div', 'bar'); bar.style.width = Math.max(1, 100 * t.probability) + '%';
    info.append(row, bar); }
  info.parentElement.dataset.label = answer.label; }
async function send(files) {
  const infos = files.map(card); const form = new FormData();
  for (const f of files) form.append('files', f, f.name);
  let body;
  try { const r = await fetch('predict?top_k=' + cfg.top_k, {method: 'POST', body: form});
        body = await r.json(); if (!r.ok) throw new Error(body.error || r.statusText); }
  catch (err) { for (const i of infos) { i.append(el('div', 'error', String(err.message || err)));
                  i.parentElement.dataset.error = '1'; } return; }
  body.predictions.forEach((p, k) => show(infos[k], p));
}
async function classify(list) {
  const files = Array.from(list).filter(f => f.size > 0);
  for (let i = 0; i < files.length; i += cfg.max_images) await send(files.slice(i, i + cfg.max_images));
  document.body.dataset.done = String(Number(document.body.dataset.done || 0) + 1);
}
drop.addEventListener('click', () => input.click());
input.addEventListener('change', () => classify(input.files));
for (const ev of ['dragenter', 'dragover']) drop.addEventListener(ev, e => { e.preventDefault(); drop.classList.add('over'); });
drop.addEventListener('dragleave', () => drop.classList.remove('over'));
drop.addEventListener('drop', e => { e.preventDefault(); drop.classList.remove('over'); classify(e.dataTransfer.files); });
"""


def render_page(model, limits: Limits, top_k: int = 3) -> str:
    """The HTML of ``GET /`` for ``model`` (a :class:`~transferlab.serving.model.ServedModel`)."""
    config = json.dumps({"top_k": min(top_k, len(model.class_names)), "max_images": limits.max_images})
    classes = ", ".join(model.class_names)
    return (
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width, initial-scale=1'>"
        f"<title>transferlab serve: {html.escape(model.name)}</title>"
        f"<style>{REPORT_CSS}{_PAGE_CSS}</style></head><body>"
        f"<header><h1>{html.escape(model.name)}</h1><p>{len(model.class_names)} classes: {html.escape(classes)}"
        f" &middot; {model.size}px input &middot; {html.escape(model.runtime.name)}</p></header><main><section>"
        "<div id='drop'>Drop images here, or click to choose files</div>"
        "<input id='pick' type='file' accept='image/*' multiple hidden>"
        "<div id='results'></div>"
        "<p class='muted'>Images are sent to this service only (POST /predict) and not kept. "
        "API: <code>curl -F file=@photo.jpg http://HOST:PORT/predict</code> &middot; "
        "<a href='metadata'>metadata</a> &middot; <a href='metrics'>metrics</a></p>"
        f"</section></main><script type='application/json' id='config'>{html.escape(config, quote=False)}</script>"
        f"<script>{_SCRIPT}</script></body></html>"
    )
