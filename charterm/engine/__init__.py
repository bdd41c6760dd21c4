"""The engine: text, the model, sampling, training, evaluation, adaptation and model files.

It imports only the base modules at the top of `charterm` (never the story, the worker or a
front-end), and neither Textual nor Typer."""
