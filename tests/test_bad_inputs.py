"""Bad and hostile inputs end in clean errors: the local hub answers a 4xx with a readable message and keeps
answering; the CLI exits 2 with one paragraph and no traceback; nothing already computed is lost.

Run with ``-s`` to see the tally (inputs tried, clean errors).
"""

from __future__ import annotations

import base64
import contextlib
import http.client
import json
import os
import re
import socket
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path
from urllib.parse import urlsplit

import huggingface_hub  # noqa: F401 - imported now: its log handler binds to the real stderr, not a test's capture
import numpy as np
import pytest
from PIL import Image

from hf_transfer_seg.cli import main as cli_main
from hf_transfer_seg.localhub import local_hub

ROOT = Path(__file__).resolve().parents[1]
TALLY = {"tried": 0, "clean": 0}


def _count(clean: bool) -> None:
    TALLY["tried"] += 1
    TALLY["clean"] += bool(clean)


pytestmark = pytest.mark.usefixtures("fresh_logging")


@pytest.fixture(scope="module", autouse=True)
def _report_tally():
    yield
    print(f"\nbad inputs tried: {TALLY['tried']}, clean errors: {TALLY['clean']}")


# --------------------------------------------------------------------------------------------------
# the local hub


def _yaml_card(front: str) -> str:
    return f"---\n{front}\n---\n# card\n"


BOMB = "a: &a [x,x,x,x,x,x,x,x,x]\n" + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [" + ",".join([f"*{chr(97 + i)}"] * 9) + "]\n" for i in range(8)
)
DEEP_YAML = "a: " + "[" * 2000 + "]" * 2000
HEADER = json.dumps({"key": "header", "value": {"summary": "s"}}) + "\n"


def _file_line(path: str, data: bytes) -> str:
    return json.dumps({"key": "file", "value": {"content": base64.b64encode(data).decode(), "path": path,
                                                "encoding": "base64"}}) + "\n"


class Client:
    def __init__(self, endpoint: str):
        parts = urlsplit(endpoint)
        self.host, self.port = parts.hostname, parts.port

    def request(self, method: str, path: str, body: bytes | dict | None = None, headers: dict | None = None):
        conn = http.client.HTTPConnection(self.host, self.port, timeout=30)
        try:
            data = json.dumps(body).encode() if isinstance(body, dict) else body
            headers = {**({"Content-Type": "application/json"} if isinstance(body, dict) else {}), **(headers or {})}
            conn.request(method, path, body=data, headers=headers)
            response = conn.getresponse()
            return response.status, dict(response.getheaders()), response.read()
        finally:
            conn.close()

    def raw(self, data: bytes, timeout: float = 30) -> tuple[bytes, float]:
        start = time.monotonic()
        with socket.create_connection((self.host, self.port), timeout=timeout) as sock:
            sock.sendall(data)
            out = b""
            with contextlib.suppress(ConnectionResetError):
                while chunk := sock.recv(65536):
                    out += chunk
        return out, time.monotonic() - start


def _is_clean_error(status: int, headers: dict, body: bytes) -> bool:
    """A 4xx whose X-Error-Message is printable ASCII and whose JSON body names the error."""
    message = {k.lower(): v for k, v in headers.items()}.get("x-error-message", "")
    try:
        data = json.loads(body)
    except ValueError:
        return False
    if not isinstance(data, dict):
        return False
    said = data.get("error") or (data.get("errors") or [{}])[0].get("message")
    return 400 <= status < 500 and bool(message) and message.isprintable() and message.isascii() and bool(said)


@pytest.fixture(scope="module")
def hostile_hub(tmp_path_factory):
    root = tmp_path_factory.mktemp("hostile-hub")
    leftovers = root / ".tmp"
    leftovers.mkdir()
    (leftovers / "upload-killed").write_bytes(b"half an upload")
    (leftovers / "new-deadbeef.git").mkdir()
    with local_hub(root, body_idle_seconds=1.0) as endpoint:
        client = Client(endpoint)
        status, _, _ = client.request("POST", "/api/repos/create", {"name": "r"})
        assert status == 200
        for branch, card in (("bomb", _yaml_card(BOMB)), ("deep", _yaml_card(DEEP_YAML)),
                             ("cycle", _yaml_card("a: &a [*a]"))):
            # the server refuses such a card in a commit, as the Hub does; one pushed with git gets there anyway
            body = (HEADER + _file_line("README.md", card.encode())).encode()
            status, headers, data = client.request("POST", "/api/models/local/r/commit/main", body)
            _count(_is_clean_error(status, headers, data))
            assert _is_clean_error(status, headers, data), data[:300]
            assert client.request("POST", f"/api/models/local/r/branch/{branch}", {})[0] == 200
            _commit_with_git(root, "local/r", branch, "README.md", card.encode())
        yield client, root


def _commit_with_git(root: Path, repo_id: str, branch: str, path: str, data: bytes) -> str:
    """Commit straight into the server's git repository (as `git push` would), past the HTTP checks."""
    from hf_transfer_seg.localhub import storage as st

    repo = st.Storage(root).get("model", repo_id)
    return repo.commit(branch, [st.FileOp(path, repo.write_blob(data))], summary=f"{path} edited with git")


HUB_CASES = [
    # control characters and non-ASCII echoed into the error message (the header must stay valid)
    ("DELETE", "/api/models/local/r/branch/a%00", None),
    ("GET", "/api/x%01", None),
    ("POST", "/api/models/local/r/commit/main%1f", HEADER.encode()),
    ("DELETE", "/api/models/local/r/branch/%E2%98%83%0D%0Ax-injected:%201", None),
    ("GET", "/api/models/local/r%7F/revision/%FF", None),
    # repo names
    ("POST", "/api/repos/create", {"name": "abc\n"}),
    ("POST", "/api/repos/create", {"name": "a\x00b"}),
    ("POST", "/api/repos/create", {"name": "x" * 200}),
    ("POST", "/api/repos/create", {"name": ".."}),
    ("POST", "/api/repos/create", {"name": "ok", "organization": "../etc"}),
    ("POST", "/api/repos/create", {"name": 5}),
    ("POST", "/api/repos/create", b"not json"),
    ("POST", "/api/repos/create", b"[" * 100_000),
    ("POST", "/api/repos/create", b'{"name": ' + b"[" * 5000 + b"]" * 5000 + b"}"),
    # commit bodies
    ("POST", "/api/models/local/r/commit/main", b"[" * 100_000),
    ("POST", "/api/models/local/r/commit/main", (HEADER + '{"key": "file", "value": ' + "[" * 3000 + "]" * 3000 + "}\n").encode()),
    ("POST", "/api/models/local/r/commit/main", _file_line("x.txt", b"x").encode()),
    ("POST", "/api/models/local/r/commit/main", (HEADER + HEADER).encode()),
    ("POST", "/api/models/local/r/commit/main", (HEADER + '{"key": "file", "value": {"path": "a", "content": "@@@", "encoding": "base64"}}\n').encode()),
    ("POST", "/api/models/local/r/commit/main", (HEADER + _file_line("../escape.txt", b"x")).encode()),
    ("POST", "/api/models/local/r/commit/main", (HEADER + _file_line(".git/config", b"x")).encode()),
    ("POST", "/api/models/local/r/commit/main", (HEADER + '{"key": "nope", "value": {}}\n').encode()),
    ("POST", "/api/models/local/r/commit/main", (HEADER + '"just a string"\n').encode()),
    ("POST", "/api/models/local/r/commit/main", (HEADER + '{"key": "lfsFile", "value": {"path": "w", "oid": "' + "0" * 64 + '"}}\n').encode()),
    ("POST", "/api/models/local/r/commit/main", b'{"key": "header", "value": {"summary": ""}}\n'),
    ("POST", "/api/models/local/r/commit/main?create_pr=1", HEADER.encode()),
    ("POST", "/api/models/local/r/commit/main", (json.dumps({"key": "header", "value": {"summary": "s", "parentCommit": "0" * 40}}) + "\n").encode()),
    # a line that cannot be streamed (path before content) and is longer than the cap: 413, not held in memory
    ("POST", "/api/models/local/r/commit/main", (HEADER + '{"key": "file", "value": {"path": "big.bin", "content": "'
                                                 + "A" * (17 << 20) + '", "encoding": "base64"}}\n').encode()),
    # YAML validation: deep, alias bomb, cycle, invalid, wrong type
    ("POST", "/api/validate-yaml", {"content": _yaml_card("a: " + "[" * 3000)}),
    ("POST", "/api/validate-yaml", {"content": _yaml_card(DEEP_YAML)}),
    ("POST", "/api/validate-yaml", {"content": _yaml_card(BOMB)}),
    ("POST", "/api/validate-yaml", {"content": _yaml_card("a: &a [*a]")}),
    ("POST", "/api/validate-yaml", {"content": _yaml_card("a: [unclosed")}),
    ("POST", "/api/validate-yaml", {"content": 42}),
    # queries, refs, paths, methods, routes
    ("GET", "/api/models/local/r/commits/main?p=-1", None),
    ("GET", "/api/models/local/r/commits/main?limit=abc", None),
    ("GET", "/api/models/local/r/tree/main/README.md", None),
    ("GET", "/api/models/local/r/tree", None),
    ("GET", "/local/r/resolve/main/..%2F..%2Fetc%2Fpasswd", None),
    ("GET", "/local/r/resolve/main/nope.bin", None),
    ("GET", "/local/r/resolve/no-such-branch/README.md", None),
    ("POST", "/api/models/local/r/branch/bad..name", {}),
    ("POST", "/api/models/local/r/branch/x", {"startingPoint": ["main"]}),
    ("POST", "/api/models/local/r/tag/v1", {"tag": None}),
    ("POST", "/api/models/local/r/paths-info/main", {"paths": {"a": 1}}),
    ("POST", "/api/models/local/r/preupload/main", {"files": "README.md"}),
    ("POST", "/api/models/local/r/preupload/main", {"files": [{"path": "/abs"}]}),
    ("PUT", "/api/models/local/r/lfs-upload/" + "a" * 64 + "?size=1&sig=forged", b"x"),
    ("POST", "/local/r.git/info/lfs/objects/batch", {"operation": "upload", "objects": [{"oid": "z", "size": -1}]}),
    ("DELETE", "/api/whoami-v2", None),
    ("GET", "/api/models/local/r/commit/main", None),
    ("GET", "/api/models/nobody/nothing", None),
    ("GET", "/api/nothing/here", None),
]


def test_hub_answers_every_bad_request_with_a_clean_4xx_and_keeps_answering(hostile_hub):
    client, root = hostile_hub
    for method, path, body in HUB_CASES:
        status, headers, data = client.request(method, path, body)
        clean = _is_clean_error(status, headers, data)
        _count(clean)
        assert clean, (method, path, status, headers, data[:300])
        assert client.request("GET", "/")[0] == 200, (method, path)
    names = {p.name for p in (root / "models" / "local").iterdir()} if (root / "models" / "local").is_dir() else set()
    assert not any("\n" in n or "\x00" in n for n in names)
    assert not (root / "escape.txt").exists() and not (root.parent / "escape.txt").exists()
    # nothing that failed made a commit
    status, _, data = client.request("GET", "/api/models/local/r/commits/main")
    assert status == 200 and len(json.loads(data)) == 1


def test_repo_info_answers_at_a_revision_with_a_hostile_card(hostile_hub):
    client, _ = hostile_hub
    for branch in ("bomb", "deep", "cycle"):
        status, _, data = client.request("GET", f"/api/models/local/r/revision/{branch}")
        info = json.loads(data)
        _count(status == 200)
        assert status == 200 and "cardData" not in info and "README.md" in {s["rfilename"] for s in info["siblings"]}
        assert len(data) < 10_000  # no 33 MB expansion


def test_commit_pages_past_the_end_are_empty(hostile_hub):
    client, _ = hostile_hub
    for page in ("99999999999999999999", "1000"):
        status, headers, data = client.request("GET", f"/api/models/local/r/commits/main?p={page}")
        _count(status == 200 and json.loads(data) == [])
        assert status == 200 and json.loads(data) == [] and "Link" not in headers


def test_oversized_headers_and_stalled_bodies_are_cut_off(hostile_hub):
    client, _ = hostile_hub
    answer, _ = client.raw(b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * (1 << 20) + b"\r\n\r\n")
    _count(answer.startswith(b"HTTP/1.1 431"))
    assert answer.startswith(b"HTTP/1.1 431"), answer[:200]
    # a body shorter than its Content-Length: answered 408 and closed after the idle limit (1 s here)
    answer, _ = client.raw(b"POST /api/repos/create HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{\"name\":")
    _count(answer.startswith(b"HTTP/1.1 408"))
    assert answer.startswith(b"HTTP/1.1 408") and b"x-error-message" in answer.lower(), answer[:300]
    # (the server, not the client's 30 s socket timeout, ends it: a client timeout raises instead of returning an answer)
    answer, _ = client.raw(b"POST /api/models/local/r/commit/main HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n"
                                 + HEADER.encode())
    _count(answer.startswith(b"HTTP/1.1 408"))
    assert answer.startswith(b"HTTP/1.1 408")
    assert client.request("GET", "/")[0] == 200


def test_server_start_removes_leftover_temporary_uploads(hostile_hub):
    _, root = hostile_hub
    assert list((root / ".tmp").iterdir()) == []


def test_hub_serve_warns_that_a_token_flag_shows_in_ps(tmp_path, capsys):
    code = cli_main(["hub", "serve", "--root", str(tmp_path / "r"), "--port", "70000", "--token", "secret-value"])
    err = capsys.readouterr().err
    _count(code == 2)
    assert code == 2 and "Traceback" not in err and "HF_TRANSFER_SEG_HUB_TOKEN" in err and "ps" in err


# --------------------------------------------------------------------------------------------------
# the CLI, in this process


def _errors(stderr: str) -> list[str]:
    """The 'error: ...' paragraphs of a command's stderr (a progress bar may precede one on its line)."""
    return re.findall(r"(?:^|[\r\]|])error: [^\n]*", stderr, flags=re.M)


def _assert_clean_exit(code, captured, *words):
    text = captured.out + captured.err
    errors = _errors(captured.err)
    clean = code == 2 and "Traceback" not in text and len(errors) == 1 and all(w in errors[0] for w in words)
    _count(clean)
    assert clean, (code, text[-2000:])


PRETRAIN = ["pretrain", "--encoder", "test_resnet", "--dataset", "synthetic", "--image-size", "32", "--epochs", "1"]


@pytest.mark.parametrize("argv, words", [
    (["--train-size", "0"], ["--train-size"]),
    (["--val-size", "-3"], ["--val-size"]),
    (["--checkpoint-epochs", "1e-9"], ["epoch"]),
    (["--checkpoint-epochs", "0.0000011,0.0000012"], ["epoch-0000.000001"]),
    (["--checkpoint-epochs", "nan"], ["epoch"]),
    (["--epochs", "0"], ["--epochs"]),
    (["--encoder", "no_such_net"], ["no_such_net"]),
])
def test_pretrain_options_that_cannot_work_are_clean_errors(argv, words, capsys, tmp_path):
    code = cli_main([*PRETRAIN, "--output-dir", str(tmp_path / "out"), *argv])
    _assert_clean_exit(code, capsys.readouterr(), *words)


def test_pretrain_output_dir_that_cannot_be_written_is_a_clean_error(capsys, tmp_path):
    a_file = tmp_path / "file"
    a_file.write_text("x")
    for folder in (a_file / "child", Path("/proc/hf-transfer-seg-test/out")):
        code = cli_main([*PRETRAIN, "--output-dir", str(folder)])
        _assert_clean_exit(code, capsys.readouterr(), "--output-dir")
    with _mounted(tmp_path / "ro", "size=1m,ro") as ro:
        code = cli_main([*PRETRAIN, "--output-dir", str(ro / "out")])
        _assert_clean_exit(code, capsys.readouterr(), "--output-dir")


@contextlib.contextmanager
def _mounted(where: Path, options: str):
    """A small tmpfs at ``where`` (root only); skips the test where mounting is not possible."""
    where.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(where)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({done.stderr.decode(errors='replace').strip()[:100]})")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], capture_output=True)


def test_disk_full_while_saving_a_checkpoint_says_what_to_free_and_resume_recovers(tmp_path):
    """A real full disk (a 256 KiB tmpfs), not a mock: exit 2, one paragraph, and --resume delivers the checkpoint."""
    with _mounted(tmp_path / "small", "size=256k") as small:
        out = small / "out"
        argv = [sys.executable, "-m", "hf_transfer_seg", *PRETRAIN, "--recipe", "simple", "--train-size", "32",
                "--val-size", "16", "--batch-size", "16", "--checkpoint-epochs", "1", "--num-workers", "0",
                "--output-dir", str(out)]
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        first = subprocess.run(argv, capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)
        errors = _errors(first.stderr)
        clean = first.returncode == 2 and "Traceback" not in first.stderr + first.stdout and len(errors) == 1
        _count(clean)
        assert clean, first.stderr[-3000:]
        assert "full" in errors[0] and "--resume" in errors[0] and "Free space" in errors[0]
        assert not list((out / "pending").glob(".tmp-*"))  # the half-written checkpoint was removed
        subprocess.run(["mount", "-o", "remount,size=64m", str(small)], check=True)
        second = subprocess.run([*argv, "--resume"], capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)
        assert second.returncode == 0, second.stderr[-3000:]
        assert (out / "pending" / "epoch-0001" / "model.safetensors").stat().st_size > 0


# --------------------------------------------------------------------------------------------------
# images and checkpoints


def _png_header_only(path: Path, width: int, height: int) -> Path:
    """A valid PNG signature and IHDR claiming ``width`` x ``height``: a decompression bomb's header."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 1024)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b""))
    return path


def _tiff_claiming(path: Path, width: int, height: int) -> Path:
    """A small TIFF whose header is patched to claim ``width`` x ``height``."""
    import tifffile

    tifffile.imwrite(path, np.zeros((16, 16), np.uint8))
    with tifffile.TiffFile(path) as tif:
        tags = tif.pages[0].tags
        spots = [(tags["ImageWidth"].valueoffset, tags["ImageWidth"].dtype, width),
                 (tags["ImageLength"].valueoffset, tags["ImageLength"].dtype, height)]
        order = tif.byteorder
    data = bytearray(path.read_bytes())
    for offset, dtype, value in spots:
        fmt = order + ("H" if int(dtype) == 3 else "I")
        struct.pack_into(fmt, data, offset, value)
    path.write_bytes(bytes(data))
    return path


def _seg_folder(root: Path, n: int = 4, bomb: str | None = None) -> Path:
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    rng = np.random.default_rng(0)
    for i in range(n):
        Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(root / "images" / f"{i}.png")
        Image.fromarray((rng.random((64, 64)) > 0.5).astype(np.uint8) * 255).save(root / "masks" / f"{i}.png")
    if bomb == "png":
        _png_header_only(root / "images" / "bomb.png", 30_000, 30_000)
        _png_header_only(root / "masks" / "bomb.png", 30_000, 30_000)
    elif bomb == "tif":
        _tiff_claiming(root / "images" / "bomb.tif", 30_000, 30_000)
        Image.fromarray(np.zeros((64, 64), np.uint8)).save(root / "masks" / "bomb.png")
    return root


@pytest.mark.parametrize("kind", ["png", "tif"])
def test_decompression_bombs_are_clean_data_errors(kind, tmp_path):
    from hf_transfer_seg.data.images import read_array
    from hf_transfer_seg.data.segmentation import read_mask_array
    from hf_transfer_seg.errors import DataError

    path = _png_header_only(tmp_path / "b.png", 30_000, 30_000) if kind == "png" else _tiff_claiming(tmp_path / "b.tif", 30_000, 30_000)
    for reader in (read_array, read_mask_array):
        with pytest.raises(DataError, match="too large|pixels") as info:
            reader(path)
        _count(isinstance(info.value, DataError))


def _checkpoint(folder: Path, edit=None) -> Path:
    import timm

    from hf_transfer_seg.models.checkpoint import save_checkpoint

    save_checkpoint(timm.create_model("test_resnet", num_classes=10), folder)
    if edit is not None:
        config = json.loads((folder / "config.json").read_text())
        edit(config)
        (folder / "config.json").write_text(json.dumps(config))
    return folder


@pytest.mark.parametrize("edit", [
    lambda c: c.setdefault("model_args", {}).update(no_such_argument=3),
    lambda c: c.update(architecture=["resnet18"]),
    lambda c: c.update(architecture=None),
    lambda c: c.update(model_args="drop_rate=0.1"),
])
def test_a_bad_config_json_is_a_weights_error(edit, tmp_path):
    from hf_transfer_seg.errors import WeightsError
    from hf_transfer_seg.models.segmentation import build_model
    from hf_transfer_seg.models.checkpoint import load_encoder

    folder = _checkpoint(tmp_path / "ckpt", edit)
    for build in (lambda: load_encoder(folder), lambda: build_model(folder, 2)):
        with pytest.raises(WeightsError) as info:
            build()
        _count("config.json" in str(info.value) or "architecture" in str(info.value) or "model_args" in str(info.value))


def test_safe_yaml_refuses_what_would_exhaust_the_reader():
    import yaml

    from hf_transfer_seg import safe_yaml

    assert safe_yaml.load("a: &x [1, 2]\nb: *x") == {"a": [1, 2], "b": [1, 2]}
    for text in ("[" * 3000, DEEP_YAML, BOMB, "a: &a [*a]", "a: &a {b: *a}"):
        with pytest.raises(yaml.YAMLError):
            safe_yaml.load(text)
        _count(True)
    with pytest.raises(safe_yaml.CardYAMLError, match="README"):
        safe_yaml.load_card(_yaml_card(BOMB))


# --------------------------------------------------------------------------------------------------
# Hub failures on reads: every command ends the same clean way (one subprocess runs them all in turn)

_BATCH = r'''
import contextlib, io, json, logging, sys
from hf_transfer_seg.cli import main
results = []
for argv in json.loads(sys.argv[1]):
    out, err = io.StringIO(), io.StringIO()
    logging.root.handlers.clear()  # main's basicConfig binds to this command's stderr
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(argv)
        except SystemExit as exc:
            code = exc.code
        except BaseException:
            import traceback
            traceback.print_exc()
            code = "raised"
    results.append({"argv": argv, "code": code, "out": out.getvalue(), "err": err.getvalue()})
print("RESULTS" + json.dumps(results))
'''


def _run_batch(commands: list[list[str]], env: dict, cwd: Path) -> list[dict]:
    done = subprocess.run([sys.executable, "-c", _BATCH, json.dumps(commands)], capture_output=True, text=True,
                          env=env, cwd=cwd, timeout=600)
    line = next((l for l in done.stdout.splitlines() if l.startswith("RESULTS")), None)
    assert line is not None, (done.stdout[-2000:], done.stderr[-3000:])
    return json.loads(line[len("RESULTS"):])


@contextlib.contextmanager
def _always_503():
    """A loopback HTTP server answering every request 503 (a Hub outage)."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Handler(BaseHTTPRequestHandler):
        def _answer(self):
            length = int(self.headers.get("Content-Length") or 0)
            if length:
                self.rfile.read(length)
            body = b'{"error": "Service Unavailable"}'
            self.send_response(503)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST = do_HEAD = do_PUT = do_DELETE = _answer

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_hub_http_errors_on_reads_end_every_command_cleanly(tmp_path):
    """401 (wrong token) and 404 (no such repo) from a real server, for score, finetune, sweep, report,
    space deploy, space run and demo, and 503 (an outage, after the retries) for score: exit 2, one 'error:'
    paragraph saying what failed, why and the fix."""
    seg = _seg_folder(tmp_path / "seg")
    with local_hub(tmp_path / "hub", token="the-right-token") as endpoint:
        def commands(repo: str) -> list[list[str]]:
            return [
                ["score", "--repo-id", repo, "--target", "skimage-retina", "--no-progress", "--device", "cpu"],
                ["finetune", "--encoder-repo", repo, "--revision", "epoch-0001", "--target", str(seg), "--epochs", "1",
                 "--no-progress"],
                ["sweep", "--repo-id", repo, "--target", str(seg), "--epochs", "1", "--no-progress"],
                ["report", "--repo-id", repo, "--target", "skimage-retina", "--output", str(tmp_path / "report")],
                ["space", "deploy", "--space-id", "local/space", "--model-repo", repo, "--target", "skimage-retina"],
                ["space", "run", "--model-repo", repo, "--port", "0"],
                ["demo", "--small", "--no-launch", "--workdir", str(tmp_path / "demo")],
            ]

        base = {**os.environ, "PYTHONPATH": str(ROOT), "HF_ENDPOINT": endpoint, "HF_HUB_DISABLE_XET": "1"}
        wrong = _run_batch(commands("local/encoder"), {**base, "HF_TOKEN": "a-wrong-token"}, tmp_path)
        missing = _run_batch(commands("local/no-such-repo")[:5], {**base, "HF_TOKEN": "the-right-token"}, tmp_path)
    with _always_503() as failing:  # a Hub outage: retried, then one clean paragraph
        outage = _run_batch([commands("local/encoder")[0]],
                            {**base, "HF_ENDPOINT": failing, "HF_TOKEN": "any"}, tmp_path)
    for result, needle in [*((r, "401") for r in wrong), *((r, "") for r in missing), *((r, "503") for r in outage)]:
        errors = _errors(result["err"])
        text = result["out"] + result["err"]
        clean = result["code"] == 2 and "Traceback" not in text and len(errors) == 1 and needle in errors[0]
        _count(clean)
        assert clean, (result["argv"], result["code"], text[-2500:])
    for result in wrong:
        assert "token" in result["err"].lower() and "the-right-token" not in result["out"] + result["err"]


# --------------------------------------------------------------------------------------------------
# score: a bad revision is recorded failed, a hostile main card loses no score, a bomb in the target


def test_score_with_bad_revisions_and_a_malformed_main_card(hub_endpoint, hub_root, repo_id, tmp_path, capsys):
    """Bad config.json revisions are recorded failed; main's malformed card loses no score; a bomb is refused."""
    from hf_transfer_seg import hub
    from hf_transfer_seg.cards.data import get_namespace

    good = _checkpoint(tmp_path / "good")
    hub.push_revision(good, repo_id, 1)
    for epoch, edit in ((2, lambda c: c.setdefault("model_args", {}).update(no_such_argument=3)),
                        (3, lambda c: c.update(architecture=7))):
        hub.push_revision(_checkpoint(tmp_path / f"bad{epoch}", edit), repo_id, epoch)
    # client and server validate README.md on commit; an edit pushed with git is not checked: commit it that way
    _commit_with_git(hub_root, repo_id, "main", "README.md", b"---\nrobustness_summary: [unclosed\n---\n")
    fast = ["--num-images", "8", "--image-size", "64", "--batch-size", "8", "--no-progress", "--device", "cpu"]
    code = cli_main(["score", "--repo-id", repo_id, "--target", "skimage-retina", *fast])
    captured = capsys.readouterr()
    _assert_clean_exit(code, captured, "main's summary", "README.md")
    # nothing lost: every score printed, each revision's card written (the bad ones as failed)
    assert "epoch-0001" in captured.out and "epoch-0002" in captured.out and "epoch-0003" in captured.out
    for name, status in (("epoch-0001", "ok"), ("epoch-0002", "failed"), ("epoch-0003", "failed")):
        card, _ = hub.read_card(repo_id, name)
        entry = next(iter(get_namespace(card.data, "robustness")["skimage-retina"].values()))
        assert entry["status"] == status, (name, entry)
    # sweep on the same revisions: the bad ones are skipped and named, the good one is fine-tuned and recorded
    seg = _seg_folder(tmp_path / "seg")
    code = cli_main(["sweep", "--repo-id", repo_id, "--target", str(seg), "--seeds", "1", "--epochs", "1",
                     "--image-size", "32", "--batch-size", "4", "--no-transferability", "--no-summary", "--no-progress"])
    captured = capsys.readouterr()
    _assert_clean_exit(code, captured, "epoch-0002", "epoch-0003", "skipped")
    assert "epoch-0001: seed 0:" in captured.out
    # a decompression bomb in a target folder: a clean error before any scoring
    folder = tmp_path / "target"
    folder.mkdir()
    for i in range(8):
        Image.fromarray(np.full((64, 64, 3), i * 20, np.uint8)).save(folder / f"{i}.png")
    _png_header_only(folder / "zz-bomb.png", 30_000, 30_000)
    code = cli_main(["score", "--repo-id", repo_id, "--target", str(folder), "--dry-run", *fast])
    _assert_clean_exit(code, capsys.readouterr(), "bomb.png")


def test_finetune_target_with_a_decompression_bomb_is_a_clean_error(tmp_path, capsys):
    encoder = _checkpoint(tmp_path / "enc")
    for kind in ("png", "tif"):
        target = _seg_folder(tmp_path / f"seg-{kind}", bomb=kind)
        code = cli_main(["finetune", "--encoder-folder", str(encoder), "--target", str(target), "--epochs", "1",
                         "--image-size", "32", "--no-progress"])
        _assert_clean_exit(code, capsys.readouterr(), "bomb")


# --------------------------------------------------------------------------------------------------
# a checkpoint revision lands whole or not at all


def test_a_revision_is_one_commit_verified_and_a_refused_push_leaves_no_branch(hub_endpoint, repo_id, tmp_path):
    from huggingface_hub import HfApi

    from hf_transfer_seg import hub

    folder = _checkpoint(tmp_path / "ckpt")
    (folder / "README.md").write_text("---\nlicense: mit\n---\n# checkpoint\n")
    (folder / "extra").mkdir()
    (folder / "extra" / "notes.txt").write_text("all files in one commit")
    info = hub.push_revision(folder, repo_id, 4)
    api = HfApi()
    commits = api.list_repo_commits(repo_id, revision=info.name)
    first = api.list_repo_commits(repo_id)[-1].commit_id
    assert [c.commit_id for c in commits][1:] == [first]  # the checkpoint is exactly one commit on main's root
    assert set(api.list_repo_files(repo_id, revision=info.sha)) >= {"config.json", "model.safetensors", "README.md",
                                                                     "extra/notes.txt"}
    assert hub.push_revision(folder, repo_id, 4).sha == info.sha  # idempotent: no new commit
    # a push the server refuses part-way (a file name it rejects) leaves no epoch branch at all
    (folder / "bad\x01name.bin").write_bytes(b"x")
    with pytest.raises(Exception):
        hub.push_revision(folder, repo_id, 5)
    branches = {b.name for b in api.list_repo_refs(repo_id).branches}
    _count("epoch-0005" not in branches)
    assert "epoch-0005" not in branches and not any(b.startswith(hub.revisions.STAGING_PREFIX) for b in branches)
