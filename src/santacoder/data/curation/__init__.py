"""Curation as in the SantaCoder paper: filters, deduplication, decontamination and PII redaction, each a stage of
the prepare pipeline (``santacoder.data.prepare``) that reports what it removed or changed."""
