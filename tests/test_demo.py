"""The playground (santacoder demo): its functions called directly, the running app driven through
gradio_client, and a real headless browser (the OS's Chromium through Playwright) typing into it."""

import html
import os
import signal
import socket
import subprocess
import sys
import time

import pytest
import torch

from santacoder import GPT, GPTConfig, complete, infill
from santacoder.bench import browser
from santacoder.inference.demo import Playground, attribution_panel, build_app, launch, render_attribution

SAMPLING = dict(max_new_tokens=12, temperature=0.0, top_p=1.0, seed=0)
GAP = "def add(a, b):\n    <FILL-HERE>\n    return c\n"


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return GPT(GPTConfig(vocab_size=512, n_positions=128, n_embd=32, n_layer=1, n_head=2)).eval()


@pytest.fixture(scope="module")
def playground(model, tokenizer):
    return Playground(model, tokenizer)


def final(playground, code, **overrides):
    outputs = list(playground.stream(code, **{**SAMPLING, **overrides}))
    return outputs, outputs[-1]


def test_completion_streams_and_ends_with_what_complete_gives(playground, model, tokenizer):
    outputs, (html, generated, status) = final(playground, "def add(a, b):\n")
    assert generated == complete(model, tokenizer, "def add(a, b):\n", max_new_tokens=12)
    assert len(outputs) >= 3 and status.startswith("Done: continued the code")
    assert [len(o[1]) for o in outputs] == sorted(len(o[1]) for o in outputs)  # the text grows as it streams


def test_a_marker_switches_to_infilling_with_the_middle_coloured_between_prefix_and_suffix(
    playground, model, tokenizer
):
    _, (html, generated, status) = final(playground, GAP)
    assert generated == infill(model, tokenizer, "def add(a, b):\n    ", "\n    return c\n", max_new_tokens=12)
    assert status.startswith("Done: filled the gap")
    before, rest = html.split('<span class="sc-generated"', 1)
    assert before.endswith("def add(a, b):\n    ") and rest.split("</span>", 1)[1].startswith("\n    return c\n")


@pytest.mark.parametrize(
    "code,overrides,message",
    [
        ("", {}, "Write some code first"),
        ("  \n", {}, "Write some code first"),
        ("a<FILL-HERE>b<FILL-HERE>c", {}, "holds 2 <FILL-HERE> markers"),
        ("x = 1\n" * 200, {}, "more than the model's context of 128 tokens"),
        ("x = 1\n", {"max_new_tokens": 0}, "Max new tokens is 0; ask for at least 1."),
        # what the sliders never send but the API can: each named, with what to give instead
        ("x = 1\n", {"max_new_tokens": float("nan")}, "Max new tokens is nan; ask for at least 1."),
        ("x = 1\n", {"temperature": float("nan")}, "Temperature is nan; use a finite number >= 0 (0: greedy)."),
        ("x = 1\n", {"temperature": -1}, "Temperature is -1; use a finite number >= 0 (0: greedy)."),
        ("x = 1\n", {"temperature": float("inf")}, "Temperature is inf; use a finite number >= 0 (0: greedy)."),
        ("x = 1\n", {"top_p": 0}, "Top-p is 0; use a number in (0, 1]."),
        ("x = 1\n", {"top_p": "high"}, "Top-p is high; use a number in (0, 1]."),
        ("x = 1\n", {"seed": -1}, "Seed is -1; use a whole number >= 0."),
        ("x = 1\n", {"seed": 2.5}, "Seed is 2.5; use a whole number >= 0."),
    ],
    ids=["empty", "blank", "two-markers", "too-long", "no-tokens", "nan-tokens", "nan-temperature",
         "negative-temperature", "infinite-temperature", "zero-top-p", "text-top-p", "negative-seed", "half-seed"],
)  # fmt: skip
def test_bad_input_is_a_message_not_an_exception(playground, code, overrides, message):
    outputs, (html_, generated, status) = final(playground, code, **overrides)
    assert len(outputs) == 1 and html_ == generated == "" and status.startswith("⚠️")
    assert message in html.unescape(status) and "<" not in status  # no tag for the Markdown box to swallow


def test_fill_here_in_a_message_is_escaped_so_the_browser_shows_it(playground):
    """The status box renders Markdown and HTML: a raw <FILL-HERE> was taken for a tag and cut from the message."""
    for code, shown in [("a<FILL-HERE>b<FILL-HERE>c", "holds 2 <FILL-HERE> markers"), ("", "the gap at <FILL-HERE>")]:
        status = final(playground, code)[1][2]
        assert "&lt;FILL-HERE&gt;" in status and "<FILL-HERE>" not in status and shown in html.unescape(status)


@pytest.mark.parametrize("code", ["x" * 10_000_000, "a" * 3000 + "<FILL-HERE>" + "b" * 3000], ids=["10MB", "infill"])
def test_a_prompt_too_long_in_bytes_is_a_message_at_once_and_never_tokenized(playground, monkeypatch, code):
    """10 MB once took 33 s and 4 GB to tokenize while every other user waited: now refused by its size."""
    monkeypatch.setattr(playground.tokenizer, "encode", lambda *a: pytest.fail("tokenized"))
    monkeypatch.setattr(playground.tokenizer, "encode_bytes", lambda *a: pytest.fail("tokenized"))
    start = time.perf_counter()
    outputs, (_, generated, status) = final(playground, code)
    assert time.perf_counter() - start < 2 and len(outputs) == 1 and generated == ""
    size = len(code.replace("<FILL-HERE>", ""))
    assert status == (
        f"⚠️ the prompt is {size:,} bytes; a model with a context of 128 tokens reads at most 4,096 "
        "(32 bytes a token, far more than code averages): shorten it"
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def running_app(model, tokenizer):
    app = launch(build_app(model, tokenizer), port=free_port(), block=False)
    yield app.local_url
    app.close()


def test_the_running_app_is_scripted_through_its_api_name(running_app, playground):
    from gradio_client import Client

    client = Client(running_app, verbose=False, download_files=False)
    assert "/generate" in client.view_api(print_info=False, return_format="dict")["named_endpoints"]
    html, generated, status = client.predict(GAP, 12, 0.0, 1.0, 0, api_name="/generate")
    assert (html, generated) == final(playground, GAP)[1][:2] and status.startswith("Done")
    _, _, status = client.predict("", 12, 0.0, 1.0, 0, api_name="/generate")
    assert "Write some code first" in status


@pytest.mark.integration
@pytest.mark.skipif(
    browser.chromium() is None,
    reason="no Chromium: `apt-get install chromium` (make test does it when run as root with apt)",
)
def test_a_browser_fills_a_gap_and_the_page_fetches_nothing_from_elsewhere(running_app, playground, tmp_path):
    shown = browser.drive(running_app, tmp_path / "demo.png", GAP)
    # the sliders' defaults: 64 new tokens (half the context), temperature 0.2, top-p 0.95, seed 42
    expected = final(playground, GAP, max_new_tokens=64, temperature=0.2, top_p=0.95, seed=42)[1][1]
    assert shown["status"].startswith("Done: filled the gap") and shown["generated"] == expected
    assert "sc-generated" in shown["output_html"]
    assert (tmp_path / "demo.png").read_bytes()[:4] == b"\x89PNG"
    assert shown["foreign_requests"] == []  # no CDN, fonts or analytics: the app works offline


# --- the attribution panel: what santacoder.search.attribution.Attribution.to_dict() gives, made by hand ---

MALICIOUS = "[x](javascript:alert(1))<img src=x>"


def source(path, license="MIT", language="Python", repo="octo/lib", shard=0, doc=0):
    return dict(shard=shard, doc=doc, id=None, repo=repo, path=path, license=license, language=language, bm25=1.0)


def span(length, count, sources):
    return dict(start=0, end=length, tokens=length // 3, count=count, text="x" * length, sources=sources)


COPIED = dict(
    verdict="copied: 412 characters verbatim from 4 documents under Apache-2.0, MIT",
    kind="copied",
    copied_characters=412,
    spans=[
        span(412, 7, [source(f"src/f{i}.py", doc=i) for i in range(4)]),
        span(120, 1, [source("util.py", license=None, language=None, repo=None)]),
        span(110, 2, []),
        span(100, 3, []),  # a fourth span: not listed, counted
    ],
    similar=[dict(source=source("src/f0.py"), containment=0.734)],
)
SIMILAR = dict(
    verdict=f"similar to octo/{MALICIOUS} (68% of its 5-grams, MIT) and 3 more",
    kind="similar",
    copied_characters=0,
    spans=[],
    similar=[dict(source=source(MALICIOUS if i == 0 else f"s{i}.py"), containment=0.68 - i / 100) for i in range(4)],
)
NOT_FOUND = dict(verdict="not found", kind="not found", copied_characters=0, spans=[], similar=[])


def rendered(markdown: str) -> str:
    """The HTML a CommonMark renderer that lets HTML through (as gradio's Markdown does) makes of ``markdown``."""
    from markdown_it import MarkdownIt

    return MarkdownIt("commonmark", {"html": True}).render(markdown)


def test_the_panel_shows_the_verdict_in_bold_then_spans_with_their_sources_then_similar_files():
    lines = render_attribution(COPIED).splitlines()
    assert lines[0] == "**copied\\: 412 characters verbatim from 4 documents under Apache\\-2\\.0, MIT**"
    assert "<strong>copied: 412 characters verbatim from 4 documents under Apache-2.0, MIT</strong>" in rendered(
        "\n".join(lines)
    )
    spans = [line for line in lines if line.startswith("- ") and "characters" in line]
    assert len(spans) == 3 and "- and 1 more spans" in lines  # up to 3 spans, the rest counted
    assert spans[0] == (
        "- 412 characters, found 7 times: octo/lib/src/f0\\.py (MIT, Python), octo/lib/src/f1\\.py (MIT, Python), "
        "octo/lib/src/f2\\.py (MIT, Python) and 1 more"
    )
    assert spans[1] == "- 120 characters, found once: util\\.py (unknown license)"
    assert spans[2] == "- 110 characters, found 2 times"
    assert lines[-1] == "- octo/lib/src/f0\\.py (MIT, Python): 73%"


def test_the_panel_shows_up_to_three_similar_files_with_their_containment_and_says_not_found():
    markdown = render_attribution(SIMILAR)
    assert markdown.startswith("**similar to octo/") and "Verbatim" not in markdown
    assert [line.rsplit(": ", 1)[1] for line in markdown.splitlines() if line.endswith("%")] == ["68%", "67%", "66%"]
    assert markdown.splitlines()[-1] == "- and 1 more"
    markdown = render_attribution(NOT_FOUND)
    assert markdown.splitlines()[0] == "**not found**" and "No verbatim span and no similar file" in markdown


def test_a_crafted_path_in_the_index_is_shown_as_text_never_as_a_link_or_a_tag():
    page = rendered(render_attribution(SIMILAR))
    assert "<a" not in page and "<img" not in page and "javascript:alert(1)" in page  # as text
    assert html.escape(f"octo/lib/{MALICIOUS} (MIT, Python): 68%", quote=False) in page  # shown as written
    for text in ["http://evil.example/x", "www.evil.example", "a@evil.example", "*em* _em_ `code` # h", "$$x$$"]:
        markdown = render_attribution({**NOT_FOUND, "verdict": text})
        assert f"<p><strong>{html.escape(text, quote=False)}</strong></p>" in rendered(markdown), text


def test_attribution_errors_are_one_line_in_the_panel():
    from santacoder.errors import ConfigError

    def refuses(text):
        raise ConfigError("the snippet is empty: give the code to attribute")

    def breaks(text):
        raise RuntimeError("suffix array <unreadable>\nsecond line")

    assert attribution_panel(refuses, "x = 1").endswith("the snippet is empty\\: give the code to attribute")
    for attribute, generated in [(refuses, "x = 1"), (breaks, "x = 1"),
                                 (lambda text: {"spans": [{}]}, "x = 1"), (pytest.fail, " \n")]:  # fmt: skip
        panel = attribution_panel(attribute, generated)
        assert len(panel.splitlines()) == 1 and "Traceback" not in panel and "<unreadable>" not in panel
    assert attribution_panel(pytest.fail, "").startswith("Nothing was generated")  # nothing to look for


class FakeAttribute:
    """An ``attribute`` callable with a fixed answer, recording the texts it was asked about."""

    def __init__(self, answer: dict):
        self.answer, self.calls = answer, []

    def __call__(self, text: str) -> dict:
        self.calls.append(text)
        return self.answer


def test_the_panel_is_empty_while_the_model_writes_and_filled_once_when_it_is_done(playground):
    attribute = FakeAttribute(COPIED)
    outputs = list(playground.stream_attributed(attribute, GAP, **SAMPLING))
    assert [o[:3] for o in outputs[:-1]] == list(playground.stream(GAP, **SAMPLING))  # the same generation
    assert {o[3] for o in outputs[:-2]} == {""} and outputs[-2][3].startswith("*Looking")
    assert outputs[-1][3] == render_attribution(COPIED) and attribute.calls == [outputs[-1][1]]
    assert outputs[-1][1] and GAP.split("<FILL-HERE>")[0] not in attribute.calls[0]  # the generated text only
    outputs = list(playground.stream_attributed(attribute, "", **SAMPLING))  # bad input: nothing to attribute
    assert len(outputs) == 1 and outputs[0][3] == "" and len(attribute.calls) == 1


@pytest.fixture(scope="module")
def attributed_app(model, tokenizer):
    attribute = FakeAttribute(COPIED)
    app = launch(build_app(model, tokenizer, attribute=attribute), port=free_port(), block=False)
    yield app.local_url, attribute
    app.close()


def test_without_an_index_the_app_has_no_attribution_panel(model, tokenizer):
    ids = lambda app: {c.get("props", {}).get("elem_id") for c in app.config["components"]}  # noqa: E731
    assert "attribution" not in ids(build_app(model, tokenizer))
    assert "attribution" in ids(build_app(model, tokenizer, attribute=FakeAttribute(NOT_FOUND)))


def test_the_running_app_attributes_each_generation_once(attributed_app, playground):
    from gradio_client import Client

    url, attribute = attributed_app
    attribute.calls.clear()
    client = Client(url, verbose=False, download_files=False)
    html_, generated, status, panel = client.predict(GAP, 12, 0.0, 1.0, 0, api_name="/generate")
    assert (html_, generated) == final(playground, GAP)[1][:2] and status.startswith("Done")
    assert panel == render_attribution(COPIED) and "<strong>" + COPIED["verdict"] in rendered(panel)
    assert attribute.calls == [generated]  # once, with the generated text, not per streamed token
    *_, status, panel = client.predict("", 12, 0.0, 1.0, 0, api_name="/generate")
    assert "Write some code first" in status and panel == "" and len(attribute.calls) == 1


@pytest.mark.integration
@pytest.mark.skipif(browser.chromium() is None, reason="no Chromium: `apt-get install chromium`")
def test_a_browser_shows_where_the_generated_code_could_come_from(attributed_app):
    """The panel in a real page: the verdict once the generation is done, a crafted path as text (no link, no
    image)."""
    from playwright.sync_api import sync_playwright

    url, attribute = attributed_app
    attribute.answer, attribute.calls = SIMILAR, []
    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=browser.chromium(), args=["--no-sandbox"])
        try:
            page = chromium.new_page()
            page.goto(url, wait_until="networkidle", timeout=60_000)
            page.locator("#code textarea").fill(GAP)
            page.locator("#generate").click()
            page.wait_for_function(
                "() => /similar to/.test(document.querySelector('#attribution')?.innerText ?? '')", timeout=60_000
            )
            shown, inner = page.locator("#attribution").inner_text(), page.locator("#attribution").inner_html()
            generated = page.locator("#generated textarea").input_value()
        finally:
            chromium.close()
    assert SIMILAR["verdict"] in shown and f"octo/lib/{MALICIOUS} (MIT, Python): 68%" in shown
    assert "<img" not in inner and "<a " not in inner and "javascript" not in page_links(inner)
    assert attribute.calls == [generated]
    attribute.answer = COPIED


def page_links(inner_html: str) -> str:
    return " ".join(part.split(">")[0] for part in inner_html.split("href=")[1:])


def test_the_cli_refuses_a_missing_model_in_one_line(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "santacoder.cli", "demo", str(tmp_path / "nope")], capture_output=True, text=True
    )
    assert done.returncode == 2 and done.stderr.startswith("santacoder demo: error:")
    assert len(done.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize(
    "argv,env,address",
    [
        ([], {}, ("127.0.0.1", 7860)),
        ([], {"GRADIO_SERVER_NAME": "0.0.0.0", "GRADIO_SERVER_PORT": "8080"}, ("0.0.0.0", 8080)),  # a hosting platform
        (
            ["--host", "127.0.0.2", "--port", "9000"],
            {"GRADIO_SERVER_NAME": "0.0.0.0", "GRADIO_SERVER_PORT": "8080"},
            ("127.0.0.2", 9000),
        ),  # fmt: skip
    ],
    ids=["default", "gradio-variables", "flags-win"],
)
def test_the_cli_serves_where_its_flags_or_gradios_variables_say(model, tokenizer, tmp_path, monkeypatch, capsys,
                                                                  argv, env, address):  # fmt: skip
    from santacoder.checkpoints.layouts.project import save_checkpoint
    from santacoder.cli import main

    for name in ("GRADIO_SERVER_NAME", "GRADIO_SERVER_PORT"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    served = []
    monkeypatch.setattr("santacoder.cli.check_can_listen", lambda host, port: None)  # these ports may be taken here
    monkeypatch.setattr("santacoder.inference.demo.launch", lambda app, host, port: served.append((host, port)))
    path = save_checkpoint(model, tmp_path / "model.ckpt", tokenizer=tokenizer)
    assert main(["demo", str(path), *argv]) == 0
    assert served == [address]
    assert f"http://{address[0]}:{address[1]}" in capsys.readouterr().out


def test_a_bad_gradio_server_port_is_one_line(tmp_path, monkeypatch, capsys):
    from santacoder.cli import main

    monkeypatch.setenv("GRADIO_SERVER_PORT", "http")
    assert main(["demo", str(tmp_path / "model.ckpt")]) == 2  # refused before the model is looked for
    assert capsys.readouterr().err.strip() == (
        "santacoder demo: error: GRADIO_SERVER_PORT='http' is not a port number; set it to one, e.g. 7860"
    )


def refused(argv, capsys) -> str:
    from santacoder.cli import main

    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    return err.strip()


@pytest.mark.parametrize("port", ["99999", "0", "-1"])
def test_a_port_out_of_range_is_one_line(tmp_path, capsys, port):
    line = refused(["demo", str(tmp_path / "model.ckpt"), "--port", port], capsys)
    assert line == f"santacoder demo: error: --port={port} is not a port number (1 to 65535)"


def never(*args, **kwargs):
    raise AssertionError("called, though the address was refused before")


@pytest.fixture
def demo_cli(model, tokenizer, tmp_path, monkeypatch):
    """A checkpoint for ``santacoder demo``, served nowhere: (its path, the keyword arguments build_app got)."""
    from santacoder.checkpoints.layouts.project import save_checkpoint

    monkeypatch.delenv("GRADIO_SERVER_PORT", raising=False)
    monkeypatch.delenv("GRADIO_SERVER_NAME", raising=False)
    monkeypatch.setattr("santacoder.cli.check_can_listen", lambda host, port: None)
    built = {}
    monkeypatch.setattr("santacoder.inference.demo.build_app", lambda model, tokenizer, **kw: built.update(kw))
    monkeypatch.setattr("santacoder.inference.demo.launch", lambda app, host, port: None)
    return save_checkpoint(model, tmp_path / "model.ckpt", tokenizer=tokenizer), built


def test_the_cli_opens_the_index_and_gives_the_app_the_attribution_of_a_text(demo_cli, tmp_path, monkeypatch):
    from santacoder.cli import main
    from santacoder.search import attribution

    path, built = demo_cli
    (tmp_path / "run" / "index").mkdir(parents=True)
    (tmp_path / "run" / "index" / "index.json").write_text("{}")
    opened = []
    monkeypatch.setattr(attribution, "AttributionIndex", lambda directory: opened.append(directory) or "the index")
    answer = type("Answer", (), {"to_dict": lambda self: COPIED})()
    monkeypatch.setattr(attribution, "attribute", lambda text, index: answer if index == "the index" else None)
    assert main(["demo", str(path), "--index", str(tmp_path / "run")]) == 0
    assert opened == [tmp_path / "run" / "index"]  # a run directory holding index/
    assert built["attribute"]("x = 1") == COPIED
    assert main(["demo", str(path)]) == 0 and built["attribute"] is None  # no index: no panel


def test_a_missing_or_damaged_index_is_one_line_before_the_model_loads(demo_cli, tmp_path, monkeypatch, capsys):
    path, _ = demo_cli
    monkeypatch.setattr("santacoder.cli.load", never)
    line = refused(["demo", str(path), "--index", str(tmp_path / "nope")], capsys)
    assert line.startswith(f"santacoder demo: error: {str(tmp_path / 'nope')!r} holds no attribution index")
    (tmp_path / "damaged").mkdir()
    (tmp_path / "damaged" / "index.json").write_text("{not json")
    line = refused(["demo", str(path), "--index", str(tmp_path / "damaged")], capsys)
    assert line.startswith("santacoder demo: error: ") and "is damaged" in line and "build the index again" in line


def test_the_index_without_its_packages_is_one_line_with_the_install_hint(demo_cli, tmp_path, monkeypatch, capsys):
    import santacoder.search

    path, _ = demo_cli
    monkeypatch.setattr("santacoder.cli.load", never)
    monkeypatch.setitem(sys.modules, "santacoder.search.attribution", None)  # as when infini-gram is missing
    monkeypatch.delattr(santacoder.search, "attribution", raising=False)
    line = refused(["demo", str(path), "--index", str(tmp_path)], capsys)
    assert line.startswith("santacoder demo: error: the attribution index needs infini-gram and tantivy")
    assert line.endswith("pip install 'santacoder[attribution]'")


def test_a_port_in_use_or_an_unknown_host_is_one_line_before_the_model_loads(model, tokenizer, tmp_path,
                                                                              monkeypatch, capsys):  # fmt: skip
    from santacoder.checkpoints.layouts.project import save_checkpoint

    monkeypatch.delenv("GRADIO_SERVER_PORT", raising=False)
    monkeypatch.delenv("GRADIO_SERVER_NAME", raising=False)
    path = save_checkpoint(model, tmp_path / "model.ckpt", tokenizer=tokenizer)
    monkeypatch.setattr("santacoder.cli.load", never)
    monkeypatch.setattr("santacoder.inference.demo.launch", never)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        line = refused(["demo", str(path), "--port", str(port)], capsys)
    prefix = (
        f"santacoder demo: error: port {port} on 127.0.0.1 is in use (another server?); pass a free one, e.g. --port "
    )
    assert line.startswith(prefix) and line.removeprefix(prefix).isdigit()
    line = refused(["demo", str(path), "--host", "no-such-host.invalid"], capsys)
    assert line.startswith("santacoder demo: error: cannot listen on no-such-host.invalid:7860: ")


# SIGINT raises KeyboardInterrupt in the child as in a terminal, even where the test runner ignores SIGINT (a
# background job), which the child would inherit.
CLI_WITH_CTRL_C = (
    "import signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
    "from santacoder.cli import main; sys.exit(main(sys.argv[1:]))"
)


def test_ctrl_c_while_serving_is_one_line_and_status_130(model, tokenizer, tmp_path):
    from santacoder.checkpoints.layouts.project import save_checkpoint

    path = save_checkpoint(model, tmp_path / "model.ckpt", tokenizer=tokenizer)
    child = subprocess.Popen(
        [sys.executable, "-c", CLI_WITH_CTRL_C, "demo", str(path), "--port", str(free_port())],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
    )  # fmt: skip
    try:
        for line in child.stdout:  # serving once gradio says where
            if "Running on" in line:
                break
        os.killpg(child.pid, signal.SIGINT)  # as Ctrl-C does: the whole process group
        _, err = child.communicate(timeout=60)
    finally:
        child.kill()
    assert child.returncode == 130
    assert "Traceback" not in err and err.strip().splitlines()[-1] == "santacoder demo: interrupted"
