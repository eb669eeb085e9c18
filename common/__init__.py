"""Infrastructure every package may use: error reporting and crash-safe files. Imports no torch."""
