"""The attribution index: which training documents generated code comes from."""
