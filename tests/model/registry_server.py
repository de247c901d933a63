"""Test helpers for the model registry: a small official-layout checkpoint, a registry file
naming it, and an HTTP server on 127.0.0.1 that serves files (counting requests; able to
send half a file and stall, or cut the connection)."""

from __future__ import annotations

import hashlib
import http.server
import threading
import time
from pathlib import Path

import torch
import yaml

from panoptic_detr.model.build import build_model

# A small panoptic model in the official layout (no config, no categories in the file): 250
# COCO-panoptic classes, so a registry entry labels its predictions with COCO names.
SMALL = dict(backbone_width=16, hidden_dim=128, dim_feedforward=128, enc_layers=1, dec_layers=1, num_queries=5,
             num_classes=250, dropout=0.0)


def write_small_preset(path: Path) -> Path:
    path.write_text(yaml.safe_dump({"base": "tiny", **SMALL}))
    return path


def small_official_checkpoint(path: Path, seed: int = 0) -> tuple[Path, str, dict]:
    """(path, sha256, state dict) of a random small checkpoint saved as the official files are."""
    from panoptic_detr.data.categories import official_categories

    torch.manual_seed(seed)
    sd = build_model("tiny", **SMALL).state_dict()
    named = torch.zeros(251, dtype=torch.bool)
    named[[c.id for c in official_categories(250)]] = True
    named[-1] = True
    sd["detr.class_embed.bias"][~named] = -20.0  # as trained: the unnamed COCO ids never win
    torch.save({"model": sd}, path)
    return path, hashlib.sha256(path.read_bytes()).hexdigest(), sd


def write_registry(path: Path, entries: dict) -> Path:
    path.write_text(yaml.safe_dump({"format": 1, "models": entries}, sort_keys=False))
    return path


class FileServer:
    """Serves `files` (URL name -> bytes) on 127.0.0.1; `hits` counts GETs per name.
    mode 'stall': sends half of the body then waits (until `release` is set);
    mode 'cut': sends half of the body then closes the connection."""

    def __init__(self, files: dict[str, bytes]):
        self.files, self.hits, self.mode = dict(files), {}, "ok"
        self.release = threading.Event()
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 (http.server's name)
                name = self.path.rsplit("/", 1)[-1]
                server.hits[name] = server.hits.get(name, 0) + 1
                body = server.files.get(name)
                if body is None:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if server.mode == "ok":
                    self.wfile.write(body)
                    return
                self.wfile.write(body[: len(body) // 2])
                self.wfile.flush()
                if server.mode == "stall":
                    server.release.wait(30)
                self.close_connection = True

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/models"

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.release.set()
        self.httpd.shutdown()
        self.httpd.server_close()
        time.sleep(0)
