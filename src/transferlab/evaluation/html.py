"""The HTML building blocks of transferlab's self-contained pages (report.html, audit.html,
compare.html, the serve page): one stylesheet, escaping, embedded images, tables, sections.

Every page is one file with inline CSS and images as base64 ``data:`` URIs, so it can be mailed
or attached to a ticket.
"""

from __future__ import annotations

import base64
import html
import io
import json
from pathlib import Path

import numpy as np

__all__ = ["CSS", "THUMB", "escape", "fmt_value", "img_array", "img_file", "img_tag", "kv_grid", "muted",
           "section", "table", "thumbnail"]

THUMB = 160  # px: the longer side of a thumbnail in a gallery

CSS = """
body{font-family:-apple-system,"Segoe UI",Roboto,Helvetica,Arial,sans-serif;margin:0;color:#1f2933;background:#f5f7fa}
header{background:#243b53;color:#fff;padding:18px 32px}header h1{margin:0 0 4px;font-size:24px}
header p{margin:0;color:#d9e2ec;font-size:14px}main{max-width:1200px;margin:0 auto;padding:8px 32px 40px}
section{background:#fff;border-radius:8px;box-shadow:0 1px 3px rgba(0,0,0,.12);margin:18px 0;padding:16px 22px}
h2{margin:0 0 12px;font-size:19px;color:#243b53}h3{font-size:15px;margin:16px 0 8px;color:#334e68}
table{border-collapse:collapse;font-size:13px;margin:4px 0}th,td{padding:4px 10px;border-bottom:1px solid #e4e7eb;text-align:left;vertical-align:top}
th{background:#f0f4f8}td.num,th.num{text-align:right;font-variant-numeric:tabular-nums}
tr.avg td{font-weight:600;background:#fafbfc}code{font-size:12px;word-break:break-all}
.cards{display:flex;flex-wrap:wrap;gap:12px}.card{background:#f0f4f8;border-radius:6px;padding:10px 16px;min-width:120px}
.card b{display:block;font-size:22px;color:#102a43}.card span{font-size:12px;color:#627d98}
section img{max-width:100%;height:auto}.figs{display:grid;grid-template-columns:repeat(auto-fit,minmax(360px,1fr));gap:16px;align-items:start}
.figs.wide{grid-template-columns:1fr}
.muted{color:#627d98;font-size:13px}.note{background:#fffbea;border-left:4px solid #f0b429;padding:6px 10px;font-size:13px}
.gallery{display:grid;grid-template-columns:repeat(auto-fill,minmax(340px,1fr));gap:12px}
.mistake{border:1px solid #e4e7eb;border-radius:6px;padding:8px;background:#fafbfc;font-size:13px}
.mistake .pics{display:flex;gap:6px}.mistake img{width:160px;height:160px;object-fit:contain;background:#e4e7eb;border-radius:4px}
.mistake .missing{width:160px;height:160px;display:flex;align-items:center;justify-content:center;background:#e4e7eb;color:#627d98}
.true{color:#1f7a3a;font-weight:600}.pred{color:#b42318;font-weight:600}.path{color:#627d98;font-size:11px;word-break:break-all}
.kv{columns:3 300px;column-gap:32px;margin:0}.kv div{break-inside:avoid;display:flex;gap:10px;padding:3px 0;border-bottom:1px solid #eef1f4;font-size:13px}
.kv dt{font-weight:600;color:#334e68;flex:0 0 40%;word-break:break-word}.kv dd{margin:0;word-break:break-all;flex:1}
"""


def escape(value) -> str:
    return html.escape(str(value), quote=True)


def img_tag(data: bytes, mime: str, alt: str) -> str:
    return f'<img src="data:{mime};base64,{base64.b64encode(data).decode("ascii")}" alt="{escape(alt)}">'


def img_file(path: Path, alt: str) -> str:
    return img_tag(path.read_bytes(), "image/png", alt)


def img_array(array: np.ndarray, alt: str) -> str:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="JPEG", quality=88)
    return img_tag(buffer.getvalue(), "image/jpeg", alt)


def fmt_value(value) -> str:
    if value is None:
        return "&mdash;"
    if isinstance(value, float):
        return escape(f"{value:.6g}")
    if isinstance(value, (dict, list)):
        return f"<code>{escape(json.dumps(value, default=str))}</code>"
    return escape(value)


def _flatten(items: dict, prefix: str = "") -> dict:
    flat = {}
    for key, value in items.items():
        if isinstance(value, dict) and value and not prefix:
            flat.update(_flatten(value, f"{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def kv_grid(items: dict) -> str:
    """Key/value pairs in newspaper columns: a long config stays a screen high."""
    rows = "".join(f"<div><dt>{escape(k)}</dt><dd>{fmt_value(v)}</dd></div>" for k, v in _flatten(items).items())
    return f'<dl class="kv">{rows}</dl>'


def table(header: list[str], rows: list[list], numeric_from: int = 1, row_class: list[str] | None = None) -> str:
    head = "".join(f'<th class="num">{escape(h)}</th>' if i >= numeric_from else f"<th>{escape(h)}</th>"
                   for i, h in enumerate(header))
    body = []
    for r, row in enumerate(rows):
        cls = f' class="{row_class[r]}"' if row_class and row_class[r] else ""
        cells = "".join(f'<td class="num">{c}</td>' if i >= numeric_from else f"<td>{c}</td>" for i, c in enumerate(row))
        body.append(f"<tr{cls}>{cells}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def section(sid: str, title: str, body: str) -> str:
    return f'<section id="{sid}"><h2>{escape(title)}</h2>{body}</section>'


def muted(text: str) -> str:
    return f'<p class="muted">{escape(text)}</p>'


def thumbnail(path: str) -> np.ndarray | None:
    from PIL import Image, ImageOps

    try:
        with Image.open(path) as img:
            img = ImageOps.exif_transpose(img).convert("RGB")
            img.thumbnail((THUMB, THUMB))
            return np.asarray(img)
    except Exception:  # missing or unreadable since training: shown as a placeholder
        return None
