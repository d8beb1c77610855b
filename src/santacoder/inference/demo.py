"""The playground: a Gradio app in the spirit of the SantaCoder demo Space (`santacoder demo <model>`).

One code box: its text is continued, or, when it holds one ``<FILL-HERE>``, the gap is filled from the code on
both sides (fill-in-the-middle). Sliders set the number of new tokens, temperature, top-p and the seed. The
output shows the generated part in its own colour between the prefix and the suffix, growing as the model
writes. Bad input (no code, two markers, more tokens than the model's context, a sampling value out of range,
whether from a slider or from the API) is a message in the app.

The logic is ``Playground`` (plain Python, tested directly); ``build_app`` is a thin UI around it whose one event
has ``api_name="generate"``, so ``gradio_client`` can script it. The app runs offline: no analytics or version
check, and the front end and its fonts are served from the installed package (the browser test checks that the
page requests nothing from another host).
"""

from __future__ import annotations

import html
import math
import os
import time
from collections.abc import Iterator

from santacoder.inference.completion import (
    FILL_MARKER,
    check_prompt_size,
    infill_prompt,
    stream_generate,
)
from santacoder.model.gpt import GPT
from santacoder.text.tokenizer import CodeTokenizer

# read by gradio when it is imported (below, lazily): no usage analytics, no version check against PyPI
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

EXAMPLE = f'def fibonacci(n):\n    """Return the n-th Fibonacci number."""\n    {FILL_MARKER}\n    return a\n'
GENERATED_COLOUR = "#ffd9a0"
CSS = (
    ".sc-output { font-family: ui-monospace, monospace; font-size: 13px; white-space: pre-wrap; }"
    " #code textarea { font-family: ui-monospace, monospace; }"
)


class DemoInputError(ValueError):
    """Input the app answers with a message instead of a result."""


def checked(name: str, value, ok, advice: str) -> float:
    """A slider's ``value`` as a float where ``ok`` holds for it (the API can send anything the slider would not:
    NaN, -1, text); else a message naming the slider and saying what to give."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = math.nan  # refused below: NaN fails every comparison
    if not ok(number):
        raise DemoInputError(f"{name} is {value}; {advice}.")
    return number


def status_message(text: str) -> str:
    """``text`` for the status box, which renders Markdown and HTML: escaped, so that ``<FILL-HERE>`` shows as
    written rather than being taken for an HTML tag and cut."""
    return html.escape(text, quote=False)


class Playground:
    """Completion and infilling for the app, as plain functions of their inputs."""

    def __init__(self, model: GPT, tokenizer: CodeTokenizer):
        self.model = model.eval()
        self.tokenizer = tokenizer

    def split(self, code: str) -> tuple[str, str | None]:
        """(prefix, suffix) around the one ``<FILL-HERE>`` of ``code``, or (code, None) to continue it."""
        if not code or not code.strip():
            raise DemoInputError("Write some code first: its continuation, or the gap at <FILL-HERE>, is generated.")
        count = code.count(FILL_MARKER)
        if count > 1:
            raise DemoInputError(f"The code holds {count} {FILL_MARKER} markers; keep one, where the gap is.")
        if count == 1:
            prefix, suffix = code.split(FILL_MARKER)
            return prefix, suffix
        return code, None

    @staticmethod
    def sampling(max_new_tokens, temperature, top_p, seed) -> tuple[int, dict]:
        """The sliders' values checked: (max_new_tokens, the sampling arguments of ``stream_generate``)."""
        max_new_tokens = checked("Max new tokens", max_new_tokens, lambda n: 1 <= n < math.inf, "ask for at least 1")
        temperature = checked("Temperature", temperature, lambda t: 0 <= t < math.inf,
                              "use a finite number >= 0 (0: greedy)")  # fmt: skip
        top_p = checked("Top-p", 1.0 if top_p is None else top_p, lambda p: 0 < p <= 1, "use a number in (0, 1]")
        if seed is not None:
            seed = int(checked("Seed", seed, lambda n: 0 <= n < 2**64 and n.is_integer(), "use a whole number >= 0"))
        return int(max_new_tokens), dict(temperature=temperature, top_p=top_p if top_p < 1 else None, seed=seed)

    def stream(
        self, code: str, max_new_tokens: float, temperature: float, top_p: float, seed: float | None
    ) -> Iterator[tuple[str, str, str]]:
        """Yields (html, generated text, status) as the model writes; an input error is one status message."""
        try:
            prefix, suffix = self.split(code)
            max_new_tokens, sampling = self.sampling(max_new_tokens, temperature, top_p, seed)
            limit = self.model.config.n_positions
            check_prompt_size(limit, prefix, suffix or "")  # in bytes, before tokenizing: megabytes refused at once
            ids = self.tokenizer.encode(prefix) if suffix is None else infill_prompt(self.tokenizer, prefix, suffix)
            if len(ids) + max_new_tokens > limit:
                raise DemoInputError(
                    f"The prompt is {len(ids)} tokens; with {max_new_tokens} new tokens that is more than the model's "
                    f"context of {limit} tokens. Shorten the code or ask for fewer tokens."
                )
            pieces = stream_generate(self.model, self.tokenizer, ids, max_new_tokens, **sampling)
            generated, start = "", time.perf_counter()
            yield render(prefix, "", suffix), "", "Generating…"
            for piece in pieces:
                generated += piece
                yield render(prefix, generated, suffix), generated, "Generating…"
        except ValueError as e:  # DemoInputError, ConfigError (a prompt too long), a value the sampler refuses
            yield "", "", status_message(f"⚠️ {e}")
            return
        what = "filled the gap" if suffix is not None else "continued the code"
        yield (
            render(prefix, generated, suffix),
            generated,
            status_message(f"Done: {what} with {len(generated)} characters in {time.perf_counter() - start:.1f} s."),
        )


def render(prefix: str, generated: str, suffix: str | None) -> str:
    """The code with the generated part highlighted, as HTML."""
    return (
        '<pre class="sc-output">'
        + html.escape(prefix)
        + f'<span class="sc-generated" style="background:{GENERATED_COLOUR}">{html.escape(generated)}</span>'
        + html.escape(suffix or "")
        + "</pre>"
    )


def build_app(model: GPT, tokenizer: CodeTokenizer, title: str = "SantaCoder playground"):
    """The Gradio Blocks app around a ``Playground``."""
    import gradio as gr

    playground = Playground(model, tokenizer)
    limit = model.config.n_positions
    with gr.Blocks(title=title, analytics_enabled=False) as app:
        gr.Markdown(
            f"## {title}\n"
            f"Write code to continue it, or put `{FILL_MARKER}` where a gap should be filled from the code "
            f"around it (fill-in-the-middle). The model has a context of {limit} tokens."
        )
        with gr.Row():
            with gr.Column(scale=3):
                code = gr.Textbox(value=EXAMPLE, lines=14, max_lines=40, label="Code", elem_id="code")
                button = gr.Button("Generate", variant="primary", elem_id="generate")
            with gr.Column(scale=1):
                max_new_tokens = gr.Slider(1, min(512, limit - 1), value=min(64, limit // 2), step=1,
                                           label="Max new tokens")  # fmt: skip
                temperature = gr.Slider(0.0, 2.0, value=0.2, step=0.05, label="Temperature (0: greedy)")
                top_p = gr.Slider(0.05, 1.0, value=0.95, step=0.05, label="Top-p")
                seed = gr.Slider(0, 10_000, value=42, step=1, label="Seed")
        status = gr.Markdown(elem_id="status")
        output = gr.HTML(elem_id="output")
        generated = gr.Textbox(label="Generated text", lines=4, elem_id="generated")
        button.click(
            playground.stream,
            inputs=[code, max_new_tokens, temperature, top_p, seed],
            outputs=[output, generated, status],
            api_name="generate",
        )
    return app


def launch(app, *, host: str = "127.0.0.1", port: int | None = None, block: bool = True):
    """Serve ``app`` locally (never through gradio's share tunnel); returns the app. With ``block``, serve until
    Ctrl-C, which is raised to the caller (gradio's own wait would catch it, print, and return as if all went well)."""
    app.launch(
        server_name=host,
        server_port=port,
        share=False,
        prevent_thread_lock=True,
        show_error=False,  # messages are the app's own; no tracebacks in the browser
        css=CSS,  # gradio 6 takes the page's CSS at launch
        quiet=not block,
    )
    if block:
        try:
            while app.is_running:
                time.sleep(0.1)
        finally:
            app.close()
    return app
