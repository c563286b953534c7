"""The operator's dead-letter queue tool: inspect it, print it, move it back."""
