"""Text in and out of token ids, with no torch: the byte-level BPE with its FIM special tokens (``tokenizer``) and
the fill-in-the-middle transform of packed samples (``fim``)."""
