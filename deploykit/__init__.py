"""deploykit: provision, load-balance and fail over a social app's stack on servers you own."""

__version__ = "0.1.0"
