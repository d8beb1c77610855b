"""The playground: a Gradio app in the spirit of the SantaCoder demo Space (`santacoder demo <model>`).

One code box: its text is continued, or, when it holds one ``<FILL-HERE>``, the gap is filled from the code on
both sides (fill-in-the-middle). Sliders set the number of new tokens, temperature, top-p and the seed. The
output shows the generated part in its own colour between the prefix and the suffix, growing as the model
writes. Bad input (no code, two markers, more tokens than the model's context, a sampling value out of range,
whether from a slider or from the API) is a message in the app.

Given an ``attribute`` callable (``santacoder demo --index DIR``: the attribution index of the training data), a
"Where could this come from?" panel under the output says, once each generation is done, whether the generated code
is in the training data: verbatim spans with their documents and licenses, then similar files. The demo only calls
it (``santacoder.search`` is a layer above this one); without it the app has no panel.

The logic is ``Playground`` (plain Python, tested directly); ``build_app`` is a thin UI around it whose one event
has ``api_name="generate"``, so ``gradio_client`` can script it. The app runs offline: no analytics or version
check, and the front end and its fonts are served from the installed package (the browser test checks that the
page requests nothing from another host).
"""

from __future__ import annotations

import functools
import html
import logging
import math
import os
import re
import time
from collections.abc import Callable, Iterator

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
DONE = "Done:"  # how the status of a finished generation starts
SHOWN = 3  # spans, sources per span, and similar files shown in the attribution panel
SEARCHING = "*Looking for the generated code in the training data…*"
log = logging.getLogger(__name__)


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
            status_message(f"{DONE} {what} with {len(generated)} characters in {time.perf_counter() - start:.1f} s."),
        )

    def stream_attributed(
        self,
        attribute: Callable[[str], dict],
        code: str,
        max_new_tokens: float,
        temperature: float,
        top_p: float,
        seed: float | None,
    ) -> Iterator[tuple[str, str, str, str]]:
        """``stream`` with the attribution panel as a fourth output: empty while the model writes (the answer of
        an earlier generation cleared), then, once the generation is done, where the generated text could come
        from (``attribution_panel``): attributed once per generation, not per token (it takes ~0.1 s)."""
        finished = False
        for shown, generated, status in self.stream(code, max_new_tokens, temperature, top_p, seed):
            finished = status.startswith(DONE)
            yield shown, generated, status, SEARCHING if finished else ""
        if finished:  # an input error leaves the panel empty: there is nothing to attribute
            yield shown, generated, status, attribution_panel(attribute, generated)


def render(prefix: str, generated: str, suffix: str | None) -> str:
    """The code with the generated part highlighted, as HTML."""
    return (
        '<pre class="sc-output">'
        + html.escape(prefix)
        + f'<span class="sc-generated" style="background:{GENERATED_COLOUR}">{html.escape(generated)}</span>'
        + html.escape(suffix or "")
        + "</pre>"
    )


def markdown_text(text) -> str:
    """``text`` (a path, a repository, a license: anything from the index's metadata) as literal text in Markdown
    that also renders HTML: no tag, link, autolink, emphasis or heading can come out of it, and it stays on one
    line."""
    text = " ".join(str(text).split())
    # every ASCII punctuation character may be backslash-escaped in CommonMark; ':' and '@' too, or
    # "http://…" or "a@b.c" would still become links; '&', '<' and '>' are HTML entities instead
    return re.sub(r"([\\`*_{}\[\]()#+\-.!|~:@\"'=$^])", r"\\\1", html.escape(text, quote=False))


def source_name(source: dict) -> str:
    """A source's name as ``santacoder.search.attribution.Source.name`` gives it (a property: not in its dict)."""
    where = source.get("path") or source.get("id") or f"document {source.get('doc')} of shard {source.get('shard')}"
    return f"{source['repo']}/{where}" if source.get("repo") else where


def describe_source(source: dict) -> str:
    """``name (license, language)``, escaped for Markdown."""
    about = [source.get("license") or "unknown license"] + ([source["language"]] if source.get("language") else [])
    return f"{markdown_text(source_name(source))} ({markdown_text(', '.join(about))})"


def more(count: int) -> str:
    return f" and {count - SHOWN} more" if count > SHOWN else ""


def render_attribution(result: dict) -> str:
    """The attribution panel's Markdown for an ``Attribution.to_dict()``: the verdict in bold; each verbatim span
    (up to 3) with its length, occurrences and up to 3 documents; then up to 3 similar files and the share of the
    generated code's 5-grams each holds. Everything from the data is escaped."""
    lines = [f"**{markdown_text(result.get('verdict') or result.get('kind') or 'not found')}**"]
    spans, similar = result.get("spans") or [], result.get("similar") or []
    if not spans and not similar:
        lines.append("\nNo verbatim span and no similar file in the training data.")
    if spans:
        lines.append("\nVerbatim in the training data:")
        for span in spans[:SHOWN]:
            length = span["end"] - span["start"] if "end" in span else len(span.get("text", ""))
            times = "once" if span["count"] == 1 else f"{span['count']:,} times"
            sources = span.get("sources") or []
            found = ", ".join(describe_source(s) for s in sources[:SHOWN]) + more(len(sources))
            lines.append(f"- {length:,} characters, found {times}" + (f": {found}" if found else ""))
        if len(spans) > SHOWN:
            lines.append(f"- and {len(spans) - SHOWN} more spans")
    if similar:
        lines.append("\nSimilar files (the share of the generated code's 5-grams each holds):")
        for item in similar[:SHOWN]:
            lines.append(f"- {describe_source(item['source'])}: {item['containment']:.0%}")
        if len(similar) > SHOWN:
            lines.append(f"- and {len(similar) - SHOWN} more")
    return "\n".join(lines)


def attribution_panel(attribute: Callable[[str], dict], generated: str) -> str:
    """The panel for the generated text: ``render_attribution`` of what ``attribute`` answers, or one line saying
    why there is none. Never raises: the generation is shown whatever the index does.

    Only the generated text is attributed, not the prompt: the prompt is the user's own code (attributing it would
    report their input as "copied"), and the question the panel answers is whether the *model* reproduced its
    training data."""
    if not generated.strip():
        return "Nothing was generated, so there is nothing to look for."
    try:
        return render_attribution(attribute(generated))
    except Exception as e:  # a damaged index, a snippet the index refuses: a line in the panel, never a traceback
        if not isinstance(e, ValueError):  # ConfigError is a ValueError: the index's own message suffices
            log.warning("attribution failed", exc_info=True)
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        return f"⚠️ Could not look for the generated code in the training data: {markdown_text(first)}"


def build_app(
    model: GPT,
    tokenizer: CodeTokenizer,
    title: str = "SantaCoder playground",
    attribute: Callable[[str], dict] | None = None,
):
    """The Gradio Blocks app around a ``Playground``. With ``attribute`` (the generated text -> its
    ``Attribution.to_dict()``), a "Where could this come from?" panel (``#attribution``) under the generated text,
    and the ``generate`` event has it as a fourth output."""
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
        outputs, run = [output, generated, status], playground.stream
        if attribute is not None:
            gr.Markdown(
                "### Where could this come from?\nThe generated code looked up in the model's training data: spans "
                "found verbatim, with the documents (and licenses) that hold them, then files it is similar to."
            )
            outputs.append(gr.Markdown(elem_id="attribution", latex_delimiters=[]))  # a "$$" in a path is text
            run = functools.partial(playground.stream_attributed, attribute)
        button.click(
            run,
            inputs=[code, max_new_tokens, temperature, top_p, seed],
            outputs=outputs,
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
