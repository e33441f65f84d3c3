"""The value model and its evaluation."""
