"""One training objective per file; ``model/loss.py`` names them (the loss registry)."""
