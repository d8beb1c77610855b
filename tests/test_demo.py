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
from santacoder.inference.demo import Playground, build_app, launch

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
