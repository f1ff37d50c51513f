"""The citizen's say after the human: the rating scale and the one-key survey dialogue."""
