"""Using a trained model: token-level decoding with a KV cache (``generation``), text in and text out
(``completion``: complete, infill, stream), and the Gradio playground (``demo``)."""
