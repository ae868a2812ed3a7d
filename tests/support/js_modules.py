"""Running the browser's ES modules (src/parley/web) from a test: under node, or in headless Chromium.

A runtime runs `body`, the text of a JavaScript function of `({protocol, conversation, parley},
input)` (async or not), with `input` (through JSON), and gives back what it returns (through JSON). Node loads
copies of the modules as ES modules; Chromium imports them from a loopback static server, as a
page does.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol

import pytest
from starlette.applications import Starlette
from starlette.routing import Mount
from starlette.staticfiles import StaticFiles

import parley
from parley.util.serving import serve_app
from support.browser import CHROMIUM, chromium_args

WEB = Path(parley.__file__).parent / "web"
NODE = shutil.which("node")
MODULES = ("protocol", "conversation", "parley", "media", "devices", "ui")  # parley.js and what it imports

_NODE_MAIN = """
import { readFileSync } from "node:fs";
import * as protocol from "./protocol.js";
import * as conversation from "./conversation.js";
import * as parley from "./parley.js";
const run = async BODY;
const result = await run({ protocol, conversation, parley }, JSON.parse(readFileSync(0, "utf8")));
process.stdout.write(JSON.stringify(result));
"""

_PAGE_MAIN = """async ([input]) => {
  const [protocol, conversation, parley] = await Promise.all(["/protocol.js", "/conversation.js", "/parley.js"]
    .map((m) => import(m)));
  const run = async BODY;
  return JSON.stringify(await run({ protocol, conversation, parley }, input));
}"""


class Runtime(Protocol):
    def __call__(self, body: str, data: Any) -> Any: ...


def run_in_node(body: str, data: Any) -> Any:
    assert NODE is not None
    with tempfile.TemporaryDirectory() as tmp:
        for name in MODULES:
            shutil.copy(WEB / f"{name}.js", tmp)
        # Any node from 14 on reads .js as ES modules with this (20.19+ would guess it anyway).
        Path(tmp, "package.json").write_text('{"type": "module"}')
        Path(tmp, "main.js").write_text(_NODE_MAIN.replace("BODY", body))
        done = subprocess.run([NODE, "main.js"], cwd=tmp, input=json.dumps(data), capture_output=True, text=True,
                              timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


@contextmanager
def chromium_runtime() -> Iterator[Runtime]:
    if not Path(CHROMIUM).exists():
        pytest.skip("Debian's chromium is not installed")
    from playwright.sync_api import sync_playwright

    pages = Starlette(routes=[Mount("/", StaticFiles(directory=WEB))])
    with serve_app(pages) as url, sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=chromium_args(None))
        try:
            page = browser.new_page()
            page.goto(f"{url}/protocol.js")  # any page of that origin

            def run(body: str, data: Any) -> Any:
                return json.loads(page.evaluate(_PAGE_MAIN.replace("BODY", body), [data]))

            yield run
        finally:
            browser.close()


@contextmanager
def runtime(name: str) -> Iterator[Runtime]:
    if name == "node":
        if NODE is None:
            pytest.skip("node is not installed")
        yield run_in_node
    else:
        with chromium_runtime() as run:
            yield run
