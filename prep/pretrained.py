"""The authors' published checkpoint (Google Drive), fetched for ``dataprep.py --download_pretrained``.

Drive answers a download of a large file with a virus-scan confirmation page instead of the file; the
page holds a form whose fields (``id``, ``export``, ``confirm``, ``uuid``) ask for the file itself.
The two requests are made here with the resumable download of ``prep/download.py`` (HTTP Range on a
``.part`` file) rather than with gdown, so the checkpoint gets the same resume, free-space check and
atomic rename as the VoxCeleb archives, and no dependency is added.

What is verified before the file is put in place: it is not a web page, it loads with
``weights_only=True`` as the paper's checkpoint (``{'epoch', 'state_dict', 'optimizer'}``, the 223
keys of ``background_resnet(backbone='resnet34')``, 5,994 VoxCeleb2 training speakers), and, once
``PRETRAINED_SHA256`` is filled in, its SHA-256. The value was not known when this was written (Drive
cannot be reached from the machine it was written on): someone who downloads the file fills it in.
"""
import html.parser
import urllib.parse
from pathlib import Path

import configure
from common.errors import UserInputError
from model.checkpoint import encoder_shape, load_checkpoint, model_from_checkpoint
from model.model import background_resnet
from prep.download import (Credentials, looks_like_html, open_part, partial_size, save_response, set_aside,
                           sha256_of)

PRETRAINED_URL = "https://drive.google.com/uc"        # asked as URL?export=download&id=<file id>
PRETRAINED_FILE_ID = "1uqRviTrmm578nw_OQgqtj3iAmc6eSnTI"
PRETRAINED_SHA256 = None    # the authors' file's SHA-256: fill in once known; then it is checked
PRETRAINED_SHAPE = {"num_classes": 5994, "channels": 32, "backbone": "resnet34"}
PAGE_BYTES = 1 << 20        # a confirmation page is a few kB; read at most this much of one


class ConfirmForm(html.parser.HTMLParser):
    """The ``action`` and hidden fields of Drive's confirmation form (or an older page's link with
    ``confirm=``)."""

    def __init__(self):
        super().__init__()
        self.action, self.fields, self.link, self.title, self._in_title = None, {}, None, "", False

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "form" and (self.action is None or attrs.get("id") == "download-form"):
            self.action = attrs.get("action")
        elif tag == "input" and attrs.get("type") == "hidden" and attrs.get("name"):
            self.fields[attrs["name"]] = attrs.get("value") or ""
        elif tag == "a" and "confirm=" in (attrs.get("href") or "") and self.link is None:
            self.link = attrs["href"]
        self._in_title = tag == "title"

    def handle_data(self, data):
        if self._in_title:
            self.title += data.strip()


def first_request_url(base_url: str, file_id: str) -> str:
    return base_url + "?" + urllib.parse.urlencode({"export": "download", "id": file_id})


def is_web_page(response) -> bool:
    return response.headers.get_content_type() == "text/html"


def confirmed_url(page_url: str, page: bytes) -> str:
    """The URL the confirmation page's form (or link) asks for; an error naming the page otherwise."""
    form = ConfirmForm()
    form.feed(page.decode("utf-8", errors="replace"))
    if form.action and form.fields:
        url = urllib.parse.urljoin(page_url, form.action) + "?" + urllib.parse.urlencode(form.fields)
    elif form.link:
        url = urllib.parse.urljoin(page_url, form.link)
    else:
        raise UserInputError(f"{page_url} answered with a web page ({form.title or 'no title'!r}) "
                             "that offers no download; the file may be over its download quota: try "
                             "again later or download it in a browser and pass it with --checkpoint")
    if urllib.parse.urlsplit(url).scheme not in ("http", "https"):
        raise UserInputError(f"{page_url}: the confirmation page points to {url!r}, not an http(s) URL")
    return url


def fetch_checkpoint(base_url: str, file_id: str, partial: Path) -> None:
    """Drive's two requests: the file or its confirmation page (asked without Range: a page is not
    resumable), then the confirmed download, resuming ``partial`` from its size."""
    credentials = Credentials()
    url = first_request_url(base_url, file_id)
    response = open_part(url, credentials, 0)
    if is_web_page(response):
        with response:
            page = response.read(PAGE_BYTES)
        url = confirmed_url(url, page)
        response = open_part(url, credentials, partial_size(partial))
        if response is not None and is_web_page(response):
            with response:
                confirmed_url(url, response.read(PAGE_BYTES))   # raises with the page's title
    save_response(response, partial, partial.name.removesuffix(".part"))


def check_structure(path: Path) -> None:
    """The paper's checkpoint: not HTML, weights-only loadable, its keys and shapes; raises otherwise."""
    if looks_like_html(path):
        raise UserInputError(f"{path}: an HTML page, not a checkpoint (Drive's answer when a file is "
                             "over its download quota or no longer shared)")
    checkpoint = load_checkpoint(path)
    missing = {"epoch", "state_dict", "optimizer"} - checkpoint.keys()
    if missing:
        raise UserInputError(f"{path}: not the paper's checkpoint: no {', '.join(sorted(missing))}")
    state_dict = checkpoint["state_dict"]
    expected = list(background_resnet(num_classes=1, backbone="resnet34").state_dict())
    if sorted(state_dict) != sorted(expected) or encoder_shape(state_dict) != PRETRAINED_SHAPE:
        raise UserInputError(f"{path}: not the paper's checkpoint: expected the {len(expected)} "
                             f"weights of a {PRETRAINED_SHAPE} background_resnet")
    model_from_checkpoint(checkpoint)      # every shape fits (strict load)


def verify(path: Path, sha256) -> None:
    """Structure always; the SHA-256 when one is known. A failing file is moved aside."""
    try:
        check_structure(path)
    except UserInputError as error:
        bad = set_aside(path, "not-a-checkpoint")
        raise UserInputError(f"{error}; moved aside to {bad}") from None
    if sha256 is not None and sha256_of(path, f"verify {path.name}") != sha256:
        bad = set_aside(path, "sha256-mismatch")
        raise UserInputError(f"{path.name}: SHA-256 mismatch (expected {sha256}); the file was moved "
                             f"aside to {bad}; delete it and run again")


def same_bytes(a: Path, b: Path) -> bool:
    return a.stat().st_size == b.stat().st_size and sha256_of(a) == sha256_of(b)


def download_pretrained(model_dir=None, base_url: str = PRETRAINED_URL, file_id: str = PRETRAINED_FILE_ID,
                        sha256=PRETRAINED_SHA256) -> tuple:
    """Fetch, verify and place the authors' checkpoint as ``<model_dir>/baseline_000/checkpoint_100.pth``;
    returns (path, 'downloaded' or 'already present'). An existing different file is never replaced."""
    target = configure.checkpoint_path(configure.PAPER_N_FOLDER, configure.PAPER_CP_NUM, model_dir)
    if target.is_file() and sha256 is not None and sha256_of(target) == sha256:
        return target, "already present"
    partial = target.with_name(target.name + ".part")
    target.parent.mkdir(parents=True, exist_ok=True)
    fetch_checkpoint(base_url, file_id, partial)
    verify(partial, sha256)
    if target.is_file():
        if same_bytes(partial, target):
            partial.unlink()
            return target, "already present"
        raise UserInputError(f"{target} exists and is a different file; refusing to replace it (the "
                             f"verified download is kept as {partial}: move one of them and run again)")
    partial.replace(target)
    return target, "downloaded"
